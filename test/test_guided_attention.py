"""Guided attention (opuslm/model/guided_attention.py): pairs, penalty by hand, training, config."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_lm import (
    ctc_batch,
    single_thread,  # noqa: F401  (autouse: one thread for tiny models)
    tiny_config,
    tiny_token_list,
)

from opuslm.model.delay import delay
from opuslm.model.guided_attention import GuidedAttention, guide_pairs
from opuslm.model.lm import MultiStreamLM, prefix_attention_mask
from opuslm.train.config import ConfigError, load_config

GUIDE = {"weight": 0.5, "sigma": 0.3, "layers": [1], "heads": 2}


def models(kind: str = "llama", prefix_lm: bool = False, guide: dict = GUIDE):
    """The same random weights without and with guided attention."""
    token_list = tiny_token_list()
    torch.manual_seed(0)
    plain = MultiStreamLM.from_base(tiny_config(kind), token_list, prefix_lm=prefix_lm).eval()
    guided = MultiStreamLM.from_base(
        tiny_config(kind), token_list, prefix_lm=prefix_lm, guided_attention=guide
    ).eval()
    guided.load_state_dict(plain.state_dict())
    return token_list, plain, guided


def test_pairs_take_asr_text_queries_and_tts_speech_queries():
    token_list = tiny_token_list()
    frames, loss_mask, lengths, speech, text = ctc_batch(token_list)  # [ASR, TTS]
    positions = torch.arange(frames.shape[1])
    target = loss_mask & (positions < lengths[:, None])
    pairs = guide_pairs(
        frames, target, lengths, token_list.ranges["text"], token_list.ranges["semantic"], 0.2
    )
    assert pairs.examples.tolist() == [0, 1]
    stream0 = frames[..., 0]
    text_lo, text_hi = token_list.ranges["text"]
    sem_lo, sem_hi = token_list.ranges["semantic"]
    is_text = (stream0 >= text_lo) & (stream0 < text_hi)
    is_speech = (stream0 >= sem_lo) & (stream0 < sem_hi)
    # ASR: the rows before each target character query the condition speech frames.
    asr_text = torch.nonzero(target[0] & is_text[0]).flatten()
    assert pairs.num_queries[0] == len(text) == len(asr_text)
    assert pairs.query_rows[0, : len(text)].tolist() == (asr_text - 1).tolist()
    asr_speech = torch.nonzero(~target[0] & is_speech[0]).flatten()
    assert len(asr_speech) == len(speech)
    assert pairs.key_rows[0, : len(speech)].tolist() == asr_speech.tolist()
    # TTS: target speech frames (not the 3-frame prompt) query the condition text.
    tts_speech = torch.nonzero(target[1] & is_speech[1]).flatten()
    assert pairs.num_queries[1] == len(speech)
    assert pairs.query_rows[1, : len(speech)].tolist() == (tts_speech - 1).tolist()
    tts_text = torch.nonzero(~target[1] & is_text[1]).flatten()
    assert int(pairs.key_valid[1].sum()) == len(text)
    assert pairs.key_rows[1, : len(text)].tolist() == tts_text.tolist()
    # The prior: 0 on the diagonal of equal fractions, 1 - exp(-d^2 / 2 sigma^2) off it, and
    # nothing on padded query rows.
    for n, t in [(1, 3), (0, 8), (3, 2)]:  # ASR: query n of 4 characters, key t of 9 frames
        d = (n + 0.5) / len(text) - (t + 0.5) / len(speech)
        expected = 1 - math.exp(-d * d / (2 * 0.2**2))
        assert float(pairs.prior[0, n, t]) == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert float(pairs.prior[0, 0, 8]) > 0.9  # first character, last frame: far off
    assert float(pairs.prior[0, len(text) :].abs().sum()) == 0.0
    assert pairs.query_valid.sum(1).tolist() == pairs.num_queries.tolist()
    # `tasks` keeps one direction; the rows of the example it keeps do not change.
    ranges = (token_list.ranges["text"], token_list.ranges["semantic"])
    tts_only = guide_pairs(frames, target, lengths, *ranges, 0.2, tasks=("tts",))
    assert tts_only.examples.tolist() == [1]
    assert tts_only.key_rows[0, : len(text)].tolist() == tts_text.tolist()
    assert guide_pairs(frames, target, lengths, *ranges, 0.2, ("asr",)).examples.tolist() == [0]
    assert guide_pairs(frames[:1], target[:1], lengths[:1], *ranges, 0.2, ("tts",)) is None


def test_text_only_batches_have_no_pairs():
    token_list = tiny_token_list()
    frames = torch.tensor([[[i] + [token_list.pad_id] * 3 for i in (1, 5, 7, 2)]])
    target = torch.tensor([[False, True, True, True]])
    ranges = token_list.ranges
    assert (
        guide_pairs(frames, target, torch.tensor([4]), ranges["text"], ranges["semantic"], 0.2)
        is None
    )


@pytest.mark.parametrize("kind", ["llama", "olmo2"])
@pytest.mark.parametrize("prefix_lm", [False, True])
@pytest.mark.parametrize("keys", ["condition", "all"])
def test_penalty_equals_hand_computation_and_output_is_unchanged(kind, prefix_lm, keys):
    guide = {**GUIDE, "keys": keys}
    token_list, plain, guided = models(kind, prefix_lm, guide)
    frames, loss_mask, lengths, _, _ = ctc_batch(token_list)
    base = plain(frames, loss_mask, lengths)
    out = guided(frames, loss_mask, lengths)

    # By hand: the rotated queries and keys of layer 1 from eager attention weights. The eager
    # weights are softmax(q k / sqrt(d) + mask) over all keys: the attention `keys: all` guides.
    # Renormalising them over the pair's keys gives that of `keys: condition` (the pair's keys
    # are never masked).
    captured = {}
    plain.body.config._attn_implementation = "eager"
    mask = None
    if prefix_lm:
        first = loss_mask.int().argmax(1)
        mask = prefix_attention_mask(first, frames.shape[1] + token_list.num_streams - 2)
    layer = plain.body.base_model.layers[1].self_attn
    hook = layer.register_forward_hook(lambda m, a, o: captured.update(weights=o[1]))
    with torch.no_grad():
        plain.hidden_states(delay(frames, token_list.pad_id)[:, :-1], attention_mask=mask)
    hook.remove()
    weights = captured["weights"]  # [B, H, L, L]
    positions = torch.arange(frames.shape[1])
    pairs = guide_pairs(
        frames,
        loss_mask & (positions < lengths[:, None]),
        lengths,
        token_list.ranges["text"],
        token_list.ranges["semantic"],
        GUIDE["sigma"],
    )
    expected = []
    for i, b in enumerate(pairs.examples.tolist()):
        q = pairs.query_rows[i, : pairs.num_queries[i]]
        k = pairs.key_rows[i][pairs.key_valid[i]]
        block = weights[b, : GUIDE["heads"]][:, q][:, :, k]  # [h, Q, K]
        prior = pairs.prior[i, : len(q)][:, pairs.key_valid[i]]
        if keys == "all":
            far = 1 - (block * (1 - prior)).sum(-1)  # [h, Q]
        else:
            far = (block / block.sum(-1, keepdim=True) * prior).sum(-1)
        expected.append(float(far.sum(-1).mean()))
    added = (out.example_loss_sum - base.example_loss_sum).tolist()
    assert added == pytest.approx([GUIDE["weight"] * e for e in expected], rel=1e-4)
    assert out.stats["loss_sum/guided"] == pytest.approx(sum(expected), rel=1e-4)
    assert out.stats["count/guided"] == float(pairs.num_queries.sum())
    # Every other statistic is the plain model's: the wrapper leaves the attention output alone.
    for key, value in base.stats.items():
        assert out.stats[key] == pytest.approx(value, rel=1e-6), key
    assert guided.body.config._attn_implementation == "sdpa"  # restored after the forward


@pytest.mark.parametrize("keys, ratio", [("condition", 0.5), ("all", 0.65)])
def test_training_with_the_guide_lowers_the_penalty(keys, ratio):
    """A few steps on one batch: the guided heads move their mass towards the diagonal (with
    `keys: all` more slowly: the mass must also leave the keys outside the condition)."""
    token_list, _, guided = models(guide={**GUIDE, "keys": keys})
    frames, loss_mask, lengths, _, _ = ctc_batch(token_list, seed=1)
    guided.train()
    optimizer = torch.optim.Adam(guided.parameters(), lr=3e-3)
    penalties = []
    for _ in range(30):
        out = guided(frames, loss_mask, lengths)
        penalties.append(out.stats["loss_sum/guided"] / out.stats["count/guided"])
        out.loss_sum.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert penalties[-1] < ratio * penalties[0]


def test_settings_round_trip_and_are_checked(tmp_path):
    token_list, _, guided = models()
    config = guided.config_dict()
    assert config["guided_attention"] == {**GUIDE, "tasks": ["asr", "tts"], "keys": "condition"}
    rebuilt = MultiStreamLM.from_config_dict(config, token_list)
    assert rebuilt.guided_attention == GuidedAttention(**GUIDE)
    plain_config = MultiStreamLM.from_base(tiny_config(), token_list).config_dict()
    assert MultiStreamLM.from_config_dict(plain_config, token_list).guided_attention is None
    with pytest.raises(ValueError, match=r"layers \[2\] outside the body's 0..1"):
        MultiStreamLM.from_base(
            tiny_config(), token_list, guided_attention={**GUIDE, "layers": [2]}
        )
    with pytest.raises(ValueError, match=r"tasks must be a non-empty subset .* got \['tts', 'x'\]"):
        GuidedAttention(weight=1, tasks=["tts", "x"])
    with pytest.raises(ValueError, match="keys must be one of"):
        GuidedAttention(weight=1, keys="speech")
    tts_all = {**GUIDE, "tasks": ["tts"], "keys": "all"}
    rebuilt = MultiStreamLM.from_config_dict(models(guide=tts_all)[2].config_dict(), token_list)
    assert rebuilt.guided_attention == GuidedAttention(**tts_all)
    with pytest.raises(ValueError, match="heads 5 > the body's 4 heads"):
        MultiStreamLM.from_base(tiny_config(), token_list, guided_attention={**GUIDE, "heads": 5})
    with pytest.raises(ValueError, match="gradient checkpointing"):
        guided.gradient_checkpointing_enable()

    def write(model_section: str):
        path = tmp_path / "train.yaml"
        path.write_text(
            "model:\n  base: {model_type: llama}\n"
            + model_section
            + "data:\n  token_list: t.json\n  train: [{path: a.json}]\n"
        )
        return path

    with pytest.raises(ConfigError, match=r"model.guided_attention: .*weight must be > 0"):
        load_config(write("  guided_attention: {weight: 0}\n")).validate()
    with pytest.raises(ConfigError, match="unexpected keyword argument 'sigmaa'"):
        load_config(write("  guided_attention: {weight: 1, sigmaa: 1}\n")).validate()
    with pytest.raises(ConfigError, match="gradient_checkpointing"):
        load_config(
            write("  guided_attention: {weight: 1}\n  gradient_checkpointing: true\n")
        ).validate()
    assert load_config(write("  guided_attention: {weight: 1}\n")).model.guided_attention == {
        "weight": 1
    }
    # Command-line overrides fill the section a config leaves at None.
    overridden = load_config(
        write(""), ["model.guided_attention.weight=2", "--model.guided_attention.layers=[0]"]
    )
    assert overridden.model.guided_attention == {"weight": 2, "layers": [0]}


def test_the_wrapper_refuses_to_run_outside_a_guided_forward():
    token_list, _, guided = models()
    from opuslm.model.guided_attention import _wrapper_name

    frames = torch.full((1, 4, token_list.num_streams), token_list.pad_id)
    frames[..., 0] = torch.tensor([1, 5, 7, 2])  # text only
    guided.body.config._attn_implementation = _wrapper_name("sdpa")
    try:
        with pytest.raises(RuntimeError, match="outside MultiStreamLM's forward"):
            guided.hidden_states(frames)
    finally:
        guided.body.config._attn_implementation = "sdpa"
    # Text only: no pair, so the plain attention runs and the stats say so.
    out = guided(frames, torch.ones(1, 4, dtype=torch.bool), torch.tensor([4]))
    assert np.isfinite(float(out.loss.detach()))
    assert (out.stats["loss_sum/guided"], out.stats["count/guided"]) == (0.0, 0.0)
