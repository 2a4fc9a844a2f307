"""MultiStreamLM: bodies, vocabulary extension, KV cache, loss against a hand computation."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers
import yaml

from opuslm.model.delay import delay
from opuslm.model.lm import DEFAULT_LOSS_WEIGHTS, MultiStreamLM, prefix_attention_mask
from opuslm.train.config import ConfigError, load_config
from opuslm.vocab import MODALITIES, TokenList, VocabError

NUM_TEXT = 40
SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny models only lose from intra-op threads (and a busy 2-core machine makes it worse)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_token_list(num_codebooks: int = 3, codebook_size: int = 8) -> TokenList:
    return TokenList.build(
        [f"t{i}" for i in range(NUM_TEXT)],
        num_semantic=12,
        num_codebooks=num_codebooks,
        codebook_size=codebook_size,
    )


def tiny_config(kind: str = "llama", **overrides) -> transformers.PretrainedConfig:
    """A 2-layer, hidden-32 causal-LM config of the given family with the text vocabulary."""
    configs = {
        "llama": transformers.LlamaConfig,
        "qwen2": transformers.Qwen2Config,
        "olmo2": transformers.Olmo2Config,
        "gpt_neox": transformers.GPTNeoXConfig,
    }
    kwargs = {**SMALL, "vocab_size": NUM_TEXT, **overrides}
    if kind != "gpt_neox":
        kwargs.setdefault("num_key_value_heads", 2)
    return configs[kind](**kwargs)


def tiny_model(kind: str = "llama", seed: int = 0, **overrides) -> MultiStreamLM:
    torch.manual_seed(seed)
    return MultiStreamLM.from_base(tiny_config(kind, **overrides), tiny_token_list()).eval()


def random_frames(token_list: TokenList, rng: np.random.Generator, kinds: str) -> torch.Tensor:
    """Frames [T, S] from a kind string: 't' text, 'x' special, 's' speech (semantic + codes)."""
    rows = []
    pad = token_list.pad_id
    streams = token_list.num_streams
    for kind in kinds:
        row = [pad] * streams
        if kind == "t":
            row[0] = int(rng.integers(0, token_list.size("text")))
        elif kind == "x":
            row[0] = token_list.sos_id
        else:
            codes = rng.integers(0, token_list.codebook_size, (1, streams - 1))
            unit = rng.integers(0, token_list.size("semantic"), (1, 1))
            row = token_list.encode_frames(np.concatenate([unit, codes], 1))[0].tolist()
        rows.append(row)
    return torch.tensor(rows)


def batch_of(frames_list: list[torch.Tensor], masks: list[list[int]], pad: int):
    """Right-pad frames [T_i, S] into [B, T, S] with a loss mask [B, T] and lengths [B]."""
    lengths = torch.tensor([len(f) for f in frames_list])
    num_frames, streams = int(lengths.max()), frames_list[0].shape[1]
    frames = torch.full((len(frames_list), num_frames, streams), pad)
    loss_mask = torch.zeros(len(frames_list), num_frames, dtype=torch.bool)
    for i, (f, m) in enumerate(zip(frames_list, masks)):
        frames[i, : len(f)] = f
        loss_mask[i, : len(f)] = torch.tensor(m, dtype=torch.bool)
    return frames, loss_mask, lengths


def example_batch(token_list: TokenList, seed: int = 0):
    rng = np.random.default_rng(seed)
    first = random_frames(token_list, rng, "xtttssssxt")
    second = random_frames(token_list, rng, "xttsssx")
    return batch_of(
        [first, second], [[0, 0, 0, 1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 0, 1]], token_list.pad_id
    )


@pytest.mark.parametrize("kind", ["llama", "qwen2", "olmo2", "gpt_neox"])
def test_bodies_train_and_reach_new_rows(kind):
    model = tiny_model(kind).train()
    token_list = model.token_list
    frames, loss_mask, lengths = example_batch(token_list)
    out = model(frames, loss_mask, lengths)
    assert torch.isfinite(out.loss)
    assert out.num_target_frames.item() == int(loss_mask.sum())
    assert torch.allclose(out.loss, out.loss_sum / out.num_target_frames)
    assert torch.allclose(out.example_loss_sum.sum(), out.loss_sum)
    out.loss.backward()
    embedding_grad = model.body.get_input_embeddings().weight.grad
    head_grad = model.body.get_output_embeddings().weight.grad
    semantic = slice(*token_list.ranges["semantic"])
    acoustic = slice(*token_list.ranges["acoustic"])
    assert embedding_grad[semantic].abs().sum() > 0
    assert head_grad[acoustic].abs().sum() > 0


def reference_loss(model: MultiStreamLM, frames, loss_mask, lengths):
    """The contract spelled out with Python loops: per example, per (row, stream)."""
    token_list = model.token_list
    pad, streams = token_list.pad_id, token_list.num_streams
    embedding = model.body.get_input_embeddings().weight
    head = model.body.get_output_embeddings().weight
    total, per_example, counts = 0.0, [], {m: 0 for m in MODALITIES}
    for b in range(len(frames)):
        length = int(lengths[b])
        delayed = [[pad] * streams for _ in range(length + streams - 1)]
        for t in range(length):
            for s in range(streams):
                delayed[t + s][s] = int(frames[b, t, s])
        inputs = torch.stack([embedding[row].sum(0) for row in delayed[:-1]])[None]
        hidden = model.body.base_model(inputs_embeds=inputs).last_hidden_state[0]
        example_sum = 0.0
        for row in range(1, len(delayed)):
            for s in range(streams):
                frame, target = row - s, delayed[row][s]
                if not (0 <= frame < length) or not loss_mask[b, frame] or target == pad:
                    continue
                if s == 0:
                    log_probs = torch.log_softmax(hidden[row - 1] @ head.T, -1)
                    modality = MODALITIES[int(token_list.modality_ids()[target])]
                    ce = -log_probs[target].item()
                else:
                    start = token_list.stream_range(s)[0]
                    rows = head[start : start + token_list.codebook_size]
                    ce = -torch.log_softmax(hidden[row - 1] @ rows.T, -1)[target - start].item()
                    modality = "acoustic"
                counts[modality] += 1
                example_sum += DEFAULT_LOSS_WEIGHTS[modality] * ce
        per_example.append(example_sum)
        total += example_sum
    num_frames = sum(int(loss_mask[b, : int(lengths[b])].sum()) for b in range(len(frames)))
    return total, per_example, num_frames, counts


@pytest.mark.parametrize("kind", ["llama", "gpt_neox"])
def test_loss_equals_hand_computation(kind):
    model = tiny_model(kind, seed=3)
    frames, loss_mask, lengths = example_batch(model.token_list, seed=5)
    # A target beyond `lengths` must not count.
    loss_mask[1, -1] = True
    with torch.no_grad():
        out = model(frames, loss_mask, lengths)
        total, per_example, num_frames, counts = reference_loss(model, frames, loss_mask, lengths)
    assert out.num_target_frames.item() == num_frames == 10
    assert out.loss_sum.item() == pytest.approx(total, rel=1e-5)
    assert out.loss.item() == pytest.approx(total / num_frames, rel=1e-5)
    assert out.example_loss_sum.tolist() == pytest.approx(per_example, rel=1e-5)
    assert {m: out.stats[f"count/{m}"] for m in MODALITIES} == counts
    assert counts == {"text": 2, "special": 2, "semantic": 6, "acoustic": 18}
    assert out.stats["count/stream0"] == 10
    assert [out.stats[f"count/stream{s}"] for s in range(1, 4)] == [6, 6, 6]


def test_loss_weights_scale_their_modality():
    model = tiny_model()
    frames, loss_mask, lengths = example_batch(model.token_list)
    with torch.no_grad():
        base = model(frames, loss_mask, lengths)
        model.id_weights[model.modality_ids == MODALITIES.index("text")] *= 2
        doubled = model(frames, loss_mask, lengths)
    assert doubled.loss_sum.item() == pytest.approx(
        base.loss_sum.item() + base.stats["loss_sum/text"], rel=1e-5
    )


@pytest.mark.parametrize("kind", ["llama", "qwen2", "gpt_neox"])
def test_cached_step_logits_equal_full_forward(kind):
    model = tiny_model(kind, seed=1)
    frames, _, _ = example_batch(model.token_list)
    delayed = delay(frames[:1], model.token_list.pad_id)
    with torch.no_grad():
        hidden, _ = model.hidden_states(delayed)
        full0, full_c = model.stream0_logits(hidden[0]), model.codebook_logits(hidden[0])
        cache = transformers.DynamicCache(config=model.body.config)
        for row in range(delayed.shape[1]):
            step = model.forward_step(delayed[:, row : row + 1], None, cache, None)
            cache = step.cache
            assert (model.stream0_logits(step.hidden[0]) - full0[row]).abs().max() < 1e-5
            assert (model.codebook_logits(step.hidden[0]) - full_c[row]).abs().max() < 1e-5


@pytest.mark.parametrize("tied", [True, False])
def test_init_keeps_base_rows_and_uses_std(tied):
    torch.manual_seed(0)
    base_config = tiny_config(initializer_range=0.2, tie_word_embeddings=tied)
    base = transformers.AutoModelForCausalLM.from_config(base_config)
    with torch.no_grad():
        base.get_input_embeddings().weight.normal_(0.0, 0.2)
        base.get_output_embeddings().weight.normal_(0.0, 0.3)  # tied: overrides the embedding
    base_embedding = base.get_input_embeddings().weight.detach().clone()
    base_head = base.get_output_embeddings().weight.detach().clone()
    token_list = tiny_token_list(num_codebooks=8, codebook_size=64)
    model = MultiStreamLM(base, token_list)
    embedding = model.body.get_input_embeddings().weight
    head = model.body.get_output_embeddings().weight
    assert embedding.shape[0] == head.shape[0] == len(token_list)
    assert (head is embedding) == tied
    assert torch.equal(embedding[:NUM_TEXT], base_embedding)
    assert torch.equal(head[:NUM_TEXT], base_head)
    for matrix, base_rows in ((embedding, base_embedding), (head, base_head)):
        new_std = matrix[NUM_TEXT:].std().item()
        # std 0.2 / 0.3, not the variance (0.04 / 0.09).
        assert new_std == pytest.approx(base_rows.std().item(), rel=0.05)


def test_from_base_loads_local_directory(tmp_path):
    torch.manual_seed(0)
    base = transformers.AutoModelForCausalLM.from_config(tiny_config())
    base.save_pretrained(tmp_path / "base")
    model = MultiStreamLM.from_base(tmp_path / "base", tiny_token_list())
    assert torch.equal(
        model.body.get_input_embeddings().weight[:NUM_TEXT], base.get_input_embeddings().weight
    )
    assert model.body.get_input_embeddings().weight.dtype == torch.float32


@pytest.mark.parametrize("kind, tied", [("olmo2", False), ("llama", True)])
def test_config_dict_round_trip_restores_the_model(kind, tied):
    model = tiny_model(kind, tie_word_embeddings=tied)
    config = json.loads(json.dumps(model.config_dict()))
    assert yaml.safe_load(yaml.safe_dump(config)) == config
    rebuilt = MultiStreamLM.from_config_dict(config, model.token_list).eval()
    tied_after = (
        rebuilt.body.get_output_embeddings().weight is rebuilt.body.get_input_embeddings().weight
    )
    assert tied_after == tied
    rebuilt.load_state_dict(model.state_dict())
    frames, loss_mask, lengths = example_batch(model.token_list)
    with torch.no_grad():
        assert torch.equal(
            model(frames, loss_mask, lengths).loss, rebuilt(frames, loss_mask, lengths).loss
        )


def test_loss_weight_options_are_kept_and_checked():
    token_list = tiny_token_list()
    model = MultiStreamLM.from_base(tiny_config(), token_list, loss_weights={"special": 1.0})
    assert model.config_dict()["loss_weights"]["special"] == 1.0
    with pytest.raises(ValueError, match="unknown loss weight"):
        MultiStreamLM.from_base(tiny_config(), token_list, loss_weights={"speech": 1.0})


def test_token_list_mismatch_names_first_difference():
    model = tiny_model()
    other = TokenList.build(
        [f"t{i}" for i in range(NUM_TEXT)], num_semantic=13, num_codebooks=3, codebook_size=8
    )
    model.check_token_list(tiny_token_list())
    with pytest.raises(VocabError, match="range of semantic"):
        model.check_token_list(other)
    with pytest.raises(VocabError, match="50 embedding rows"):
        MultiStreamLM.from_base(tiny_config(vocab_size=50), tiny_token_list())


def test_bad_codebook_ids_raise():
    model = tiny_model()
    frames, loss_mask, lengths = example_batch(model.token_list)
    frames[0, 5, 2] = model.token_list.stream_range(1)[0]  # a codebook-0 id in stream 2
    with pytest.raises(ValueError, match="stream's codebook"):
        model(frames, loss_mask, lengths)


def test_gradient_checkpointing_gives_same_loss_and_grads():
    model = tiny_model().train()
    frames, loss_mask, lengths = example_batch(model.token_list)
    plain = model(frames, loss_mask, lengths)
    plain.loss.backward()
    grad = model.body.get_input_embeddings().weight.grad.clone()
    model.zero_grad()
    model.gradient_checkpointing_enable()
    assert model.body.is_activation_checkpointing
    checkpointed = model(frames, loss_mask, lengths)
    checkpointed.loss.backward()
    assert torch.allclose(plain.loss, checkpointed.loss)
    assert torch.allclose(grad, model.body.get_input_embeddings().weight.grad, atol=1e-6)
    assert math.isfinite(checkpointed.stats["loss_sum/stream1"])


def test_text_only_token_list_has_one_stream():
    token_list = TokenList.build([f"t{i}" for i in range(NUM_TEXT)])
    model = MultiStreamLM.from_base(tiny_config(), token_list)
    frames = torch.tensor([[[1], [2], [3], [token_list.eos_id]]])
    out = model(frames, torch.ones(1, 4, dtype=torch.bool), torch.tensor([4]))
    assert out.stats["count/stream0"] == 3  # the first row is never predicted
    assert (out.stats["count/text"], out.stats["count/special"]) == (2, 1)
    assert out.num_target_frames.item() == 4


# ------------------------------------------------------------------ optional CTC alignment loss
def ctc_batch(token_list: TokenList, seed: int = 0):
    """An ASR and a TTS sequence of the task templates, collated: (frames, loss_mask, lengths,
    the ASR example's speech rows [T, S] and text ids [L])."""
    from opuslm.data.dataset import collate
    from opuslm.tasks import Example, build_sequence

    rng = np.random.default_rng(seed)
    speech = np.concatenate(
        [
            rng.integers(0, token_list.size("semantic"), (9, 1)),
            rng.integers(0, token_list.codebook_size, (9, token_list.num_streams - 1)),
        ],
        axis=1,
    )
    text = rng.integers(0, token_list.size("text"), 4)
    prompt = speech[:3]
    sequences = [
        build_sequence("asr", Example("a", text=text, speech=speech), token_list),
        build_sequence("tts", Example("b", text=text, speech=speech, prompt=prompt), token_list),
    ]
    batch = collate(sequences, token_list.pad_id)
    return batch.frames, batch.loss_mask, batch.lengths, speech, text


def ctc_by_hand(model, frames, example, start, num_frames, text, upsample=1):
    """CTC NLL of `text` from the `num_frames` speech frames from `start` of batch row `example`,
    each read at the hidden row where all its streams have been seen (frame + S - 1)."""
    token_list = model.token_list
    hidden, _ = model.hidden_states(delay(frames, token_list.pad_id)[:, :-1])
    rows = torch.arange(start, start + num_frames) + token_list.num_streams - 1
    # With upsampling, frame t's head output holds outputs tU .. tU + U - 1, each C + 1 wide.
    log_probs = model.ctc_head(hidden[example, rows]).view(num_frames * upsample, -1)
    assert log_probs.shape[-1] == token_list.size("text") + 1
    return F.ctc_loss(
        log_probs.log_softmax(-1)[:, None],
        torch.as_tensor(text)[None],
        torch.tensor([num_frames * upsample]),
        torch.tensor([len(text)]),
        blank=token_list.size("text"),
        reduction="sum",
    )


def with_and_without_ctc(**ctc_options):
    """A model with the CTC options and the same model without a CTC head, both run on
    `ctc_batch`: (model, the batch's frames, speech and text, its outputs without and with)."""
    torch.manual_seed(0)
    token_list = tiny_token_list()
    plain = MultiStreamLM.from_base(tiny_config(), token_list).eval()
    model = MultiStreamLM.from_base(tiny_config(), token_list, **ctc_options).eval()
    model.load_state_dict({**model.state_dict(), **plain.state_dict()})
    frames, loss_mask, lengths, speech, text = ctc_batch(token_list)
    base, out = (m(frames, loss_mask, lengths) for m in (plain, model))
    return model, frames, speech, text, base, out


@pytest.mark.parametrize("upsample", [1, 2])
def test_ctc_loss_is_added_for_asr_examples_only(upsample):
    with_ctc, frames, speech, text, base, out = with_and_without_ctc(
        ctc_weight=0.5, ctc_upsample=upsample
    )
    token_list = with_ctc.token_list

    # By hand: the ASR example's speech frames.
    first_unit = token_list.encode_frames(speech)[0, 0]
    start = int(np.flatnonzero(frames[0, :, 0].numpy() == first_unit)[0])
    expected = ctc_by_hand(with_ctc, frames, 0, start, len(speech), text, upsample)
    assert torch.allclose(out.example_loss_sum[0], base.example_loss_sum[0] + 0.5 * expected)
    assert torch.allclose(out.example_loss_sum[1], base.example_loss_sum[1])  # TTS: untouched
    assert out.stats["count/ctc"] == len(text)
    assert out.stats["loss_sum/ctc"] == pytest.approx(float(expected.detach()), rel=1e-5)


@pytest.mark.parametrize("asr_weight", [0.0, 0.5])
def test_tts_ctc_reads_the_transcript_from_the_generated_speech(asr_weight):
    model, frames, speech, text, base, out = with_and_without_ctc(
        ctc_weight=asr_weight, tts_ctc_weight=0.7
    )
    token_list = model.token_list

    # By hand: the TTS example's target speech (not its prompt, which is also speech), against
    # the transcript it was given.
    start = int(np.flatnonzero(frames[1, :, 0].numpy() == token_list.id("<speech_start>"))[0]) + 1
    assert frames[1, start + len(speech), 0] == token_list.eos_id  # the target speech's end
    expected = ctc_by_hand(model, frames, 1, start, len(speech), text)
    assert torch.allclose(out.example_loss_sum[1], base.example_loss_sum[1] + 0.7 * expected)
    assert out.stats["count/ctc_tts"] == len(text)
    assert out.stats["loss_sum/ctc_tts"] == pytest.approx(float(expected.detach()), rel=1e-5)
    # The ASR example gets only its own direction's CTC, and only if that weight is set.
    assert ("count/ctc" in out.stats) == (asr_weight > 0)
    if asr_weight == 0:
        assert torch.allclose(out.example_loss_sum[0], base.example_loss_sum[0])
    rebuilt = MultiStreamLM.from_config_dict(model.config_dict(), token_list)
    assert (rebuilt.ctc_weight, rebuilt.tts_ctc_weight) == (asr_weight, 0.7)
    rebuilt.load_state_dict(model.state_dict())
    with pytest.raises(ValueError, match="tts_ctc_weight must be >= 0"):
        MultiStreamLM.from_base(tiny_config(), token_list, tts_ctc_weight=-0.1)


def test_tts_ctc_weight_is_a_checked_config_key(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text(
        "model:\n  base: {model_type: llama}\n  tts_ctc_weight: -1\n"
        "data:\n  token_list: t.json\n  train: [{path: a.json}]\n"
    )
    with pytest.raises(ConfigError, match="model.tts_ctc_weight must be >= 0, got -1"):
        load_config(path).validate()
    assert load_config(path, ["model.tts_ctc_weight=0.5"]).model.tts_ctc_weight == 0.5


def test_ctc_head_trains_round_trips_and_is_optional_on_load():
    torch.manual_seed(0)
    token_list = tiny_token_list()
    model = MultiStreamLM.from_base(tiny_config(), token_list, ctc_weight=1.0).train()
    frames, loss_mask, lengths, _, _ = ctc_batch(token_list, seed=1)
    model(frames, loss_mask, lengths).loss.backward()
    assert model.ctc_head.weight.grad.abs().sum() > 0
    rebuilt = MultiStreamLM.from_config_dict(model.config_dict(), token_list)
    assert rebuilt.ctc_weight == 1.0
    rebuilt.load_state_dict(model.state_dict())  # strict: the head is part of the architecture
    with pytest.raises(ValueError, match="ctc_weight"):
        MultiStreamLM.from_base(tiny_config(), token_list, ctc_weight=-1.0)
    upsampled = MultiStreamLM.from_base(tiny_config(), token_list, ctc_weight=1.0, ctc_upsample=3)
    assert upsampled.ctc_head.out_features == 3 * (token_list.size("text") + 1)
    again = MultiStreamLM.from_config_dict(upsampled.config_dict(), token_list)
    assert again.ctc_upsample == 3
    again.load_state_dict(upsampled.state_dict())
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match="ctc_upsample must be an integer >= 1"):
            MultiStreamLM.from_base(tiny_config(), token_list, ctc_weight=1.0, ctc_upsample=bad)


def test_prefix_lm_condition_rows_see_each_other_but_never_a_target():
    torch.manual_seed(0)
    token_list = tiny_token_list()
    model = MultiStreamLM.from_base(tiny_config(), token_list, prefix_lm=True).eval()
    frames, loss_mask, lengths, speech, text = ctc_batch(token_list)
    asr = frames[:1]
    first_target = int(loss_mask[0].int().argmax())
    mask = prefix_attention_mask(torch.tensor([first_target]), asr.shape[1] + asr.shape[2] - 2)
    delayed = delay(asr, token_list.pad_id)[:, :-1]

    def hidden(rows):
        with torch.no_grad():
            return model.hidden_states(rows, attention_mask=mask)[0][0]

    base = hidden(delayed)
    changed_target = delayed.clone()
    changed_target[0, first_target:, 0] = token_list.sos_id  # every target token replaced
    assert torch.allclose(hidden(changed_target)[:first_target], base[:first_target], atol=1e-6)
    changed_speech = delayed.clone()
    changed_speech[0, first_target - 1, 0] = token_list.eos_id  # the last condition row
    assert not torch.allclose(hidden(changed_speech)[0], base[0])  # row 0 sees it: bidirectional
    # The training loss uses the same mask: a prefix-LM model's loss differs from the causal one.
    causal = MultiStreamLM.from_base(tiny_config(), token_list).eval()
    causal.load_state_dict(model.state_dict())
    assert not torch.allclose(
        model(frames, loss_mask, lengths).loss, causal(frames, loss_mask, lengths).loss
    )


@pytest.mark.parametrize(("prefix_lm", "upsample"), [(False, 1), (True, 1), (True, 2)])
def test_ctc_log_probs_of_a_prompt_are_the_posteriors_training_reads(prefix_lm, upsample):
    """The decoding prompt's CTC posteriors give training's CTC loss; padding changes nothing."""
    from opuslm.tasks import Example, generation_prompt

    torch.manual_seed(0)
    token_list = tiny_token_list()
    model = MultiStreamLM.from_base(
        tiny_config(), token_list, ctc_weight=1.0, prefix_lm=prefix_lm, ctc_upsample=upsample
    ).eval()
    frames, loss_mask, lengths, speech, text = ctc_batch(token_list)
    with torch.no_grad():
        trained = model(frames, loss_mask, lengths).stats["loss_sum/ctc"]
        asr = Example("a", speech=speech)
        prompt = torch.from_numpy(generation_prompt("asr", asr, token_list))
        short = torch.from_numpy(
            generation_prompt("asr", Example("b", speech=speech[:5]), token_list)
        )
        batch = torch.full((2, len(prompt), token_list.num_streams), token_list.pad_id)
        batch[0], batch[1, : len(short)] = prompt, short
        log_probs, speech_lengths = model.ctc_log_probs(
            batch, torch.tensor([len(prompt), len(short)])
        )
        alone, alone_lengths = model.ctc_log_probs(short[None], torch.tensor([len(short)]))
    assert speech_lengths.tolist() == [9 * upsample, 5 * upsample]
    assert log_probs.shape == (2, 9 * upsample, NUM_TEXT + 1)
    ctc = F.ctc_loss(
        log_probs[:1].transpose(0, 1),
        torch.as_tensor(text)[None],
        speech_lengths[:1],
        torch.tensor([len(text)]),
        blank=NUM_TEXT,
        reduction="sum",
    )
    assert float(ctc) == pytest.approx(trained, rel=1e-5)
    assert alone_lengths.tolist() == [5 * upsample]
    assert torch.allclose(log_probs[1, : 5 * upsample], alone[0], atol=1e-5)


def test_ctc_log_probs_need_a_ctc_head():
    model = tiny_model()
    frames, _, lengths, _, _ = ctc_batch(model.token_list)
    with pytest.raises(ValueError, match="no CTC head"):
        model.ctc_log_probs(frames, lengths)
