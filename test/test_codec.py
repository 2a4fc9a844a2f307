"""Acoustic tokenizer (codec): MelRVQCodec behaviour, codec directories, the ESPnet backend."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from opuslm.audio import AudioReader
from opuslm.bin import copy_synthesis
from opuslm.bin import train_codec as train_codec_cmd
from opuslm.bin.copy_synthesis import judge_wer
from opuslm.eval.judges import AsrJudge
from opuslm.tokenizers.acoustic import (
    Codec,
    CodecError,
    load_codec,
    num_frames,
    train_codec,
)
from opuslm.tokenizers.codec_melrvq import MelRVQCodec

SENTENCES = [
    ("slt", "The quick brown fox jumps over the lazy dog."),
    ("rms", "A journey of a thousand miles begins with a single step."),
    ("awb", "Never put off until tomorrow what you can do today."),
]
TINY_CONFIG = {
    "num_codebooks": 4,
    "codebook_size": 64,
    "n_mels": 64,
    "synthesis_hop": 160,
    "griffin_lim_iters": 8,
    "kmeans_max_iter": 20,
}


@pytest.fixture(scope="module")
def flite_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Kaldi data directory (wav.scp, text) of three flite utterances."""
    directory = tmp_path_factory.mktemp("flite")
    scp, text = [], []
    for i, (voice, sentence) in enumerate(SENTENCES):
        path = directory / f"utt{i}.wav"
        subprocess.run(["flite", "-voice", voice, "-t", sentence, "-o", str(path)], check=True)
        scp.append(f"utt{i} {path}\n")
        text.append(f"utt{i} {sentence}\n")
    (directory / "wav.scp").write_text("".join(scp))
    (directory / "text").write_text("".join(text))
    return directory


@pytest.fixture(scope="module")
def flite_wavs(flite_data_dir: Path) -> list[np.ndarray]:
    wavs = []
    for i in range(len(SENTENCES)):
        wav, sample_rate = sf.read(flite_data_dir / f"utt{i}.wav", dtype="float32")
        assert sample_rate == 16000
        wavs.append(wav)
    return wavs


@pytest.fixture(scope="module")
def codec(flite_wavs: list[np.ndarray]) -> MelRVQCodec:
    return train_codec(flite_wavs, TINY_CONFIG)


