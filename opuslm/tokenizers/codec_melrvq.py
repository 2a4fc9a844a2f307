"""`MelRVQCodec`: residual vector quantisation of log-mel frames, decoded with Griffin-Lim.

A CPU-trainable stand-in for a neural codec. Encoding: log-mel spectrogram (one frame per hop),
normalised per mel bin, then quantised by `num_codebooks` k-means codebooks in sequence, each
coding the residual the previous ones left. Decoding: sum of the chosen centroids, back to a
mel magnitude, inverted to a linear spectrogram (librosa's non-negative least squares) and
given a phase by Griffin-Lim. Griffin-Lim may run at a finer hop than the codec frame rate
(`synthesis_hop`, magnitudes interpolated in time). The default is the usual 75% window overlap
(n_fft / 4), capped at the codec hop: on flite speech (benchmarks/bench_codec.py) a hop of 80
instead of 320 did not lower the judge WER and cost 1.5x the decoding time, while a codec hop of
640 alone would leave Griffin-Lim too little overlap.

Frame t is centred on sample t * hop_length and T = ceil(N / hop_length), the same frame grid
as the semantic tokenizer with the same hop.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import librosa
import numpy as np
from safetensors.numpy import load_file, save_file
from sklearn.cluster import MiniBatchKMeans

from opuslm.fileio import atomic_path
from opuslm.tokenizers.acoustic import (
    CodecError,
    check_codes,
    check_waveform,
    num_frames,
    read_codec_config,
    write_codec_config,
)

WEIGHTS_NAME = "codebooks.safetensors"
LOG_FLOOR = 1e-8  # power-mel floor (-80 dB): digital silence must not give -inf


@dataclass
class MelRVQConfig:
    """Analysis, quantisation and synthesis settings; saved as codec.yaml."""

    sample_rate: int = 16000
    hop_length: int = 320
    n_fft: int = 1024
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float | None = None  # None: sample_rate / 2
    num_codebooks: int = 8
    codebook_size: int = 1024
    # "global": per-bin mean/std over the training data; "utterance": each utterance's own
    # per-bin mean is removed before quantisation (decoding puts the global mean back).
    normalization: str = "global"
    synthesis_hop: int | None = None  # None: min(hop_length, n_fft // 4)
    griffin_lim_iters: int = 32
    # Training: at most this many frames (sampled at random) feed k-means.
    max_frames: int = 200_000
    kmeans_batch_size: int = 4096
    kmeans_max_iter: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        if self.normalization not in ("global", "utterance"):
            raise CodecError(
                f"normalization must be 'global' or 'utterance', got {self.normalization!r}"
            )
        for name in ("sample_rate", "hop_length", "n_fft", "n_mels", "num_codebooks"):
            if getattr(self, name) <= 0:
                raise CodecError(f"{name} must be positive, got {getattr(self, name)}")
        if self.synthesis_hop is None:
            self.synthesis_hop = min(self.hop_length, self.n_fft // 4)
        if not 0 < self.synthesis_hop <= self.hop_length:
            raise CodecError(
                f"synthesis_hop must be in (0, hop_length={self.hop_length}], "
                f"got {self.synthesis_hop}"
            )
        if self.codebook_size < 2:
            raise CodecError(f"codebook_size must be >= 2, got {self.codebook_size}")

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> MelRVQConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise CodecError(f"{source}: unknown melrvq options {unknown}; known: {sorted(known)}")
        return cls(**d)


@functools.lru_cache(maxsize=8)
def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None
) -> np.ndarray:
    """librosa's Slaney mel filterbank [n_mels, n_fft // 2 + 1] (cached: one per setting)."""
    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)


def log_mel_spectrogram(wav: np.ndarray, config: MelRVQConfig) -> np.ndarray:
    """float32 [N] -> log power mel [T, n_mels], T = ceil(N / hop_length).

    Frame t is centred on sample t * hop_length.
    """
    wav = check_waveform(wav)
    frames = num_frames(len(wav), config.hop_length)
    # Zero-pad to at least a whole number of hops (and one window); the centred STFT pads with
    # zeros anyway, so the first T frames are those of the signal itself.
    padded = np.pad(wav, (0, max(frames * config.hop_length, config.n_fft) - len(wav)))
    spectrum = librosa.stft(padded, n_fft=config.n_fft, hop_length=config.hop_length, center=True)
    basis = mel_filterbank(
        config.sample_rate, config.n_fft, config.n_mels, config.fmin, config.fmax
    )
    mel = basis @ (np.abs(spectrum[:, :frames]) ** 2)
    return np.log(np.maximum(mel, LOG_FLOOR)).T.astype(np.float32)


