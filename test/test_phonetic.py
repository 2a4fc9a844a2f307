"""Phonetic semantic features (opuslm/tokenizers/phonetic.py): the CTC recogniser learns, its
features do not depend on the batch, a tokenizer built on them round-trips, and the command."""

from __future__ import annotations

import logging

import jiwer
import numpy as np
import pytest
import soundfile
import torch
import yaml
from test_lm import single_thread  # noqa: F401  (autouse: one thread for tiny models)

from opuslm.bin import train_semantic
from opuslm.tokenizers.phonetic import (
    ENCODER_NAME,
    PhoneticTraining,
    greedy_transcripts,
    train_phonetic_features,
)
from opuslm.tokenizers.semantic import (
    CONFIG_NAME,
    SemanticError,
    SpectralConfig,
    SpectralFeatures,
    load_semantic_tokenizer,
    train_semantic_tokenizer,
)

SR, HOP = 16000, 320
TONES = {"a": 300.0, "b": 900.0, "c": 2100.0, " ": 0.0}  # a space is silence


def toy_corpus(count: int, seed: int) -> tuple[list[np.ndarray], list[str]]:
    """Utterances whose 'phones' are tones: each character sounds 3-6 frames at its pitch."""
    rng = np.random.default_rng(seed)
    wavs, texts = [], []
    for _ in range(count):
        text = "".join(rng.choice(list("abc "), size=int(rng.integers(3, 8)))).strip() or "a"
        pieces = []
        for char in text:
            n = int(rng.integers(3, 7)) * HOP
            t = np.arange(n) / SR
            pitch = TONES[char] * rng.uniform(0.95, 1.05)
            pieces.append(0.4 * np.sin(2 * np.pi * pitch * t) + 0.01 * rng.standard_normal(n))
        wavs.append(np.concatenate(pieces).astype(np.float32))
        texts.append(text.upper())  # lower-cased by the trainer
    return wavs, texts


def spectral() -> SpectralFeatures:
    return SpectralFeatures(SpectralConfig(hop_length=HOP))


@pytest.fixture(scope="module")
def trained():
    wavs, texts = toy_corpus(64, seed=0)
    with torch.random.fork_rng():  # the trainer seeds torch; later tests keep their state
        return train_phonetic_features(
            wavs, texts, spectral(), PhoneticTraining(hidden=24, steps=150, batch=16, lr=5e-3)
        )


def test_the_recogniser_learns_to_read_unseen_utterances(trained):
    features, losses = trained
    assert features.labels == [" ", "a", "b", "c"]
    assert np.mean(losses[-10:]) < 0.3 * np.mean(losses[:10])
    wavs, texts = toy_corpus(20, seed=1)
    hyps = greedy_transcripts(features, wavs)
    assert jiwer.cer([t.lower() for t in texts], hyps) < 0.25


def test_features_do_not_depend_on_the_batch(trained):
    features, _ = trained
    wavs, _ = toy_corpus(3, seed=2)
    together = features.extract_batch(wavs)
    for wav, feats in zip(wavs, together):
        assert feats.shape == (-(-len(wav) // HOP), features.dim) == (feats.shape[0], 48)
        np.testing.assert_allclose(features.extract_batch([wav])[0], feats, atol=1e-5)


def test_a_tokenizer_on_them_round_trips(trained, tmp_path):
    features, _ = trained
    wavs, _ = toy_corpus(16, seed=3)
    tokenizer = train_semantic_tokenizer(wavs, features, num_clusters=6, seed=0)
    units = tokenizer.encode_batch(wavs)
    tokenizer.save(tmp_path)
    config = yaml.safe_load((tmp_path / CONFIG_NAME).read_text())
    assert config["feature"]["type"] == "phonetic" and config["feature"]["hidden"] == 24
    loaded = load_semantic_tokenizer(tmp_path)
    for wav, expected in zip(wavs, units):
        np.testing.assert_array_equal(loaded.encode(wav), expected)
    (tmp_path / ENCODER_NAME).unlink()
    with pytest.raises(SemanticError, match=f"{ENCODER_NAME}: the phonetic encoder's weights"):
        load_semantic_tokenizer(tmp_path)


def test_mismatched_transcripts_are_refused():
    wavs, texts = toy_corpus(2, seed=4)
    with pytest.raises(SemanticError, match="need as many transcripts as utterances"):
        train_phonetic_features(wavs, texts[:1], spectral())


def test_the_command_trains_on_the_data_directory_text(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    wavs, texts = toy_corpus(40, seed=5)
    data = tmp_path / "data"
    (data / "wav").mkdir(parents=True)
    scp, text = [], []
    for i, (wav, sentence) in enumerate(zip(wavs, texts)):
        path = data / "wav" / f"u{i:02d}.wav"
        soundfile.write(path, wav, SR)
        scp.append(f"u{i:02d} {path}\n")
        text.append(f"u{i:02d} {sentence}\n")
    (data / "wav.scp").write_text("".join(scp))
    argv = ["--data_dir", str(data), "--output_dir", str(tmp_path / "semantic")]
    argv += ["--feature", "phonetic", "--num_clusters", "4", "--hop_length", str(HOP)]
    argv += ["--phonetic_steps", "5", "--phonetic_hidden", "8", "--phonetic_utts", "30"]
    assert train_semantic.main(argv) == 1  # no transcripts yet
    assert f"{data / 'text'}" in caplog.text
    (data / "text").write_text("".join(text))
    assert train_semantic.main(argv) == 0
    assert "30 utterances, 5 steps" in caplog.text
    assert "10 utterances not trained on: greedy CER" in caplog.text
    tokenizer = load_semantic_tokenizer(tmp_path / "semantic")
    assert (tokenizer.num_clusters, tokenizer.frame_rate, tokenizer.features.dim) == (4, 50.0, 16)
