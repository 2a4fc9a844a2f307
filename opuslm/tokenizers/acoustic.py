"""Acoustic tokenizers (codecs): waveform <-> `[T, n_q]` residual codebook codes.

Every backend follows the `Codec` protocol below and is saved as a directory holding
`codec.yaml` (with a `type` key naming the backend) next to its weights, in formats that load
without unpickling. `load_codec` reads that file and dispatches on `type`; `train_codec` does the
same for backends that can be trained here. Backends:

    melrvq   `MelRVQCodec` (opuslm.tokenizers.codec_melrvq): log-mel residual VQ + Griffin-Lim,
             trainable on CPU in seconds; the default of the mini recipes.
    espnet   `ESPnetCodec` (opuslm.tokenizers.codec_espnet): ESPnet gan_codec models (DAC,
             SoundStream) from a local config + checkpoint; needs tools/install_espnet.sh.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import yaml

from opuslm.fileio import write_text_atomic

CONFIG_NAME = "codec.yaml"

# type -> "module:class"; backends are imported only when used (espnet is an optional extra).
BACKENDS = {
    "melrvq": "opuslm.tokenizers.codec_melrvq:MelRVQCodec",
    "espnet": "opuslm.tokenizers.codec_espnet:ESPnetCodec",
}


class CodecError(ValueError):
    """Bad input to a codec, or a codec directory that cannot be loaded."""


@runtime_checkable
class Codec(Protocol):
    """A waveform codec with `num_codebooks` residual codebooks of `codebook_size` entries."""

    sample_rate: int
    hop_length: int
    num_codebooks: int
    codebook_size: int

    @property
    def frame_rate(self) -> float:
        """Frames per second: sample_rate / hop_length."""
        ...

    def encode(self, wav: np.ndarray) -> np.ndarray:
        """float32 [N] at sample_rate -> int [T, n_q] codes in [0, C), T = ceil(N / hop_length)."""
        ...

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """int [T, n_q] -> float32 [T * hop_length]."""
        ...

    def save(self, directory: str | os.PathLike) -> None:
        """Write codec.yaml (with "type") and the weights into `directory`."""
        ...


def num_frames(num_samples: int, hop_length: int) -> int:
    """T = ceil(N / hop): the frame count every tokenizer with this hop agrees on."""
    return -(-num_samples // hop_length)


def check_waveform(wav: np.ndarray, what: str = "waveform") -> np.ndarray:
    """Validate a mono float waveform [N] and return it as float32.

    `what` names the input in the error (e.g. the uttid), so a bad utterance can be found.
    """
    wav = np.asarray(wav)
    if not np.issubdtype(wav.dtype, np.floating):
        raise CodecError(
            f"{what}: expected a float waveform in [-1, 1], got dtype {wav.dtype} "
            "(convert integer PCM with wav / 32768)"
        )
    if wav.ndim != 1:
        raise CodecError(f"{what}: expected a mono waveform [N], got shape {list(wav.shape)}")
    if wav.size == 0:
        raise CodecError(f"{what}: empty waveform")
    if not np.all(np.isfinite(wav)):
        raise CodecError(f"{what}: waveform contains NaN or infinite samples")
    return wav.astype(np.float32, copy=False)


def check_codes(codes: np.ndarray, num_codebooks: int, codebook_size: int) -> np.ndarray:
    """Validate codes [T, n_q] (integers in [0, C)) and return them as int64."""
    codes = np.asarray(codes)
    if not np.issubdtype(codes.dtype, np.integer):
        raise CodecError(f"codes must be integers, got dtype {codes.dtype}")
    if codes.ndim != 2 or codes.shape[1] != num_codebooks or codes.shape[0] == 0:
        raise CodecError(f"codes must have shape [T > 0, {num_codebooks}], got {list(codes.shape)}")
    if codes.min() < 0 or codes.max() >= codebook_size:
        raise CodecError(
            f"codes must lie in [0, {codebook_size}), got [{codes.min()}, {codes.max()}]"
        )
    return codes.astype(np.int64, copy=False)


def _backend(codec_type: object, source: str) -> type:
    if codec_type not in BACKENDS:
        raise CodecError(
            f"{source}: unknown codec type {codec_type!r}; known types: {', '.join(BACKENDS)}"
        )
    module_name, class_name = BACKENDS[codec_type].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def read_codec_config(directory: str | os.PathLike) -> dict:
    """The parsed `<directory>/codec.yaml` (a mapping with at least a "type" key)."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise CodecError(f"{path}: no codec config here (is {directory} a codec directory?)")
    with open(path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    if not isinstance(config, dict) or "type" not in config:
        raise CodecError(f"{path}: expected a mapping with a 'type' key")
    return config


def load_codec(directory: str | os.PathLike) -> Codec:
    """Load the codec saved in `directory`, whatever its backend."""
    config = read_codec_config(directory)
    backend = _backend(config["type"], str(Path(directory) / CONFIG_NAME))
    return backend.load(directory)


def train_codec(wavs: Iterable[np.ndarray], config: dict) -> Codec:
    """Train a codec of `config["type"]` (default "melrvq") on float32 waveforms [N]."""
    config = dict(config)
    codec_type = config.pop("type", "melrvq")
    backend = _backend(codec_type, "train_codec config")
    if not hasattr(backend, "train"):
        raise CodecError(f"codec type {codec_type!r} cannot be trained here")
    return backend.train(wavs, config)


def write_codec_config(directory: str | os.PathLike, config: dict) -> None:
    """Write `<directory>/codec.yaml` atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_text_atomic(directory / CONFIG_NAME, yaml.safe_dump(config, sort_keys=False))
