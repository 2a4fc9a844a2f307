"""Audio input/output: Kaldi `wav.scp` / `segments` reading and atomic 16-bit wav writing.

Every waveform that leaves this module is mono float32 in [-1, 1] at the requested sample rate.
A `wav.scp` line is `uttid rxfilename`, where rxfilename is a path readable by soundfile
(wav/flac/ogg/...) or a Kaldi pipe `cmd |` whose stdout is an audio file. Pipes run arbitrary
shell commands, so they are only executed when the caller opts in with `allow_pipes=True`.
A `segments` line is `uttid recording_id start end` (seconds; end -1 = end of the recording).
Anything wrong with one utterance raises `AudioError` naming the uttid and where it came from.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from opuslm.data.datadir import parse_segment, read_table
from opuslm.fileio import atomic_path

logger = logging.getLogger(__name__)

_STREAMED_WAV_SIZE = 0x7FFFF000


class AudioError(ValueError):
    """An utterance whose audio cannot be turned into a clean mono waveform."""


@dataclass(frozen=True)
class Segment:
    """A cut `[start, end)` seconds out of a recording; `end=None` means to its end."""

    recording: str
    start: float
    end: float | None


def is_pipe(rxfilename: str) -> bool:
    return rxfilename.rstrip().endswith("|")


def read_segments(path: str | os.PathLike) -> dict[str, Segment]:
    """Read a Kaldi `segments` file: `uttid recording_id start end` per line."""
    segments = {}
    for uttid, value in read_table(path).items():
        try:
            recording, start, end = parse_segment(value)
        except ValueError as e:
            raise AudioError(f"{path}: segment {uttid}: {e}") from None
        segments[uttid] = Segment(recording, start, None if end == -1 else end)
    return segments


def _decode(
    source: io.BytesIO | str, uttid: str, where: str, segment: Segment | None
) -> tuple[np.ndarray, int]:
    """soundfile read (optionally of a segment) -> (float32 [N, C], sample rate)."""
    try:
        with sf.SoundFile(source) as f:
            sr = f.samplerate
            start = 0 if segment is None else round(segment.start * sr)
            stop = f.frames if segment is None or segment.end is None else round(segment.end * sr)
            if segment is not None and start >= f.frames:
                raise AudioError(
                    f"utterance {uttid} ({where}): segment starts at {segment.start:.2f} s but "
                    f"the recording is only {f.frames / sr:.2f} s long"
                )
            f.seek(min(start, f.frames))
            wav = f.read(max(0, min(stop, f.frames) - start), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"utterance {uttid} ({where}): cannot read audio: {e}") from None
    return wav, sr


def wav_shortfall(path: str) -> tuple[int, int] | None:
    """(declared, present) bytes of a RIFF/WAVE file's data chunk when it is cut short, else None.

    libsndfile reads a truncated WAV file without complaint (it trusts the file size), so a
    half-copied file would be tokenized as shorter audio with the full transcript.
    """
    with open(path, "rb") as f:
        header = f.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:] != b"WAVE":
            return None
        file_size = os.fstat(f.fileno()).st_size
        while len(chunk := f.read(8)) == 8:
            (size,) = struct.unpack("<I", chunk[4:])
            if chunk[:4] == b"data":
                present = file_size - f.tell()
                # 0 or >= 0x7FFFF000 (sox, ffmpeg): streamed by a tool that did not know the length.
                unknown = size == 0 or size >= _STREAMED_WAV_SIZE
                return None if unknown or present >= size else (size, present)
            f.seek(size + size % 2, os.SEEK_CUR)  # chunks are padded to an even size
    return None


def _run_pipe(command: str, uttid: str) -> io.BytesIO:
    try:
        return io.BytesIO(_pipe_stdout(command))
    except subprocess.CalledProcessError as e:
        stderr = e.stderr.decode(errors="replace").strip()[-500:]
        raise AudioError(
            f"utterance {uttid}: pipe {command!r} failed with exit code {e.returncode}: {stderr}"
        ) from None


@functools.lru_cache(maxsize=1)
def _pipe_stdout(command: str) -> bytes:
    """The output of a shell pipe. The last one is kept: consecutive segments usually cut the
    same recording, whose pipe (e.g. sph2pipe) would otherwise run once per segment."""
    return subprocess.run(command, shell=True, capture_output=True, check=True).stdout


def read_native(
    rxfilename: str,
    uttid: str,
    segment: Segment | None = None,
    downmix: bool = False,
    allow_pipes: bool = False,
) -> tuple[np.ndarray, int]:
    """Read one utterance at the file's own rate -> (mono float32 [N], sample rate)."""
    where = rxfilename.strip()
    if is_pipe(where):
        if not allow_pipes:
            raise AudioError(
                f"utterance {uttid}: wav.scp entry {where!r} is a shell pipe; pipes run commands, "
                f"so they are off by default: pass allow_pipes=True (--allow_pipes) to run them"
            )
        source: io.BytesIO | str = _run_pipe(where[:-1].strip(), uttid)
    else:
        if not Path(where).is_file():
            raise AudioError(f"utterance {uttid}: audio file {where} does not exist")
        shortfall = wav_shortfall(where)
        if shortfall is not None:
            declared, present = shortfall
            raise AudioError(
                f"utterance {uttid} ({where}): truncated WAV file: its header declares "
                f"{declared} bytes of audio but only {present} follow (an interrupted copy?)"
            )
        source = where
    wav, sr = _decode(source, uttid, where, segment)
    if wav.shape[0] == 0:
        raise AudioError(f"utterance {uttid} ({where}): zero-length audio")
    if wav.shape[1] > 2 and not downmix:
        raise AudioError(
            f"utterance {uttid} ({where}): {wav.shape[1]} channels; only mono or stereo is "
            f"down-mixed unless downmix=True (--downmix)"
        )
    if not np.isfinite(wav).all():
        raise AudioError(f"utterance {uttid} ({where}): audio contains NaN or inf samples")
    return wav.mean(axis=1, dtype=np.float32), sr


