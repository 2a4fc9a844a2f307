"""Audio reading: each wav.scp entry kind, segments, resampling, and each bad input."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from opuslm.audio import AudioError, AudioReader, load_audio, read_segments, write_wav
from opuslm.data.datadir import DataDirError

SR = 16000


def tone(seconds: float = 0.5, sr: int = SR, freq: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_scp(path: Path, entries: dict[str, str]) -> Path:
    path.write_text("".join(f"{k} {v}\n" for k, v in entries.items()))
    return path


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg"])
def test_reads_each_format_as_mono_float32(tmp_path, fmt):
    wav = tone()
    path = tmp_path / f"a.{fmt}"
    sf.write(path, wav, SR, format=fmt.upper())
    out = load_audio(str(path), "utt1")
    assert out.dtype == np.float32 and out.shape == wav.shape
    tolerance = 0.05 if fmt == "ogg" else 1e-3  # vorbis is lossy
    assert np.abs(out - wav).max() < tolerance


def test_int_pcm_is_scaled_to_unit_range(tmp_path):
    path = tmp_path / "int.wav"
    sf.write(path, np.full(100, 16384, dtype=np.int16), SR, subtype="PCM_16")
    np.testing.assert_allclose(load_audio(str(path), "u"), 0.5)


def test_stereo_is_averaged_and_more_channels_need_downmix(tmp_path):
    stereo = np.stack([np.full(800, 0.2), np.full(800, 0.6)], axis=1)
    sf.write(tmp_path / "st.wav", stereo, SR, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(str(tmp_path / "st.wav"), "u"), 0.4, atol=1e-6)
    sf.write(tmp_path / "4ch.wav", np.full((800, 4), 0.25), SR, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"uttX .*4ch\.wav.*4 channels.*downmix"):
        load_audio(str(tmp_path / "4ch.wav"), "uttX")
    np.testing.assert_allclose(load_audio(str(tmp_path / "4ch.wav"), "u", downmix=True), 0.25)


def test_resampling_changes_rate_and_logs_once(tmp_path, caplog):
    for name in ("a", "b"):
        sf.write(tmp_path / f"{name}.wav", tone(1.0, sr=8000), 8000)
    scp = write_scp(tmp_path / "wav.scp", {u: str(tmp_path / f"{u}.wav") for u in ("a", "b")})
    with caplog.at_level(logging.INFO, logger="opuslm.audio"):
        wavs = dict(AudioReader(scp, sample_rate=SR))
    assert [len(w) for w in wavs.values()] == [SR, SR]
    # A 440 Hz tone stays a 440 Hz tone after resampling.
    spectrum = np.abs(np.fft.rfft(wavs["a"]))
    assert np.argmax(spectrum) == pytest.approx(440, abs=1)
    assert [r.getMessage() for r in caplog.records if "resampling" in r.getMessage()] == [
        f"{scp}: resampling 8000 Hz -> 16000 Hz (first at utterance a)"
    ]


def test_segments_cut_the_recording(tmp_path):
    wav = np.linspace(-0.5, 0.5, 2 * SR, dtype=np.float32)
    sf.write(tmp_path / "rec.wav", wav, SR, subtype="FLOAT")
    write_scp(tmp_path / "wav.scp", {"rec1": str(tmp_path / "rec.wav")})
    (tmp_path / "segments").write_text("s1 rec1 0.5 1.0\ns2 rec1 1.5 -1\n")
    reader = AudioReader(tmp_path)  # a data dir: segments are picked up automatically
    out = dict(reader)
    assert list(out) == ["s1", "s2"]
    np.testing.assert_array_equal(out["s1"], wav[SR // 2 : SR])
    np.testing.assert_array_equal(out["s2"], wav[3 * SR // 2 :])


def test_segments_of_a_piped_recording_run_the_pipe_once(tmp_path):
    wav = np.linspace(-0.5, 0.5, SR, dtype=np.float32)
    sf.write(tmp_path / "rec.wav", wav, SR, subtype="FLOAT")
    pipe = f"sh -c 'echo run >> {tmp_path}/runs; cat {tmp_path}/rec.wav' |"
    write_scp(tmp_path / "wav.scp", {"rec1": pipe})
    (tmp_path / "segments").write_text("a rec1 0.0 0.25\nb rec1 0.25 0.5\nc rec1 0.5 -1\n")
    out = dict(AudioReader(tmp_path, allow_pipes=True))
    np.testing.assert_array_equal(np.concatenate([out["a"], out["b"], out["c"]]), wav)
    assert (tmp_path / "runs").read_text() == "run\n"


def test_segment_errors_name_file_and_uttid(tmp_path):
    (tmp_path / "segments").write_text("s1 rec1 1.0 0.5\n")
    with pytest.raises(AudioError, match=r"segments: segment s1: end 0.5 <= start 1.0"):
        read_segments(tmp_path / "segments")
    sf.write(tmp_path / "rec.wav", tone(1.0), SR)
    write_scp(tmp_path / "wav.scp", {"rec1": str(tmp_path / "rec.wav")})
    (tmp_path / "segments").write_text("late rec1 3.0 4.0\n")
    with pytest.raises(AudioError, match=r"late .*rec\.wav.*only 1\.00 s long"):
        AudioReader(tmp_path).read("late")


def test_pipes_need_opt_in(tmp_path):
    sf.write(tmp_path / "a.wav", tone(), SR)
    entry = f"cat {tmp_path / 'a.wav'} |"
    with pytest.raises(AudioError, match=r"utterance pipe1: .*cat .*a\.wav.*allow_pipes=True"):
        load_audio(entry, "pipe1")
    np.testing.assert_allclose(load_audio(entry, "pipe1", allow_pipes=True), tone(), atol=1e-4)
    with pytest.raises(AudioError, match=r"utterance bad: pipe 'false' failed with exit code 1"):
        load_audio("false |", "bad", allow_pipes=True)


def bad_file(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.wav"
    if kind == "corrupt":
        path.write_bytes(b"RIFF not really a wav file" * 10)
    elif kind == "empty":
        sf.write(path, np.zeros(0, dtype=np.float32), SR)
    elif kind in ("nan", "inf"):
        wav = tone()
        wav[100] = np.nan if kind == "nan" else np.inf
        sf.write(path, wav, SR, subtype="FLOAT")
    return path


@pytest.mark.parametrize(
    "kind,message",
    [
        ("missing", "does not exist"),
        ("corrupt", "cannot read audio"),
        ("empty", "zero-length audio"),
        ("nan", "NaN or inf"),
        ("inf", "NaN or inf"),
    ],
)
def test_bad_audio_names_uttid_and_path(tmp_path, kind, message):
    path = bad_file(tmp_path, kind)
    write_scp(tmp_path / "wav.scp", {f"utt_{kind}": str(path)})
    with pytest.raises(AudioError, match=message) as err:
        list(AudioReader(tmp_path / "wav.scp"))
    assert f"utt_{kind}" in str(err.value) and str(path) in str(err.value)


def test_table_errors_name_file_and_line(tmp_path):
    write_scp(tmp_path / "wav.scp", {"a": "x.wav"})
    with open(tmp_path / "wav.scp", "a") as f:
        f.write("a y.wav\n")
    with pytest.raises(DataDirError, match=r"wav\.scp:2: duplicate id 'a'"):
        AudioReader(tmp_path / "wav.scp")


def test_write_wav_is_16bit_clipped_and_atomic(tmp_path):
    wav = np.array([0.0, 0.5, -0.5, 1.5, -2.0], dtype=np.float32)
    write_wav(tmp_path / "out" / "x.wav", wav, 22050)
    info = sf.info(tmp_path / "out" / "x.wav")
    assert (info.samplerate, info.subtype, info.channels) == (22050, "PCM_16", 1)
    back, _ = sf.read(tmp_path / "out" / "x.wav", dtype="int16")
    np.testing.assert_array_equal(back, [0, 16384, -16384, 32767, -32768])
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["x.wav"]
    with pytest.raises(AudioError, match="NaN"):
        write_wav(tmp_path / "out" / "y.wav", np.array([np.nan]), SR)
    assert not (tmp_path / "out" / "y.wav").exists()