class MelRVQCodec:
    """Log-mel residual VQ codec (see the module docstring)."""

    codec_type = "melrvq"

    def __init__(
        self, config: MelRVQConfig, codebooks: np.ndarray, mean: np.ndarray, std: np.ndarray
    ) -> None:
        """codebooks [n_q, C, n_mels]; mean, std [n_mels] of the log-mel over training data."""
        expected = (config.num_codebooks, config.codebook_size, config.n_mels)
        if codebooks.shape != expected or {mean.shape, std.shape} != {(config.n_mels,)}:
            raise CodecError(
                f"codebooks {list(codebooks.shape)} / mean {list(mean.shape)} do not match the "
                f"config (expected codebooks {list(expected)}, mean [{config.n_mels}])"
            )
        self.config = config
        self.sample_rate = config.sample_rate
        self.hop_length = config.hop_length
        self.num_codebooks = config.num_codebooks
        self.codebook_size = config.codebook_size
        self.codebooks = codebooks.astype(np.float32)
        self.mean = mean.astype(np.float32)
        self.std = std.astype(np.float32)
        # ||c||^2 per centroid, for nearest-centroid search as a single matrix product.
        self._sq_norms = np.einsum("qcd,qcd->qc", self.codebooks, self.codebooks)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    # ------------------------------------------------------------------ analysis
    def log_mel(self, wav: np.ndarray) -> np.ndarray:
        """float32 [N] -> log power mel [T, n_mels], T = ceil(N / hop)."""
        return log_mel_spectrogram(wav, self.config)

    def _normalise(self, log_mel: np.ndarray) -> np.ndarray:
        if self.config.normalization == "utterance":
            log_mel = log_mel - log_mel.mean(axis=0) + self.mean
        return (log_mel - self.mean) / self.std

    # ------------------------------------------------------------------ quantisation
    def _quantise(self, features: np.ndarray) -> np.ndarray:
        """Normalised features [T, n_mels] -> codes [T, n_q] (int64)."""
        residual = features.copy()
        codes = np.empty((len(features), self.num_codebooks), dtype=np.int64)
        for q, codebook in enumerate(self.codebooks):
            distances = self._sq_norms[q][None, :] - 2.0 * residual @ codebook.T
            codes[:, q] = distances.argmin(axis=1)
            residual -= codebook[codes[:, q]]
        return codes

    def _dequantise(self, codes: np.ndarray) -> np.ndarray:
        """codes [T, n_q] -> normalised features [T, n_mels]."""
        return sum(self.codebooks[q][codes[:, q]] for q in range(self.num_codebooks))

    def encode(self, wav: np.ndarray) -> np.ndarray:
        """float32 [N] -> int32 codes [T, n_q] in [0, C), T = ceil(N / hop_length)."""
        return self._quantise(self._normalise(self.log_mel(wav))).astype(np.int32)

    def encode_batch(self, wavs: list[np.ndarray]) -> list[np.ndarray]:
        """Encode several waveforms with one nearest-centroid search over all their frames."""
        features = [self._normalise(self.log_mel(wav)) for wav in wavs]
        codes = self._quantise(np.concatenate(features)).astype(np.int32)
        return np.split(codes, np.cumsum([len(f) for f in features])[:-1])

    # ------------------------------------------------------------------ synthesis
    def decode(self, codes: np.ndarray) -> np.ndarray:
        """int [T, n_q] -> float32 [T * hop_length]."""
        codes = check_codes(codes, self.num_codebooks, self.codebook_size)
        log_mel = self._dequantise(codes) * self.std + self.mean
        return self.synthesize(log_mel)

    def synthesize(self, log_mel: np.ndarray) -> np.ndarray:
        """Log power mel [T, n_mels] at the codec frame rate -> float32 [T * hop_length]."""
        cfg = self.config
        length = len(log_mel) * self.hop_length
        magnitude = librosa.feature.inverse.mel_to_stft(
            np.exp(log_mel.T),
            sr=cfg.sample_rate,
            n_fft=cfg.n_fft,
            power=2.0,
            fmin=cfg.fmin,
            fmax=cfg.fmax,
        )
        # Frame t is centred on sample t * hop; resample the log magnitude onto the synthesis
        # grid (after the costly mel inversion), holding the last frame to the end.
        positions = np.arange(length // cfg.synthesis_hop + 1) * cfg.synthesis_hop / cfg.hop_length
        left = np.minimum(positions.astype(np.int64), len(log_mel) - 1)
        right = np.minimum(left + 1, len(log_mel) - 1)
        weight = np.clip(positions - left, 0.0, 1.0)
        log_magnitude = np.log(np.maximum(magnitude, LOG_FLOOR))
        fine = (1 - weight) * log_magnitude[:, left] + weight * log_magnitude[:, right]
        wav = librosa.griffinlim(
            np.exp(fine),
            n_iter=cfg.griffin_lim_iters,
            hop_length=cfg.synthesis_hop,
            n_fft=cfg.n_fft,
            length=length,
            random_state=cfg.seed,
        )
        return wav.astype(np.float32)

    # ------------------------------------------------------------------ training / IO
    @classmethod
    def train(cls, wavs: Iterable[np.ndarray], config: dict | MelRVQConfig) -> MelRVQCodec:
        """Fit the normalisation and the codebooks, stage by stage, on the given waveforms."""
        if not isinstance(config, MelRVQConfig):
            config = MelRVQConfig.from_dict(config)
        log_mels = [
            log_mel_spectrogram(check_waveform(wav, f"training waveform {i}"), config)
            for i, wav in enumerate(wavs)
        ]
        if not log_mels:
            raise CodecError("train: no training waveforms")
        frames = np.concatenate(log_mels)
        mean = frames.mean(axis=0)
        if config.normalization == "utterance":
            frames = np.concatenate([m - m.mean(axis=0) for m in log_mels])
        std = np.maximum(frames.std(axis=0), 1e-3)
        features = (frames - frames.mean(axis=0)) / std
        rng = np.random.default_rng(config.seed)
        if len(features) > config.max_frames:
            features = features[rng.choice(len(features), config.max_frames, replace=False)]
        if len(features) < config.codebook_size:
            raise CodecError(
                f"train: {len(features)} frames cannot fit {config.codebook_size} centroids; "
                "give more audio or a smaller codebook_size"
            )
        codebooks = []
        residual = features.astype(np.float32)
        for q in range(config.num_codebooks):
            kmeans = MiniBatchKMeans(
                n_clusters=config.codebook_size,
                batch_size=config.kmeans_batch_size,
                max_iter=config.kmeans_max_iter,
                n_init=1,
                # k-means++ seeding of 1024 centroids costs ~25x the whole fit; random seeding
                # plus MiniBatchKMeans' reassignment of empty clusters reaches the same inertia.
                init="random",
                random_state=config.seed + q,
            ).fit(residual)
            centroids = kmeans.cluster_centers_.astype(np.float32)
            residual = residual - centroids[kmeans.predict(residual)]
            codebooks.append(centroids)
        return cls(config, np.stack(codebooks), mean, std)

    def save(self, directory: str | os.PathLike) -> None:
        """Write codec.yaml and codebooks.safetensors (codebooks, mean, std) into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / WEIGHTS_NAME) as tmp:
            save_file({"codebooks": self.codebooks, "mean": self.mean, "std": self.std}, tmp)
        write_codec_config(directory, {"type": self.codec_type, **asdict(self.config)})

    @classmethod
    def load(cls, directory: str | os.PathLike) -> MelRVQCodec:
        config = read_codec_config(directory)
        config.pop("type")
        source = str(Path(directory) / "codec.yaml")
        weights_path = Path(directory) / WEIGHTS_NAME
        if not weights_path.is_file():
            raise CodecError(f"{weights_path}: codec weights missing")
        weights = load_file(str(weights_path))
        return cls(
            MelRVQConfig.from_dict(config, source),
            weights["codebooks"],
            weights["mean"],
            weights["std"],
        )
