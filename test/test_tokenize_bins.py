"""Tokenizer training and token dump commands, end to end on a tiny flite data directory."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest

from opuslm.audio import AudioReader
from opuslm.bin import tokenize_audio, tokenize_text, train_semantic, train_text_tokenizer
from opuslm.dump import DumpError, run_jobs
from opuslm.tokenizers.acoustic import load_codec, train_codec
from opuslm.tokenizers.frames import FrameAlignmentError, align_streams
from opuslm.tokenizers.semantic import load_semantic_tokenizer
from opuslm.tokenizers.text import load_text_tokenizer

SENTENCES = {
    "awb_0001": ("awb", "the cat sat on the mat"),
    "kal16_0002": ("kal16", "a bird in the hand"),
    "rms_0003": ("rms", "time flies like an arrow"),
    "slt_0004": ("slt", "all is well that ends well"),
}


@pytest.fixture(autouse=True)
def info_logs(caplog):
    caplog.set_level(logging.INFO)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """wav.scp / text / utt2spk of four flite utterances, one per voice (16 kHz)."""
    root = tmp_path_factory.mktemp("flite")
    wav_scp, text = [], []
    for uttid, (voice, sentence) in SENTENCES.items():
        wav = root / "wav" / f"{uttid}.wav"
        wav.parent.mkdir(exist_ok=True)
        subprocess.run(["flite", "-voice", voice, "-t", sentence, "-o", str(wav)], check=True)
        wav_scp.append(f"{uttid} {wav}\n")
        text.append(f"{uttid} {sentence}\n")
    data = root / "data"
    data.mkdir()
    (data / "wav.scp").write_text("".join(wav_scp))
    (data / "text").write_text("".join(text))
    (data / "utt2spk").write_text("".join(f"{u} {u}\n" for u in SENTENCES))
    return data


@pytest.fixture(scope="module")
def tokenizer_dirs(data_dir, tmp_path_factory) -> dict[str, Path]:
    """Text, semantic and codec directories trained on the data directory by the commands."""
    root = tmp_path_factory.mktemp("tokenizers")
    dirs = {"text": root / "text", "semantic": root / "semantic", "codec": root / "codec"}
    argv = ["--text", str(data_dir / "text"), "--output_dir", str(dirs["text"])]
    assert train_text_tokenizer.main([*argv, "--vocab_size", "100", "--model_type", "char"]) == 0
    argv = ["--data_dir", str(data_dir), "--output_dir", str(dirs["semantic"])]
    assert train_semantic.main([*argv, "--num_clusters", "8", "--feature", "mfcc"]) == 0
    wavs = [wav for _, wav in AudioReader(data_dir)]
    train_codec(wavs, {"num_codebooks": 2, "codebook_size": 8}).save(dirs["codec"])
    return dirs


def audio_argv(data_dir: Path, dirs: dict[str, Path], output_dir: Path, *extra: str) -> list[str]:
    return [
        "--data_dir",
        str(data_dir),
        "--semantic_dir",
        str(dirs["semantic"]),
        "--codec_dir",
        str(dirs["codec"]),
        "--output_dir",
        str(output_dir),
        *extra,
    ]


def copy_data_dir(data_dir: Path, target: Path, corrupt: list[str]) -> Path:
    """A copy of the data directory whose listed utterances point at corrupted files."""
    shutil.copytree(data_dir, target)
    lines = []
    for line in (data_dir / "wav.scp").read_text().splitlines():
        uttid, path = line.split()
        if uttid in corrupt:
            path = str(target / f"{uttid}.wav")
            Path(path).write_bytes(b"RIFF\x00\x00garbage" * 20)
        lines.append(f"{uttid} {path}\n")
    (target / "wav.scp").write_text("".join(lines))
    return target


def test_trained_tokenizers_load(tokenizer_dirs):
    text = load_text_tokenizer(tokenizer_dirs["text"])
    assert text.decode(text.encode("the bird flies")) == "the bird flies"
    semantic = load_semantic_tokenizer(tokenizer_dirs["semantic"])
    assert (semantic.num_clusters, semantic.frame_rate) == (8, 50.0)


def test_tokenize_audio_end_to_end_and_idempotent(data_dir, tokenizer_dirs, tmp_path, caplog):
    out = tmp_path / "dump"
    assert tokenize_audio.main(audio_argv(data_dir, tokenizer_dirs, out)) == 0
    semantic = load_semantic_tokenizer(tokenizer_dirs["semantic"])
    codec = load_codec(tokenizer_dirs["codec"])
    dumped = dict(kaldiio.load_scp(str(out / "speech.scp")))
    assert list(dumped) == sorted(SENTENCES)
    lengths = dict(line.split() for line in (out / "utt2num_frames").read_text().splitlines())
    for uttid, wav in AudioReader(data_dir):
        frames = dumped[uttid]
        assert frames.dtype == np.int32 and frames.shape == (-(-len(wav) // 320), 3)
        np.testing.assert_array_equal(frames[:, 0], semantic.encode(wav))  # column 0 semantic
        np.testing.assert_array_equal(frames[:, 1:], codec.encode(wav))
        assert int(lengths[uttid]) == len(frames)
    assert "utterances 4, frames" in caplog.text and "skipped 0" in caplog.text

    caplog.clear()
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert tokenize_audio.main(audio_argv(data_dir, tokenizer_dirs, out)) == 0
    assert "nothing to do" in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before

    # A shard without its .done marker is partial: it is redone, with the same result.
    (out / "speech.1.done").unlink()
    (out / "speech.1.ark").write_bytes(b"partial")
    caplog.clear()
    assert tokenize_audio.main(audio_argv(data_dir, tokenizer_dirs, out)) == 0
    assert "nothing to do" not in caplog.text
    for uttid, frames in kaldiio.load_scp(str(out / "speech.scp")).items():
        np.testing.assert_array_equal(frames, dumped[uttid])


def test_parallel_jobs_through_runner_give_the_same_dump(
    data_dir, tokenizer_dirs, tmp_path, monkeypatch
):
    # A stand-in for utils/run.sh with its interface (JOB=1:N log command...), run sequentially.
    runner = tmp_path / "utils" / "run.sh"
    runner.parent.mkdir()
    runner.write_text(
        '#!/usr/bin/env bash\nset -e\nn=${1#JOB=1:}; log=$2; shift 2\necho "$n" > runner_called\n'
        'for j in $(seq 1 "$n"); do "${@//JOB/$j}" > "${log//JOB/$j}" 2>&1; done\n'
    )
    runner.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    argv = ["--text", str(data_dir / "text"), "--tokenizer_dir", str(tokenizer_dirs["text"])]
    assert tokenize_text.main([*argv, "--output_dir", "parallel", "--nj", "2"]) == 0
    assert (tmp_path / "runner_called").read_text() == "2\n"
    assert "job 2 of 2: utterances 2" in (tmp_path / "parallel/log/tokenize_text.2.log").read_text()
    assert tokenize_text.main([*argv, "--output_dir", "serial"]) == 0
    parallel = kaldiio.load_scp("parallel/text.scp")
    serial = kaldiio.load_scp("serial/text.scp")
    assert list(parallel) == list(serial) == sorted(SENTENCES)
    for uttid in SENTENCES:
        np.testing.assert_array_equal(parallel[uttid], serial[uttid])


@pytest.mark.slow
def test_parallel_audio_jobs_as_local_processes(data_dir, tokenizer_dirs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no utils/run.sh here: the jobs run as local processes
    assert (
        tokenize_audio.main(audio_argv(data_dir, tokenizer_dirs, tmp_path / "par", "--nj", "3"))
        == 0
    )
    assert tokenize_audio.main(audio_argv(data_dir, tokenizer_dirs, tmp_path / "ser")) == 0
    parallel = kaldiio.load_scp(str(tmp_path / "par" / "speech.scp"))
    serial = kaldiio.load_scp(str(tmp_path / "ser" / "speech.scp"))
    assert list(parallel) == list(serial) == sorted(SENTENCES)
    for uttid in SENTENCES:
        np.testing.assert_array_equal(parallel[uttid], serial[uttid])


def test_local_job_fallback_runs_all_jobs_and_reports_failures(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no utils/run.sh here
    code = "import sys; open(f'out.{sys.argv[1]}', 'w').write('x'); sys.exit(sys.argv[1] == '3')"
    with pytest.raises(DumpError, match=r"jobs \[3\] of 3 failed; see .*log/t\.3\.log"):
        run_jobs([sys.executable, "-c", code, "JOB"], 3, tmp_path / "log" / "t.JOB.log")
    assert sorted(p.name for p in tmp_path.glob("out.*")) == ["out.1", "out.2", "out.3"]


def test_corrupted_audio_with_and_without_skip_bad(data_dir, tokenizer_dirs, tmp_path, caplog):
    bad = copy_data_dir(data_dir, tmp_path / "bad", corrupt=["rms_0003"])
    out = tmp_path / "dump"
    assert tokenize_audio.main(audio_argv(bad, tokenizer_dirs, out)) == 1
    assert f"utterance rms_0003 ({bad / 'rms_0003.wav'}): cannot read audio" in caplog.text
    assert not (out / "speech.scp").exists() and not (out / "speech.1.done").exists()
    caplog.clear()
    assert tokenize_audio.main(audio_argv(bad, tokenizer_dirs, out, "--skip_bad")) == 0
    assert "skipping: utterance rms_0003" in caplog.text and "skipped 1" in caplog.text
    assert sorted(kaldiio.load_scp(str(out / "speech.scp"))) == sorted(
        set(SENTENCES) - {"rms_0003"}
    )


def test_nothing_written_is_an_error(data_dir, tokenizer_dirs, tmp_path, caplog):
    bad = copy_data_dir(data_dir, tmp_path / "bad", corrupt=list(SENTENCES))
    out = tmp_path / "dump"
    assert tokenize_audio.main(audio_argv(bad, tokenizer_dirs, out, "--skip_bad")) == 1
    assert "no utterance was written" in caplog.text and not (out / "speech.scp").exists()


def test_frame_count_mismatch_names_the_utterance(
    data_dir, tokenizer_dirs, tmp_path, monkeypatch, caplog
):
    codec = load_codec(tokenizer_dirs["codec"])

    class TwoFramesLongerCodec:
        sample_rate, hop_length = codec.sample_rate, codec.hop_length
        num_codebooks, codebook_size = codec.num_codebooks, codec.codebook_size

        def encode(self, wav: np.ndarray) -> np.ndarray:
            return np.zeros((-(-len(wav) // self.hop_length) + 2, self.num_codebooks), int)

    monkeypatch.setattr(tokenize_audio, "load_codec", lambda directory: TwoFramesLongerCodec())
    assert tokenize_audio.main(audio_argv(data_dir, tokenizer_dirs, tmp_path / "dump")) == 1
    assert "utterance awb_0001: the semantic tokenizer gave" in caplog.text
    assert "they must agree within one frame" in caplog.text


def test_tokenize_text_round_trip_special_tokens_and_bad_transcripts(
    data_dir, tokenizer_dirs, tmp_path, caplog
):
    tokenizer = load_text_tokenizer(tokenizer_dirs["text"])
    argv = ["--text", str(data_dir / "text"), "--tokenizer_dir", str(tokenizer_dirs["text"])]
    assert tokenize_text.main([*argv, "--output_dir", str(tmp_path / "plain")]) == 0
    dumped = dict(kaldiio.load_scp(str(tmp_path / "plain" / "text.scp")))
    assert list(dumped) == sorted(SENTENCES)
    for uttid, (_, sentence) in SENTENCES.items():
        assert dumped[uttid].dtype == np.int32 and dumped[uttid].ndim == 1
        assert tokenizer.decode(dumped[uttid].tolist()) == sentence
    counts = (tmp_path / "plain" / "utt2num_tokens").read_text().splitlines()
    assert counts == [f"{u} {len(dumped[u])}" for u in sorted(SENTENCES)]

    special = tmp_path / "special"
    assert tokenize_text.main([*argv, "--output_dir", str(special), "--add_special_tokens"]) == 0
    with_special = kaldiio.load_scp(str(special / "text.scp"))["awb_0001"].tolist()
    assert with_special == [tokenizer.bos_id, *dumped["awb_0001"].tolist(), tokenizer.eos_id]

    bad_text = tmp_path / "text"
    bad_text.write_text("u1 the cat\nu2\nu3 zebra quiz\n")  # u2 empty; z, q never seen
    argv = ["--text", str(bad_text), "--tokenizer_dir", str(tokenizer_dirs["text"])]
    assert tokenize_text.main([*argv, "--output_dir", str(tmp_path / "bad")]) == 1
    assert "utterance u2: empty transcript" in caplog.text
    caplog.clear()
    assert tokenize_text.main([*argv, "--output_dir", str(tmp_path / "bad"), "--skip_bad"]) == 0
    assert "utterance u3: the tokenizer maps 3 of 10 tokens of 'zebra quiz' to <unk>" in caplog.text
    assert list(kaldiio.load_scp(str(tmp_path / "bad" / "text.scp"))) == ["u1"]


def test_job_option_writes_one_shard_without_merging(data_dir, tokenizer_dirs, tmp_path, caplog):
    argv = ["--text", str(data_dir / "text"), "--tokenizer_dir", str(tokenizer_dirs["text"])]
    out = tmp_path / "out"
    assert tokenize_text.main([*argv, "--output_dir", str(out), "--nj", "2", "--job", "2"]) == 0
    assert (out / "text.2.done").is_file() and not (out / "text.scp").exists()
    assert list(kaldiio.load_scp(str(out / "text.2.scp"))) == ["rms_0003", "slt_0004"]
    assert "job 2 of 2: utterances 2" in caplog.text
    assert tokenize_text.main([*argv, "--output_dir", str(out), "--nj", "2", "--job", "2"]) == 0
    assert "shard 2 of 2 is already done" in caplog.text


def test_tokenizers_on_different_frame_grids_are_refused(
    data_dir, tokenizer_dirs, tmp_path, monkeypatch, caplog
):
    class HalfRateCodec:
        sample_rate, hop_length, num_codebooks, codebook_size = 16000, 640, 2, 8

    monkeypatch.setattr(tokenize_audio, "load_codec", lambda directory: HalfRateCodec())
    assert tokenize_audio.main(audio_argv(data_dir, tokenizer_dirs, tmp_path / "dump")) == 1
    assert "(16000 Hz, hop 320) and the codec (16000 Hz, hop 640)" in caplog.text


def test_train_semantic_says_what_an_ssl_feature_needs(data_dir, tmp_path, caplog):
    argv = ["--data_dir", str(data_dir), "--output_dir", str(tmp_path), "--num_clusters", "4"]
    assert train_semantic.main([*argv, "--feature", "hf", "--layer", "6"]) == 1
    assert "--feature hf needs --hf_dir" in caplog.text
    assert not (tmp_path / "semantic.yaml").exists()


def test_streams_one_frame_apart_are_trimmed_to_the_shorter():
    units = np.arange(5)
    codes = np.arange(8).reshape(4, 2) + 100
    rows = align_streams("u1", units, codes)
    assert rows.dtype == np.int32
    np.testing.assert_array_equal(
        rows, [[0, 100, 101], [1, 102, 103], [2, 104, 105], [3, 106, 107]]
    )
    assert align_streams("u1", units[:4], codes[:3]).shape == (3, 3)
    with pytest.raises(
        FrameAlignmentError, match="utterance u2: the semantic tokenizer gave 6 frames"
    ):
        align_streams("u2", np.arange(6), codes)
