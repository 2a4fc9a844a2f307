"""Semantic tokenizer: frame grid, librosa-equal features, k-means save/load, SSL backends."""

from __future__ import annotations

import sys

import librosa
import numpy as np
import pytest
import torch
import yaml

from opuslm.tokenizers.semantic import (
    CENTROIDS_NAME,
    CONFIG_NAME,
    ESPnetSSLFeatures,
    HFSSLFeatures,
    SemanticError,
    SpectralConfig,
    SpectralFeatures,
    load_semantic_tokenizer,
    sample_frames,
    train_semantic_tokenizer,
)

SR = 16000


def chirps(count: int, seed: int = 0) -> list[np.ndarray]:
    """Speech-like test signals: gliding tones in noise, 0.3-1.2 s long."""
    rng = np.random.default_rng(seed)
    wavs = []
    for _ in range(count):
        n = int(rng.integers(int(0.3 * SR), int(1.2 * SR)))
        t = np.arange(n) / SR
        f0 = rng.uniform(100, 300)
        phase = 2 * np.pi * (f0 * t + rng.uniform(50, 400) * t**2)
        wav = 0.3 * np.sin(phase) + 0.3 * np.sin(3 * phase) + 0.02 * rng.standard_normal(n)
        wavs.append(wav.astype(np.float32))
    return wavs


def librosa_log_mel(wav: np.ndarray, c: SpectralConfig) -> np.ndarray:
    mel = librosa.feature.melspectrogram(
        y=wav,
        sr=c.sample_rate,
        n_fft=c.n_fft,
        hop_length=c.hop_length,
        win_length=c.win_length,
        n_mels=c.n_mels,
        pad_mode="constant",
    )
    return librosa.power_to_db(mel, top_db=None)


