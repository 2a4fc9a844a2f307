"""The decoding KV cache written in place (`opuslm.model.kv_cache`) against transformers' own."""

from __future__ import annotations

import pytest
import torch
import transformers
from test_lm import tiny_model

from opuslm.model.kv_cache import GrowingLayer, growing_cache


def feed(model, cache, rows: torch.Tensor) -> torch.Tensor:
    """Delayed rows [B, n, S] after the cached ones -> their last hidden states [B, n, H]."""
    hidden, _ = model.hidden_states(rows, cache=cache)
    return hidden


@pytest.mark.parametrize("kind", ["llama", "olmo2", "qwen2", "gpt_neox"])
@pytest.mark.parametrize("capacity", [3, 12, 100])
def test_growing_cache_decodes_as_the_dynamic_cache(kind, capacity):
    """A prefill, a beam copy, per-step rows, a beam reorder and a crop: the same hidden states
    as with transformers' DynamicCache, on each body kind, whether the buffers must grow
    (capacity 3, 12) or not."""
    torch.manual_seed(0)
    model = tiny_model(kind).eval()
    vocab, streams = len(model.token_list), model.num_streams
    prompt = torch.randint(0, vocab, (2, 5, streams))
    steps = torch.randint(0, vocab, (7, 6, 1, streams))  # 7 steps of 6 hypotheses
    theirs = transformers.DynamicCache(config=model.body.config)
    ours = growing_cache(model.body.config, capacity)
    assert all(type(layer) is GrowingLayer for layer in ours.layers)
    with torch.no_grad():
        for cache in (theirs, ours):
            feed(model, cache, prompt)
            cache.batch_repeat_interleave(3)  # two prompts x three hypotheses
        for k, rows in enumerate(steps):
            if k == 3:
                parent = torch.tensor([2, 2, 0, 4, 3, 3])
                theirs.reorder_cache(parent)
                ours.reorder_cache(parent)
            if k == 5:
                theirs.crop(-2)
                ours.crop(-2)
            want, got = feed(model, theirs, rows), feed(model, ours, rows)
            torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
            assert ours.get_seq_length() == theirs.get_seq_length()


def test_steps_are_written_in_place_within_the_capacity():
    """Within its capacity a layer keeps one buffer: each step writes into it, and `keys` is a
    view of its leading rows (DynamicLayer concatenates, a new tensor every step)."""
    torch.manual_seed(0)
    model = tiny_model().eval()
    vocab, streams = len(model.token_list), model.num_streams
    cache = growing_cache(model.body.config, capacity=20)
    with torch.no_grad():
        feed(model, cache, torch.randint(0, vocab, (2, 5, streams)))
        layer = cache.layers[0]
        buffer = layer.buffers[0]
        assert buffer.shape[-2] == 10  # twice the first update, within the capacity
        for n in range(5):
            feed(model, cache, torch.randint(0, vocab, (2, 1, streams)))
            assert layer.buffers[0] is buffer
            assert layer.keys.data_ptr() == buffer.data_ptr()
            assert layer.keys.shape[-2] == 6 + n
        feed(model, cache, torch.randint(0, vocab, (2, 1, streams)))  # row 11: grows to 20
        assert layer.buffers[0].shape[-2] == 20 and layer.keys.shape[-2] == 11


def test_a_body_with_other_layer_kinds_keeps_them():
    config = transformers.MistralConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        sliding_window=4,
    )
    cache = growing_cache(config, capacity=10)
    assert not any(isinstance(layer, GrowingLayer) for layer in cache.layers)