def test_frame_count_matches_ceil_of_hops(codec: MelRVQCodec, flite_wavs: list[np.ndarray]):
    assert isinstance(codec, Codec)
    assert codec.frame_rate == 50.0
    wav = flite_wavs[0]
    for num_samples in (1, 319, 320, 321, 640, 16000, 16001, len(wav)):
        codes = codec.encode(wav[:num_samples])
        assert codes.shape == (-(-num_samples // 320), 4)
        assert codes.shape[0] == num_frames(num_samples, 320)
    assert num_frames(16001, 320) == 51


def test_codes_in_range_and_all_codebooks_used(codec: MelRVQCodec, flite_wavs: list[np.ndarray]):
    codes = np.concatenate([codec.encode(w) for w in flite_wavs])
    assert np.issubdtype(codes.dtype, np.integer)
    assert codes.min() >= 0 and codes.max() < 64
    # k-means on the training frames: every codebook uses a good part of its entries.
    for q in range(4):
        assert len(np.unique(codes[:, q])) > 32


def test_decode_length_and_finite(codec: MelRVQCodec, flite_wavs: list[np.ndarray]):
    codes = codec.encode(flite_wavs[1])
    wav = codec.decode(codes)
    assert wav.dtype == np.float32
    assert wav.shape == (len(codes) * 320,)
    assert np.all(np.isfinite(wav)) and np.abs(wav).max() > 1e-3


def test_encode_batch_equals_encode(codec: MelRVQCodec, flite_wavs: list[np.ndarray]):
    batch = codec.encode_batch(flite_wavs)
    for wav, codes in zip(flite_wavs, batch, strict=True):
        np.testing.assert_array_equal(codes, codec.encode(wav))


def test_save_load_gives_identical_codes(
    codec: MelRVQCodec, flite_wavs: list[np.ndarray], tmp_path: Path
):
    codec.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["codebooks.safetensors", "codec.yaml"]
    assert yaml.safe_load((tmp_path / "codec.yaml").read_text())["type"] == "melrvq"
    loaded = load_codec(tmp_path)
    assert isinstance(loaded, MelRVQCodec)
    codes = codec.encode(flite_wavs[2])
    np.testing.assert_array_equal(loaded.encode(flite_wavs[2]), codes)
    np.testing.assert_array_equal(loaded.decode(codes[:20]), codec.decode(codes[:20]))


def test_resynthesis_keeps_the_mel_spectrogram(codec: MelRVQCodec, flite_wavs: list[np.ndarray]):
    wav = flite_wavs[0][: 100 * 320]
    codes = codec.encode(wav)
    reference = codec.log_mel(wav)

    def distance(resynthesized: np.ndarray) -> float:
        return float(np.abs(codec.log_mel(resynthesized) - reference).mean())

    random_codes = np.random.default_rng(0).integers(0, 64, size=codes.shape)
    ours, random = distance(codec.decode(codes)), distance(codec.decode(random_codes))
    assert ours < 0.5 * random, (ours, random)


@pytest.fixture(scope="module")
def codec_dir(flite_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A codec trained by the train_codec command (options from a YAML and the command line)."""
    directory = tmp_path_factory.mktemp("codec")
    config = directory / "melrvq.yaml"
    config.write_text(yaml.safe_dump({k: v for k, v in TINY_CONFIG.items() if "codebook" not in k}))
    args = [f"--data_dir={flite_data_dir}", f"--output_dir={directory}", f"--config={config}"]
    assert train_codec_cmd.main([*args, "--num_codebooks=2", "--codebook_size=16"]) == 0
    return directory


def test_train_codec_command(codec_dir: Path):
    codec = load_codec(codec_dir)
    assert (codec.num_codebooks, codec.codebook_size, codec.config.n_mels) == (2, 16, 64)


def test_copy_synthesis_command_writes_wavs(flite_data_dir: Path, codec_dir: Path, tmp_path: Path):
    args = [f"--data_dir={flite_data_dir}", f"--codec_dir={codec_dir}", f"--output_dir={tmp_path}"]
    assert copy_synthesis.main([*args, "--judge=none", "--max_utts=2"]) == 0
    lines = (tmp_path / "wav.scp").read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["utt0", "utt1"]
    for line in lines:
        uttid, path = line.split()
        wav, sample_rate = sf.read(path, dtype="float32")
        original = sf.read(flite_data_dir / f"{uttid}.wav")[0]
        assert sample_rate == 16000 and len(wav) == num_frames(len(original), 320) * 320
    assert not (tmp_path / "score.json").exists()


class ScriptedJudge(AsrJudge):
    """Answers from a table keyed by utterance length, so the WER is known in advance."""

    name = "scripted"

    def __init__(self, answers: dict[int, str]) -> None:
        self.answers = answers

    def transcribe(self, wav: np.ndarray, sample_rate: int) -> str:
        return self.answers[len(wav)]


def test_judge_wer_is_corpus_level_and_normalised(flite_data_dir: Path):
    reader = AudioReader(flite_data_dir)
    lengths = [len(reader.read(u)) for u in ("utt0", "utt1")]
    references = {"utt0": "The quick brown fox.", "utt1": "Hello there world!"}
    # utt0: exact after normalisation; utt1: one substitution -> 1 error / 7 words.
    judge = ScriptedJudge({lengths[0]: "the QUICK brown fox", lengths[1]: "hello their world"})
    wer, hypotheses = judge_wer(judge, reader, references)
    assert wer == pytest.approx(100 / 7)
    assert hypotheses == {"utt0": "the QUICK brown fox", "utt1": "hello their world"}


@pytest.mark.slow
def test_copy_synthesis_command_scores_with_pocketsphinx(
    flite_data_dir: Path, codec_dir: Path, tmp_path: Path
):
    args = [f"--data_dir={flite_data_dir}", f"--codec_dir={codec_dir}", f"--output_dir={tmp_path}"]
    assert copy_synthesis.main([*args, "--max_utts=1"]) == 0
    score = json.loads((tmp_path / "score.json").read_text())
    assert score["num_utts"] == 1 and score["judge"] == "pocketsphinx"
    # flite's "quick brown fox" is well inside what pocketsphinx recognises.
    assert score["wer_original"] < 50
    assert (tmp_path / "judge_resynthesized.txt").read_text().startswith("utt0 ")


@pytest.mark.parametrize(
    ("wav", "message"),
    [
        (np.zeros(1000, dtype=np.int16), "dtype int16"),
        (np.array([0.1, np.nan, 0.2], dtype=np.float32), "NaN"),
        (np.zeros(0, dtype=np.float32), "empty"),
        (np.zeros((2, 1000), dtype=np.float32), "mono"),
    ],
)
def test_bad_waveforms_are_rejected(codec: MelRVQCodec, wav: np.ndarray, message: str):
    with pytest.raises(CodecError, match=message):
        codec.encode(wav)


def test_bad_codes_are_rejected(codec: MelRVQCodec):
    with pytest.raises(CodecError, match=r"\[0, 64\)"):
        codec.decode(np.full((5, 4), 64))
    with pytest.raises(CodecError, match="shape"):
        codec.decode(np.zeros((5, 3), dtype=np.int64))
    with pytest.raises(CodecError, match="integers"):
        codec.decode(np.zeros((5, 4), dtype=np.float32))


def test_training_needs_enough_frames(flite_wavs: list[np.ndarray]):
    with pytest.raises(CodecError, match="cannot fit 4096 centroids"):
        train_codec(flite_wavs[:1], {**TINY_CONFIG, "codebook_size": 4096})
    with pytest.raises(CodecError, match="unknown melrvq options"):
        train_codec(flite_wavs, {"num_codebook": 4})


def test_unknown_codec_type_is_named(tmp_path: Path):
    (tmp_path / "codec.yaml").write_text("type: wavtokenizer\n")
    with pytest.raises(CodecError, match="unknown codec type 'wavtokenizer'"):
        load_codec(tmp_path)
    with pytest.raises(CodecError, match="no codec config"):
        load_codec(tmp_path / "missing")


def test_missing_espnet_names_the_install_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # A None entry in sys.modules makes the import raise ImportError, as when not installed
    # (both names: the submodule may already be imported where ESPnet is installed).
    for module in ("espnet2", "espnet2.tasks.gan_codec"):
        monkeypatch.setitem(sys.modules, module, None)
    (tmp_path / "codec.yaml").write_text(
        "type: espnet\nmodel_config: config.yaml\ncheckpoint: model.pth\n"
    )
    with pytest.raises(CodecError, match="tools/install_espnet.sh"):
        load_codec(tmp_path)


TINY_DAC = {
    "codec": "dac",
    "model_conf": {},
    "codec_conf": {
        "sampling_rate": 16000,
        "generator_params": {
            "sample_rate": 16000,
            "hidden_dim": 16,
            "codebook_dim": 4,
            "encdec_n_filters": 2,
            "encdec_ratios": [8, 5, 4, 2],
            "encdec_lstm": 1,
            "quantizer_n_q": 4,
            "quantizer_bins": 64,
            "quantizer_target_bandwidth": [0.6, 1.2],
        },
    },
}


def test_espnet_dac_round_trip(tmp_path: Path, flite_wavs: list[np.ndarray]):
    # The one conditional skip of this file: ESPnet is an optional extra (tools/install_espnet.sh).
    gan_codec = pytest.importorskip("espnet2.tasks.gan_codec")
    import argparse

    import torch

    from opuslm.tokenizers.codec_espnet import ESPnetCodec

    torch.manual_seed(0)
    model = gan_codec.GANCodecTask.build_model(argparse.Namespace(**TINY_DAC))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(TINY_DAC))
    generator = {k: v for k, v in model.state_dict().items() if k.startswith("codec.generator.")}
    torch.save(generator, tmp_path / "model.pth")

    codec = ESPnetCodec(tmp_path / "config.yaml", tmp_path / "model.pth")
    assert (codec.sample_rate, codec.hop_length, codec.codebook_size) == (16000, 320, 64)
    assert codec.num_codebooks == 4  # 1.2 kbps at 50 Hz x 6 bits
    wav = flite_wavs[0][:16001]
    codes = codec.encode(wav)
    assert codes.shape == (51, 4) and codes.min() >= 0 and codes.max() < 64
    decoded = codec.decode(codes)
    assert decoded.shape == (51 * 320,) and np.all(np.isfinite(decoded))

    codec.save(tmp_path / "saved")
    loaded = load_codec(tmp_path / "saved")
    np.testing.assert_array_equal(loaded.encode(wav), codes)

    torch.save({"codec.generator.unrelated": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(CodecError, match="generator weights .* are missing"):
        ESPnetCodec(tmp_path / "config.yaml", tmp_path / "other.pth")