def resample(wav: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """float32 [N] -> float32 [~N * to_rate / from_rate] in [-1, 1] (soxr, high quality)."""
    if from_rate != to_rate:
        wav = soxr.resample(wav, from_rate, to_rate)
    # Float files may hold peaks above full scale and resampling overshoots slightly; the rest of
    # the toolkit relies on [-1, 1].
    return np.clip(wav, -1.0, 1.0).astype(np.float32, copy=False)


def load_audio(
    rxfilename: str,
    uttid: str,
    sample_rate: int | None = 16000,
    segment: Segment | None = None,
    downmix: bool = False,
    allow_pipes: bool = False,
) -> np.ndarray:
    """Read one utterance as mono float32 [N] in [-1, 1] at `sample_rate` (None: keep the file's).

    rxfilename: a path or a Kaldi pipe `cmd |` (only with allow_pipes=True).
    downmix: also average recordings with more than 2 channels (1 or 2 are always averaged).
    """
    wav, sr = read_native(rxfilename, uttid, segment, downmix, allow_pipes)
    return resample(wav, sr, sr if sample_rate is None else sample_rate)


class AudioReader:
    """Iterate (uttid, wav float32 [N]) over a data directory or a `wav.scp`, in file order.

    source: a data directory (its `wav.scp`, and `segments` if present) or a `wav.scp` path.
    segments: a `segments` file; then uttids come from it and wav.scp is keyed by recording.
    """

    def __init__(
        self,
        source: str | os.PathLike,
        segments: str | os.PathLike | None = None,
        sample_rate: int = 16000,
        allow_pipes: bool = False,
        downmix: bool = False,
    ) -> None:
        source = Path(source)
        if source.is_dir():
            wav_scp = source / "wav.scp"
            if segments is None and (source / "segments").is_file():
                segments = source / "segments"
        else:
            wav_scp = source
        if not wav_scp.is_file():
            raise AudioError(f"{wav_scp}: wav.scp not found")
        self.wav_scp = wav_scp
        self.sample_rate = sample_rate
        self.allow_pipes = allow_pipes
        self.downmix = downmix
        self.recordings = read_table(wav_scp)
        self.segments = None if segments is None else read_segments(segments)
        if self.segments is not None:
            missing = [u for u, s in self.segments.items() if s.recording not in self.recordings]
            if missing:
                seg = self.segments[missing[0]]
                raise AudioError(
                    f"{segments}: utterance {missing[0]} refers to recording {seg.recording} "
                    f"which is not in {wav_scp} ({len(missing)} such utterances)"
                )
        self._logged_rates: set[int] = set()

    def uttids(self) -> list[str]:
        return list(self.recordings if self.segments is None else self.segments)

    def __len__(self) -> int:
        return len(self.uttids())

    def read(self, uttid: str) -> np.ndarray:
        """The waveform of one utterance, float32 [N] at `self.sample_rate`."""
        segment = None if self.segments is None else self.segments.get(uttid)
        if self.segments is not None and segment is None:
            raise AudioError(f"utterance {uttid} is not in the segments of {self.wav_scp}")
        key = uttid if segment is None else segment.recording
        if key not in self.recordings:
            raise AudioError(f"utterance {uttid} is not in {self.wav_scp}")
        wav, rate = read_native(
            self.recordings[key], uttid, segment, self.downmix, self.allow_pipes
        )
        if rate != self.sample_rate and rate not in self._logged_rates:
            # Once per source rate, not per utterance: a corpus at 8 kHz would flood the log.
            self._logged_rates.add(rate)
            logger.info(
                "%s: resampling %d Hz -> %d Hz (first at utterance %s)",
                self.wav_scp,
                rate,
                self.sample_rate,
                uttid,
            )
        return resample(wav, rate, self.sample_rate)

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        for uttid in self.uttids():
            yield uttid, self.read(uttid)


def write_wav(path: str | os.PathLike, wav: np.ndarray, sample_rate: int) -> None:
    """Write mono float [N] (or [N, C]) audio as 16-bit PCM wav, atomically."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim not in (1, 2) or wav.shape[0] == 0:
        raise AudioError(f"{path}: expected a non-empty [N] or [N, C] waveform, got {wav.shape}")
    if not np.isfinite(wav).all():
        raise AudioError(f"{path}: refusing to write NaN or inf samples")
    # Not durable: one file per utterance, written again by rerunning its stage.
    with atomic_path(path, durable=False) as tmp:
        # Clip first: libsndfile wraps out-of-range floats around when converting to int16.
        sf.write(tmp, np.clip(wav, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
