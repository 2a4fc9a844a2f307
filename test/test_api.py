"""Packing and the Python API on a tiny packed model (tokenizers trained on flite speech)."""

from __future__ import annotations

import logging
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from tiny_model import CODEC_CONFIG, NUM_SEMANTIC, PROMPT_FRAMES, TinyModel

from opuslm import OpusLM
from opuslm.api import InputError
from opuslm.packing import PackError, load_packed, pack
from opuslm.vocab import TokenList

GREEDY = {"semantic": {"greedy": True}, "acoustic": {"greedy": True}, "text": {"greedy": True}}
HOP = 320


@pytest.fixture(scope="module")
def model(tiny: TinyModel) -> OpusLM:
    return OpusLM.from_pretrained(tiny.packed_dir)


@pytest.fixture(scope="module")
def speech(tiny: TinyModel) -> list[np.ndarray]:
    return [sf.read(p, dtype="float32")[0] for p in tiny.wavs.values()]


def copy_packed(tiny: TinyModel, tmp_path: Path) -> Path:
    target = tmp_path / "packed"
    shutil.copytree(tiny.packed_dir, target)
    return target


# ------------------------------------------------------------------------------ packed directory
def test_packed_directory_is_self_contained_and_pickle_free(tiny: TinyModel):
    names = {p.name for p in tiny.packed_dir.iterdir()}
    assert {"config.yaml", "model.safetensors", "token_list.json"} <= names
    assert {"text_tokenizer", "semantic", "codec", "default_prompt.safetensors"} <= names
    suffixes = {p.suffix for p in tiny.packed_dir.rglob("*") if p.is_file()}
    assert suffixes <= {".yaml", ".json", ".safetensors", ".npy", ".model"}
    config = yaml.safe_load((tiny.packed_dir / "config.yaml").read_text())
    assert config["prompt_frames"] == PROMPT_FRAMES  # taken from the training run config
    assert config["sample_rate"] == 16000 and config["frame_rate"] == 50.0
    assert config["decoding"]["tts"]["max_frames"] == 12  # --decode_config override
    assert config["decoding"]["tts"]["semantic"]["greedy"] is False  # default kept
    assert not list(tiny.packed_dir.parent.glob(".packed.*"))  # temp dir renamed away


def test_packed_weights_equal_the_checkpoint(tiny: TinyModel, model: OpusLM):
    from opuslm.train.checkpoint import load_weights

    saved = load_weights(tiny.checkpoint_dir / "model.safetensors")
    for name, tensor in model.model.state_dict().items():
        torch.testing.assert_close(tensor, saved[name], rtol=0, atol=0)


def test_default_prompt_is_the_tokenized_wav(tiny: TinyModel, model: OpusLM, speech):
    rows = model.encode_raw(speech[0], 16000)[:PROMPT_FRAMES]
    np.testing.assert_array_equal(model.packed.default_prompt, rows)


def test_loading_refuses_a_pickle_instead_of_weights(tiny: TinyModel, tmp_path: Path):
    packed = copy_packed(tiny, tmp_path)
    marker = tmp_path / "pickle_was_run"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (packed / "model.safetensors").write_bytes(pickle.dumps({"weight": Exploit()}))
    with pytest.raises(
        PackError, match="model.safetensors: not a safetensors file.*never unpickled"
    ):
        load_packed(packed)
    assert not marker.exists()


def test_loading_names_a_missing_file_and_lists_the_contents(tiny: TinyModel, tmp_path: Path):
    packed = copy_packed(tiny, tmp_path)
    (packed / "token_list.json").unlink()
    with pytest.raises(PackError, match="token_list.json is missing") as error:
        load_packed(packed)
    assert "model.safetensors" in str(error.value) and "codec/" in str(error.value)
    shutil.copy(tiny.packed_dir / "token_list.json", packed)
    shutil.rmtree(packed / "codec")
    with pytest.raises(PackError, match="codec/ is missing"):
        load_packed(packed)


def test_loading_names_a_token_list_or_weights_of_the_wrong_size(tiny: TinyModel, tmp_path: Path):
    from opuslm.train.checkpoint import load_weights, save_weights

    packed = copy_packed(tiny, tmp_path)
    old = TokenList.load(packed / "token_list.json")
    # Same tokenizers, one more special slot: every id after the special block moves.
    TokenList.build(
        old.tokens[: old.size("text")],
        num_semantic=NUM_SEMANTIC,
        num_codebooks=CODEC_CONFIG["num_codebooks"],
        codebook_size=CODEC_CONFIG["codebook_size"],
        special_slots=old.size("special") + 1,
    ).save(packed / "token_list.json")
    with pytest.raises(PackError, match=r"config.yaml.*token_list.json.*134 embedding rows.*135"):
        load_packed(packed)
    old.save(packed / "token_list.json")
    state = load_weights(packed / "model.safetensors")
    name = "body.model.embed_tokens.weight"
    state[name] = torch.cat([state[name], state[name][:1]])
    save_weights(state, packed / "model.safetensors")
    with pytest.raises(PackError, match=rf"{name} has shape \[135, 32\].*134 ids.*\[134, 32\]"):
        load_packed(packed)


