"""Semantic tokenizer: frame-level speech features, then k-means -> one unit per frame.

Feature backends (all give T = ceil(N / hop_length) frames, frame t centred on sample t * hop,
the same grid as the codec with the same hop, so both streams line up row by row):

    SpectralFeatures   MFCC or log-mel (+ deltas) with librosa's filterbank / DCT definitions,
                       STFT computed batched with torch; CPU-fast, the mini recipes' default
    HFSSLFeatures      one hidden layer of a HuBERT / WavLM / wav2vec2 model from a local
                       Hugging Face directory
    ESPnetSSLFeatures  XEUS / HuBERT checkpoints through the optional `espnet` extra

A saved tokenizer directory holds `semantic.yaml` (feature config, number of clusters) and
`centroids.npy` (float32 [K, D], loaded with allow_pickle=False); HF models are copied in as
safetensors so the directory is self-contained.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Protocol

import numpy as np
import scipy.fft
import torch
import yaml

from opuslm.fileio import atomic_path, write_text_atomic
from opuslm.tokenizers.acoustic import num_frames

logger = logging.getLogger(__name__)

CONFIG_NAME = "semantic.yaml"
CENTROIDS_NAME = "centroids.npy"
HF_MODEL_SUBDIR = "ssl_model"
POWER_FLOOR = 1e-10  # librosa's power_to_db amin: digital silence must not give -inf


class SemanticError(ValueError):
    """Bad semantic tokenizer config, directory or input."""


class FeatureExtractor(Protocol):
    """Waveform float32 [N] at sample_rate -> features float32 [ceil(N / hop_length), dim]."""

    sample_rate: int
    hop_length: int
    dim: int

    def extract_batch(self, wavs: list[np.ndarray]) -> list[np.ndarray]: ...

    def save(self, directory: Path) -> dict:
        """Write any files the features need into `directory`; return their config."""
        ...


def fft_size(win_length: int) -> int:
    """The FFT size for a window: the next power of two, at least 512."""
    return max(512, 1 << (win_length - 1).bit_length())


@dataclass
class SpectralConfig:
    """MFCC / log-mel analysis; defaults: 25 ms window, 20 ms hop (50 Hz) at 16 kHz."""

    kind: str = "mfcc"  # "mfcc" | "logmel"
    sample_rate: int = 16000
    hop_length: int = 320
    win_length: int = 400
    n_fft: int = 512
    n_mels: int = 80
    n_mfcc: int = 13
    fmin: float = 0.0
    fmax: float | None = None
    deltas: int = 2  # append delta features up to this order (0, 1 or 2)
    delta_width: int = 9
    cmvn: bool = True  # per-utterance mean / variance normalisation of each dimension
    context: int = 0  # stack this many neighbouring frames on each side

    def __post_init__(self) -> None:
        if self.kind not in ("mfcc", "logmel"):
            raise SemanticError(f"spectral feature kind must be mfcc or logmel, got {self.kind!r}")
        if not 0 <= self.deltas <= 2:
            raise SemanticError(f"deltas must be 0, 1 or 2, got {self.deltas}")
        if self.win_length > self.n_fft:
            raise SemanticError(f"win_length {self.win_length} > n_fft {self.n_fft}")
        if self.context < 0 or self.hop_length <= 0:
            raise SemanticError("context must be >= 0 and hop_length > 0")


class SpectralFeatures:
    """MFCC / log-mel (dB) + deltas, batched: one padded torch.stft for a list of utterances.

    Matches `librosa.feature.mfcc(..., center=True, pad_mode="constant", top_db=None)` (and
    `power_to_db(melspectrogram(...), top_db=None)` for log-mel) frame for frame; top_db is off
    because it clamps relative to each utterance's maximum.
    """

    def __init__(self, config: SpectralConfig | None = None) -> None:
        self.config = config or SpectralConfig()
        c = self.config
        self.sample_rate, self.hop_length = c.sample_rate, c.hop_length
        import librosa  # here, not at the top: see _finish

        mel = librosa.filters.mel(
            sr=c.sample_rate, n_fft=c.n_fft, n_mels=c.n_mels, fmin=c.fmin, fmax=c.fmax
        )
        if c.kind == "mfcc":
            # The orthonormal DCT-II as a matrix, as librosa.feature.mfcc applies it.
            dct = scipy.fft.dct(np.eye(c.n_mels), type=2, norm="ortho", axis=0)[: c.n_mfcc]
            self.dct: torch.Tensor | None = torch.from_numpy(dct.astype(np.float32))
        else:
            self.dct = None
        self.mel = torch.from_numpy(mel)
        self.window = torch.hann_window(c.win_length)  # periodic, as scipy's get_window("hann")
        base = c.n_mfcc if c.kind == "mfcc" else c.n_mels
        self.dim = base * (1 + c.deltas) * (1 + 2 * c.context)

    def base_features(self, wavs: list[np.ndarray]) -> list[np.ndarray]:
        """MFCC / log-mel before deltas and normalisation: float32 [T_i, n_mfcc or n_mels]."""
        if not wavs:
            return []
        c = self.config
        lengths = [len(w) for w in wavs]
        batch = torch.zeros(len(wavs), max(lengths))
        for i, wav in enumerate(wavs):
            batch[i, : len(wav)] = torch.from_numpy(np.asarray(wav, dtype=np.float32))
        # Zero padding after an utterance equals stft's own constant centre padding, so every
        # frame below T_i is the same as for the utterance alone.
        spec = torch.stft(
            batch,
            n_fft=c.n_fft,
            hop_length=c.hop_length,
            win_length=c.win_length,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        mel_power = self.mel @ spec.abs().square()  # [B, n_mels, frames]
        feats = 10.0 * torch.log10(mel_power.clamp_min(POWER_FLOOR))
        if self.dct is not None:
            feats = self.dct @ feats
        feats = feats.transpose(1, 2).numpy()  # [B, frames, D]
        return [feats[i, : num_frames(n, c.hop_length)] for i, n in enumerate(lengths)]

    def extract_batch(self, wavs: list[np.ndarray]) -> list[np.ndarray]:
        return [self._finish(f) for f in self.base_features(wavs)]

    def _finish(self, feats: np.ndarray) -> np.ndarray:
        """[T, D0] -> [T, dim]: deltas, per-utterance normalisation, frame stacking."""
        # librosa is imported where features are computed, so that what only reads token dumps
        # (training, decode_asr_dumps) runs where librosa is missing and skips its 2 s import.
        import librosa

        c = self.config
        # mode="nearest" works for any T; librosa's default "interp" needs T >= delta_width.
        parts = [feats] + [
            librosa.feature.delta(feats, width=c.delta_width, order=k, axis=0, mode="nearest")
            for k in range(1, c.deltas + 1)
        ]
        feats = np.concatenate(parts, axis=1)
        if c.cmvn:
            feats = (feats - feats.mean(axis=0)) / (feats.std(axis=0) + 1e-5)
        if c.context:
            padded = np.pad(feats, ((c.context, c.context), (0, 0)), mode="edge")
            feats = np.concatenate(
                [padded[i : i + len(feats)] for i in range(2 * c.context + 1)], axis=1
            )
        return feats.astype(np.float32, copy=False)

    def save(self, directory: Path) -> dict:
        return {"type": "spectral", **asdict(self.config)}


class HFSSLFeatures:
    """Hidden layer `layer` (0 = the CNN encoder's projection) of a local HF SSL model.

    Each utterance runs alone: models with group-norm feature encoders (HuBERT / wav2vec2 base)
    give different features for padded inputs. The input is padded so that frame t is centred
    on sample t * hop, then the output is cut to ceil(N / hop) frames.
    """

    def __init__(self, model_dir: str | os.PathLike, layer: int, device: str = "cpu") -> None:
        from transformers import AutoFeatureExtractor, AutoModel

        try:
            self.model = AutoModel.from_pretrained(str(model_dir), local_files_only=True)
        except (OSError, ValueError) as e:
            raise SemanticError(f"{model_dir}: cannot load a Hugging Face SSL model: {e}") from None
        self.model.eval().to(device)
        self.device = device
        config = self.model.config
        if not hasattr(config, "conv_stride"):
            raise SemanticError(
                f"{model_dir}: {config.model_type} is not a wav2vec2-style SSL model "
                f"(HuBERT / WavLM / wav2vec2)"
            )
        if not 0 <= layer <= config.num_hidden_layers:
            raise SemanticError(
                f"{model_dir}: layer {layer} is outside 0..{config.num_hidden_layers}"
            )
        self.layer = layer
        self.kernels, self.strides = list(config.conv_kernel), list(config.conv_stride)
        self.hop_length = math.prod(self.strides)
        self.receptive_field = 1 + sum(
            (k - 1) * math.prod(self.strides[:i]) for i, k in enumerate(self.kernels)
        )
        try:
            self.extractor = AutoFeatureExtractor.from_pretrained(
                str(model_dir), local_files_only=True
            )
        except (OSError, ValueError):
            self.extractor = None  # no preprocessor_config.json: 16 kHz, no normalisation
        self.sample_rate = int(getattr(self.extractor, "sampling_rate", 16000))
        self.normalize = bool(getattr(self.extractor, "do_normalize", False))
        self.dim = int(config.hidden_size)

    def extract(self, wav: np.ndarray) -> np.ndarray:
        """float32 [N] -> [ceil(N / hop), hidden_size]."""
        target = num_frames(len(wav), self.hop_length)
        left = self.receptive_field // 2
        right = max(0, (target - 1) * self.hop_length + self.receptive_field - left - len(wav))
        x = np.pad(np.asarray(wav, dtype=np.float32), (left, right))
        if self.normalize:
            x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
        with torch.inference_mode():
            inputs = torch.from_numpy(x)[None].to(self.device)
            out = self.model(inputs, output_hidden_states=True)
        feats = out.hidden_states[self.layer][0, :target].float().cpu().numpy()
        if len(feats) != target:
            raise SemanticError(f"SSL model gave {len(feats)} frames, expected {target}")
        return feats

    def extract_batch(self, wavs: list[np.ndarray]) -> list[np.ndarray]:
        return [self.extract(w) for w in wavs]

    def save(self, directory: Path) -> dict:
        self.model.save_pretrained(str(directory / HF_MODEL_SUBDIR))
        if self.extractor is not None:  # keeps sampling_rate / do_normalize with the copy
            self.extractor.save_pretrained(str(directory / HF_MODEL_SUBDIR))
        return {"type": "hf", "model_dir": HF_MODEL_SUBDIR, "layer": self.layer}


class ESPnetSSLFeatures:
    """Hidden layer `layer` of an ESPnet SSL model (e.g. XEUS layer 18); needs the espnet extra."""

    def __init__(
        self, config_file: str | os.PathLike, model_file: str | os.PathLike, layer: int
    ) -> None:
        try:
            from espnet2.tasks.ssl import SSLTask
        except ImportError:
            raise SemanticError(
                "ESPnet SSL features need the optional espnet extra: run tools/install_espnet.sh "
                "(or pip install 'opuslm[espnet]')"
            ) from None
        self.model, _ = SSLTask.build_model_from_file(str(config_file), str(model_file), "cpu")
        self.model.eval()
        self.config_file, self.model_file, self.layer = str(config_file), str(model_file), layer
        self.sample_rate, self.hop_length = 16000, 320
        self.dim = int(self.model.encoder.output_size())

    def extract_batch(self, wavs: list[np.ndarray]) -> list[np.ndarray]:
        results = []
        for wav in wavs:
            target = num_frames(len(wav), self.hop_length)
            with torch.inference_mode():
                speech = torch.from_numpy(np.asarray(wav, dtype=np.float32))[None]
                layers = self.model.encode(
                    speech, torch.tensor([len(wav)]), use_mask=False, use_final_output=False
                )[0]
            feats = layers[self.layer][0].float().numpy()
            # The conv front end drops up to one frame at the end; repeat the last one.
            if not 0 <= target - len(feats) <= 2:
                raise SemanticError(f"ESPnet SSL model gave {len(feats)} frames, expected {target}")
            results.append(np.pad(feats, ((0, target - len(feats)), (0, 0)), mode="edge"))
        return results

    def save(self, directory: Path) -> dict:
        return {
            "type": "espnet",
            "config_file": self.config_file,
            "model_file": self.model_file,
            "layer": self.layer,
        }


def build_features(config: dict, directory: Path | None = None) -> FeatureExtractor:
    """Feature extractor from a saved `feature` config; relative paths are under `directory`."""
    config = dict(config)
    kind = config.pop("type", None)
    if kind == "spectral":
        known = {f.name for f in fields(SpectralConfig)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise SemanticError(f"unknown spectral feature options {unknown}")
        return SpectralFeatures(SpectralConfig(**config))
    if kind == "hf":
        model_dir = Path(config["model_dir"])
        if directory is not None and not model_dir.is_absolute():
            model_dir = directory / model_dir
        return HFSSLFeatures(model_dir, int(config["layer"]))
    if kind == "espnet":
        return ESPnetSSLFeatures(config["config_file"], config["model_file"], int(config["layer"]))
    if kind == "phonetic":
        from opuslm.tokenizers.phonetic import PhoneticFeatures  # it builds on this module

        return PhoneticFeatures.load(config, directory)
    raise SemanticError(f"unknown feature type {kind!r}; known: spectral, hf, espnet, phonetic")


class SemanticTokenizer:
    """Features + k-means centroids float32 [K, D] -> units int64 [T] in [0, K)."""

    def __init__(self, features: FeatureExtractor, centroids: np.ndarray) -> None:
        centroids = np.asarray(centroids, dtype=np.float32)
        if centroids.ndim != 2 or centroids.shape[1] != features.dim:
            raise SemanticError(
                f"centroids of shape {list(centroids.shape)} do not match feature dim "
                f"{features.dim}"
            )
        self.features = features
        self.centroids = centroids
        self._centroid_norms = np.square(centroids).sum(axis=1)

    @property
    def num_clusters(self) -> int:
        return len(self.centroids)

    @property
    def sample_rate(self) -> int:
        return self.features.sample_rate

    @property
    def hop_length(self) -> int:
        return self.features.hop_length

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    def assign(self, feats: np.ndarray) -> np.ndarray:
        """Nearest centroid of each row: [T, D] -> int64 [T]."""
        # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2; ||x||^2 does not change the argmin.
        distances = self._centroid_norms[None, :] - 2.0 * (feats @ self.centroids.T)
        return distances.argmin(axis=1).astype(np.int64)

    def encode_batch(self, wavs: list[np.ndarray]) -> list[np.ndarray]:
        """float32 waveforms [N_i] -> units int64 [ceil(N_i / hop)]."""
        feats = self.features.extract_batch(wavs)
        if not feats:
            return []
        # One distance matmul for the whole batch instead of one per utterance.
        units = self.assign(np.concatenate(feats))
        return np.split(units, np.cumsum([len(f) for f in feats])[:-1])

    def encode(self, wav: np.ndarray) -> np.ndarray:
        return self.encode_batch([wav])[0]

    def save(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {
            "num_clusters": self.num_clusters,
            "feature": self.features.save(directory),
        }
        with atomic_path(directory / CENTROIDS_NAME) as tmp, open(tmp, "wb") as f:
            np.save(f, self.centroids, allow_pickle=False)
        write_text_atomic(directory / CONFIG_NAME, yaml.safe_dump(config, sort_keys=False))


def load_semantic_tokenizer(directory: str | os.PathLike) -> SemanticTokenizer:
    directory = Path(directory)
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise SemanticError(f"{config_path}: not found (is {directory} a semantic tokenizer?)")
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    if not isinstance(config, dict) or "feature" not in config:
        raise SemanticError(f"{config_path}: expected a mapping with a 'feature' key")
    centroids = np.load(directory / CENTROIDS_NAME, allow_pickle=False)
    return SemanticTokenizer(build_features(config["feature"], directory), centroids)


def sample_frames(
    wavs: Iterable[np.ndarray], features: FeatureExtractor, max_frames: int, seed: int = 0
) -> np.ndarray:
    """Features of the utterances, read until `max_frames` rows, subsampled to exactly that.

    Reading stops early, so pass utterances in a shuffled order (train_semantic does) to cover
    speakers evenly. Returns float32 [min(total, max_frames), D].
    """
    collected: list[np.ndarray] = []
    total = 0
    for wav in wavs:
        feats = features.extract_batch([wav])[0]
        collected.append(feats)
        total += len(feats)
        if total >= max_frames:
            break
    if not collected:
        raise SemanticError("no audio to train the semantic tokenizer on")
    frames = np.concatenate(collected)
    if len(frames) > max_frames:
        rows = np.random.default_rng(seed).choice(len(frames), max_frames, replace=False)
        frames = frames[np.sort(rows)]
    return frames


def train_kmeans(frames: np.ndarray, num_clusters: int, seed: int = 0) -> np.ndarray:
    """MiniBatchKMeans centroids float32 [K, D] of feature rows [N, D] (seeded)."""
    if len(frames) < num_clusters:
        raise SemanticError(
            f"{len(frames)} feature frames are too few for {num_clusters} clusters; "
            f"use more audio or fewer clusters"
        )
    # Imported here: sklearn costs seconds of start-up that the dump jobs, which only assign
    # units, would pay once per job.
    from sklearn.cluster import MiniBatchKMeans

    kmeans = MiniBatchKMeans(
        n_clusters=num_clusters,
        batch_size=min(len(frames), max(4096, 4 * num_clusters)),
        n_init=3,
        max_iter=100,
        random_state=seed,
    )
    kmeans.fit(frames)
    logger.info(
        "k-means: %d clusters on %d frames, inertia %.4g",
        num_clusters,
        len(frames),
        kmeans.inertia_,
    )
    return kmeans.cluster_centers_.astype(np.float32)


def train_semantic_tokenizer(
    wavs: Iterable[np.ndarray],
    features: FeatureExtractor,
    num_clusters: int,
    max_frames: int = 200_000,
    seed: int = 0,
) -> SemanticTokenizer:
    """Fit k-means with `num_clusters` on at most `max_frames` feature frames of `wavs`."""
    frames = sample_frames(wavs, features, max_frames, seed)
    return SemanticTokenizer(features, train_kmeans(frames, num_clusters, seed))
