"""Small input makers shared by the reliability suite's modules and fixtures."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000


def tone(seconds: float = 0.2, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """float32 [N]: a quiet 440 Hz tone."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def audio_bytes(
    wav: np.ndarray, sample_rate: int = SAMPLE_RATE, format: str = "WAV", subtype: str | None = None
) -> bytes:
    """The bytes of an audio file holding `wav` (float32 [N])."""
    buffer = io.BytesIO()
    sf.write(buffer, wav, sample_rate, format=format, subtype=subtype)
    return buffer.getvalue()


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path
