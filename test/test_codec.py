"""Acoustic tokenizer (codec): MelRVQCodec behaviour, codec directories, the ESPnet backend."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

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
def flite_wavs(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    directory = tmp_path_factory.mktemp("flite")
    wavs = []
    for i, (voice, text) in enumerate(SENTENCES):
        path = directory / f"utt{i}.wav"
        subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True)
        wav, sample_rate = sf.read(path, dtype="float32")
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
    wav = flite_wavs[0]
    codes = codec.encode(wav)
    reference = codec.log_mel(wav)

    def distance(resynthesized: np.ndarray) -> float:
        return float(np.abs(codec.log_mel(resynthesized) - reference).mean())

    random_codes = np.random.default_rng(0).integers(0, 64, size=codes.shape)
    ours, random = distance(codec.decode(codes)), distance(codec.decode(random_codes))
    assert ours < 0.5 * random, (ours, random)


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
    # A None entry in sys.modules makes `import espnet2` raise ImportError, as when not installed.
    monkeypatch.setitem(sys.modules, "espnet2", None)
    (tmp_path / "codec.yaml").write_text(
        "type: espnet\nmodel_config: config.yaml\ncheckpoint: model.pth\n"
    )
    with pytest.raises(CodecError, match="tools/install_espnet.sh"):
        load_codec(tmp_path)