@pytest.mark.parametrize("num_samples", [1, 319, 320, 321, 16000, 16001])
@pytest.mark.parametrize("kind", ["mfcc", "logmel"])
def test_spectral_frame_count_is_ceil_n_over_hop(num_samples, kind):
    features = SpectralFeatures(SpectralConfig(kind=kind))
    wav = np.random.default_rng(0).uniform(-0.5, 0.5, num_samples).astype(np.float32)
    (feats,) = features.extract_batch([wav])
    assert feats.shape == (-(-num_samples // 320), features.dim)
    assert feats.dtype == np.float32 and np.isfinite(feats).all()
    assert features.dim == (13 if kind == "mfcc" else 80) * 3


def test_spectral_features_equal_librosa_definitions():
    wav = chirps(1)[0]
    mfcc = SpectralFeatures(SpectralConfig(kind="mfcc"))
    logmel = SpectralFeatures(SpectralConfig(kind="logmel"))
    reference_db = librosa_log_mel(wav, mfcc.config)
    reference_mfcc = librosa.feature.mfcc(S=reference_db, n_mfcc=13).T
    (ours,) = mfcc.base_features([wav])
    np.testing.assert_allclose(ours, reference_mfcc[: len(ours)], atol=5e-3, rtol=1e-4)
    (ours_db,) = logmel.base_features([wav])
    np.testing.assert_allclose(ours_db, reference_db.T[: len(ours_db)], atol=5e-3, rtol=1e-4)


def test_batching_does_not_change_features():
    wavs = chirps(3)
    features = SpectralFeatures()
    batched = features.extract_batch(wavs)
    for wav, feats in zip(wavs, batched):
        np.testing.assert_allclose(feats, features.extract_batch([wav])[0], atol=1e-4)


def test_cmvn_and_context_stacking():
    wav = chirps(1)[0]
    plain = SpectralFeatures(SpectralConfig(deltas=0, cmvn=True)).extract_batch([wav])[0]
    np.testing.assert_allclose(plain.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(plain.std(axis=0), 1, atol=1e-3)
    stacked = SpectralFeatures(SpectralConfig(deltas=0, context=1)).extract_batch([wav])[0]
    assert stacked.shape == (len(plain), 3 * 13)
    np.testing.assert_array_equal(stacked[5], np.concatenate(plain[4:7]))
    np.testing.assert_array_equal(stacked[0, :13], plain[0])  # edge frame repeated


def test_bad_spectral_config():
    with pytest.raises(SemanticError, match="mfcc or logmel"):
        SpectralConfig(kind="mel")
    with pytest.raises(SemanticError, match="deltas"):
        SpectralConfig(deltas=3)


def test_kmeans_train_save_load_gives_identical_units(tmp_path):
    wavs = chirps(8)
    tokenizer = train_semantic_tokenizer(wavs, SpectralFeatures(), num_clusters=16, seed=3)
    units = tokenizer.encode_batch(wavs)
    assert all(u.shape == (-(-len(w) // 320),) and u.dtype == np.int64 for u, w in zip(units, wavs))
    assert len(np.unique(np.concatenate(units))) > 8  # the clusters are actually used
    tokenizer.save(tmp_path)
    config = yaml.safe_load((tmp_path / CONFIG_NAME).read_text())
    assert config["num_clusters"] == 16 and config["feature"]["type"] == "spectral"
    assert np.load(tmp_path / CENTROIDS_NAME, allow_pickle=False).shape == (16, 39)
    loaded = load_semantic_tokenizer(tmp_path)
    assert (loaded.num_clusters, loaded.frame_rate) == (16, 50.0)
    for wav, expected in zip(wavs, units):
        np.testing.assert_array_equal(loaded.encode(wav), expected)
    # Same seed, same data: the same clustering.
    again = train_semantic_tokenizer(wavs, SpectralFeatures(), num_clusters=16, seed=3)
    np.testing.assert_array_equal(again.centroids, tokenizer.centroids)


def test_frame_sampling_is_capped_and_seeded():
    wavs = chirps(6)
    features = SpectralFeatures()
    frames = sample_frames(wavs, features, max_frames=100, seed=1)
    assert frames.shape == (100, features.dim)
    np.testing.assert_array_equal(frames, sample_frames(wavs, features, max_frames=100, seed=1))
    with pytest.raises(SemanticError, match="too few for 5000 clusters"):
        train_semantic_tokenizer(wavs[:1], features, num_clusters=5000)
    with pytest.raises(SemanticError, match="no audio"):
        sample_frames([], features, max_frames=100)


@pytest.mark.parametrize("model_type", ["hubert", "wavlm"])
def test_hf_ssl_backend_with_tiny_random_model(tmp_path, model_type):
    from transformers import AutoConfig, AutoModel, Wav2Vec2FeatureExtractor

    config = AutoConfig.for_model(
        model_type,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(tmp_path / "ssl")
    normalize = model_type == "wavlm"  # as WavLM-large's preprocessor config asks
    Wav2Vec2FeatureExtractor(do_normalize=normalize).save_pretrained(tmp_path / "ssl")
    features = HFSSLFeatures(tmp_path / "ssl", layer=2)
    assert (features.hop_length, features.sample_rate, features.dim) == (320, SR, 32)
    assert features.normalize == normalize
    wavs = chirps(4)
    for n in (400, 3200, 3201):
        assert features.extract(wavs[0][:n]).shape == (-(-n // 320), 32)
    tokenizer = train_semantic_tokenizer(wavs, features, num_clusters=4)
    tokenizer.save(tmp_path / "sem")
    loaded = load_semantic_tokenizer(tmp_path / "sem")  # self-contained: the model is copied
    assert isinstance(loaded.features, HFSSLFeatures) and loaded.features.layer == 2
    assert loaded.features.normalize == normalize
    np.testing.assert_array_equal(loaded.encode(wavs[1]), tokenizer.encode(wavs[1]))
    with pytest.raises(SemanticError, match="layer 3 is outside 0..2"):
        HFSSLFeatures(tmp_path / "ssl", layer=3)


def test_espnet_backend_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "espnet2", None)  # as if espnet were not installed
    monkeypatch.setitem(sys.modules, "espnet2.tasks.ssl", None)
    with pytest.raises(SemanticError, match="tools/install_espnet.sh"):
        ESPnetSSLFeatures("config.yaml", "model.pth", layer=18)
