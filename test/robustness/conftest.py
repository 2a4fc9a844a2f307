"""Fixtures of the reliability suite: valid inputs that each bad-input case breaks one way."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
from test_manifest import write_corpus

from robustness.helpers import SAMPLE_RATE, tone, write_lines

UTTS = ("spkA-u1", "spkA-u2", "spkB-u1")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A valid Kaldi data directory (3 utterances, 2 speakers, real 16 kHz wav files)."""
    data = tmp_path / "data"
    (data / "wav").mkdir(parents=True)
    for uttid in UTTS:
        sf.write(data / "wav" / f"{uttid}.wav", tone(), SAMPLE_RATE)
    write_lines(data / "wav.scp", [f"{u} {data / 'wav' / u}.wav" for u in UTTS])
    write_lines(data / "text", [f"{u} HELLO WORLD" for u in UTTS])
    write_lines(data / "utt2spk", [f"{u} {u[:4]}" for u in UTTS])
    write_lines(data / "spk2utt", ["spkA spkA-u1 spkA-u2", "spkB spkB-u1"])
    write_lines(data / "utt2dur", [f"{u} 0.2" for u in UTTS])
    return data


@pytest.fixture
def dump(tmp_path: Path) -> dict[str, Path]:
    """Valid token dumps of 4 utterances: speech.scp / text.scp (+ arks, length files),
    utt2spk and token_list.json (`test_manifest.write_corpus`)."""
    return write_corpus(tmp_path / "dump", num_utts=4)