def test_loading_names_a_token_list_that_does_not_fit_the_tokenizers(
    tiny: TinyModel, tmp_path: Path
):
    packed = copy_packed(tiny, tmp_path)
    old = TokenList.load(packed / "token_list.json")
    tokens = list(old.tokens)
    tokens[3] = "<renamed>"
    TokenList(tuple(tokens), old.ranges, old.num_codebooks, old.codebook_size).save(
        packed / "token_list.json"
    )
    with pytest.raises(PackError, match="token id 3: .* vs '<renamed>'"):
        load_packed(packed)


def test_loading_rejects_an_unknown_config_key(tiny: TinyModel, tmp_path: Path):
    packed = copy_packed(tiny, tmp_path)
    config = yaml.safe_load((packed / "config.yaml").read_text())
    config["sampel_rate"] = 8000
    (packed / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(PackError, match="unknown config key 'sampel_rate'"):
        load_packed(packed)


def test_pack_checks_the_checkpoint_token_list_against_the_tokenizers(
    tiny: TinyModel, tmp_path: Path
):
    checkpoint = tmp_path / "step_5"
    shutil.copytree(tiny.checkpoint_dir, checkpoint)
    old = TokenList.load(checkpoint / "token_list.json")
    TokenList.build(
        old.tokens[: old.size("text")],
        num_semantic=NUM_SEMANTIC + 1,
        num_codebooks=CODEC_CONFIG["num_codebooks"],
        codebook_size=CODEC_CONFIG["codebook_size"],
    ).save(checkpoint / "token_list.json")
    with pytest.raises(PackError, match="tokenizers.*range of semantic"):
        pack(checkpoint, tiny.text_tokenizer_dir, tiny.semantic_dir, tiny.codec_dir, tmp_path / "p")
    assert not (tmp_path / "p").exists()
    assert not list(tmp_path.glob(".p.*"))


# ------------------------------------------------------------------------------ API
def test_audio_round_trip_shapes_and_ranges(model: OpusLM, speech):
    wav = speech[1]
    frames = model.encode_audio(wav, 16000)
    tl = model.token_list
    assert frames.dtype == torch.long and frames.shape == (-(-len(wav) // HOP), tl.num_streams)
    assert frames[:, 0].min() >= tl.ranges["semantic"][0]
    assert frames[:, 0].max() < tl.ranges["semantic"][1]
    for s in range(1, tl.num_streams):
        low, high = tl.stream_range(s)
        assert low <= frames[:, s].min() and frames[:, s].max() < high
    out, sample_rate = model.decode_audio(frames)
    assert sample_rate == 16000 and out.dtype == np.float32 and out.shape == (len(frames) * HOP,)
    empty, _ = model.decode_audio(frames[:0])
    assert empty.dtype == np.float32 and empty.shape == (0,)
    # Tokenizing several waveforms together gives each one's own rows.
    together = model.encode_raw_batch([(w, 16000) for w in speech])
    for rows, w in zip(together, speech):
        np.testing.assert_array_equal(rows, model.encode_raw(w, 16000))


def test_other_sample_rates_are_resampled_with_a_log_line(model: OpusLM, speech, caplog):
    import soxr

    wav8k = soxr.resample(speech[1], 16000, 8000).astype(np.float32)
    with caplog.at_level(logging.INFO, logger="opuslm.api"):
        frames = model.encode_audio(wav8k, 8000)
    assert "resampling 8000 Hz -> 16000 Hz" in caplog.text
    assert abs(len(frames) - len(model.encode_audio(speech[1], 16000))) <= 1


def test_transcribe_and_synthesize_return_types(model: OpusLM, speech):
    text = model.transcribe(speech[0], 16000)
    assert isinstance(text, str)
    wav, sample_rate = model.synthesize("the cat sat", prompt=(speech[1], 16000), seed=0)
    assert sample_rate == 16000 and wav.dtype == np.float32 and wav.ndim == 1
    assert 0 < len(wav) <= 12 * HOP and len(wav) % HOP == 0
    continuation, sample_rate = model.continue_audio(speech[2][:8000], 16000, seed=0)
    assert continuation.dtype == np.float32 and 0 < len(continuation) <= 6 * HOP
    assert isinstance(model.generate_text("the dog"), str)


def test_batched_equals_one_by_one_for_greedy(model: OpusLM, speech):
    audios = [(speech[0], 16000), (speech[2][:12000], 16000)]
    assert model.transcribe_batch(audios) == [model.transcribe(w, sr) for w, sr in audios]
    texts = ["the cat", "we like to read good books"]
    prompts = [(speech[1], 16000), None]
    batched = model.synthesize_batch(texts, prompts, decoding=GREEDY)
    for (wav, _), text, prompt in zip(batched, texts, prompts):
        single, _ = model.synthesize(text, prompt, decoding=GREEDY)
        np.testing.assert_array_equal(wav, single)


def test_streaming_chunks_are_codec_chunks_of_the_same_frames(model: OpusLM, speech):
    prompt = (speech[1], 16000)
    frames = model.generate("tts", [model.tts_prompt("the mat", prompt)], GREEDY)[0]
    chunks = list(model.synthesize_stream("the mat", prompt, decoding=GREEDY, chunk_frames=5))
    expected = [model.decode_audio(frames[i : i + 5])[0] for i in range(0, len(frames), 5)]
    assert len(chunks) == len(expected) > 1
    for chunk, reference in zip(chunks, expected):
        np.testing.assert_array_equal(chunk, reference)
    whole, _ = model.synthesize("the mat", prompt, decoding=GREEDY)
    assert sum(len(c) for c in chunks) == len(whole)


def test_own_prefix_continues_the_prompt_frames(model: OpusLM, speech):
    prompt = (speech[1], 16000)
    plain = model.tts_prompt("the mat", prompt, own_prefix=False)
    prefixed = model.tts_prompt("the mat", prompt, own_prefix=True)
    np.testing.assert_array_equal(prefixed[: len(plain)], plain)
    np.testing.assert_array_equal(prefixed[len(plain) :], model.encode_audio(*prompt))


def test_bad_inputs_raise_clear_errors(model: OpusLM, tiny: TinyModel, tmp_path: Path):
    with pytest.raises(InputError, match="empty audio"):
        model.transcribe(np.zeros(0, np.float32), 16000)
    with pytest.raises(InputError, match="empty text"):
        model.synthesize("  ")
    with pytest.raises(InputError, match="cannot encode fx"):
        model.synthesize("the fox")
    with pytest.raises(InputError, match="int16"):
        model.transcribe(np.zeros(100, np.int16), 16000)
    packed = copy_packed(tiny, tmp_path)
    config = yaml.safe_load((packed / "config.yaml").read_text())
    config["default_prompt"] = None
    (packed / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(InputError, match="no speaker prompt given.*no default prompt"):
        OpusLM.from_pretrained(packed).synthesize("the cat")


def test_an_input_longer_than_the_model_context_is_named(tiny: TinyModel, speech):
    model = OpusLM.from_pretrained(tiny.packed_dir)
    streams = model.token_list.num_streams
    short, long = sorted(speech, key=len)[0], sorted(speech, key=len)[-1]
    rows = len(model.asr_prompts([(long, 16000)], ["utt_a"])[0])
    model.model.body.config.max_position_embeddings = rows + streams + 1  # room for one frame
    assert len(model.asr_prompts([(long, 16000)], ["utt_a"])[0]) == rows
    context = rows + streams
    model.model.body.config.max_position_embeddings = context
    with pytest.raises(InputError, match=f"utt_a: its prompt has {rows} rows, .* of {context} "):
        model.asr_prompts([(short, 16000), (long, 16000)], ["utt_b", "utt_a"])
    with pytest.raises(InputError, match="audio 0: its prompt has"):
        model.transcribe(long, 16000)
    model.model.body.config.max_position_embeddings = 8
    with pytest.raises(InputError, match="audio 0: its prompt has .* context of 8 positions"):
        model.continue_audio(short, 16000)
    with pytest.raises(InputError, match="text 0: its prompt has .* context of 8 positions"):
        model.synthesize("the cat")
    with pytest.raises(InputError, match="text: its prompt has .* context of 8 positions"):
        model.generate_text("the cat sat on the mat and the cat sat on the mat")


def test_joint_ctc_decoding_needs_a_ctc_head_and_batches(tiny: TinyModel, model: OpusLM, speech):
    import dataclasses

    from opuslm.model.lm import MultiStreamLM

    with pytest.raises(PackError, match="asr: ctc_weight 0.5 needs a model with a CTC head"):
        model.transcribe(speech[0], 16000, {"ctc_weight": 0.5})
    packed = load_packed(tiny.packed_dir)
    torch.manual_seed(0)
    config = {**packed.model.config_dict(), "ctc_weight": 0.3}
    with_head = MultiStreamLM.from_config_dict(config, packed.token_list)
    missing, _ = with_head.load_state_dict(packed.model.state_dict(), strict=False)
    assert missing == ["ctc_head.weight", "ctc_head.bias"]
    joint_model = OpusLM(dataclasses.replace(packed, model=with_head.eval()))
    audios = [(w, 16000) for w in speech]
    joint = {"ctc_weight": 0.5, "ctc_pre_beam": 5}
    batched = joint_model.transcribe_batch(audios, joint)
    assert batched == [joint_model.transcribe(w, sr, joint) for w, sr in audios]
    assert batched != joint_model.transcribe_batch(audios)  # the CTC scores are in effect
    beam = {**joint, "beam_size": 3}
    assert joint_model.transcribe_batch(audios, beam) == [
        joint_model.transcribe(w, sr, beam) for w, sr in audios
    ]
