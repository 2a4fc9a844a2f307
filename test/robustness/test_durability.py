"""Durable writes: results are flushed to disk before the rename that publishes them.

A rename without an fsync of the data can survive a power cut while the data does not, leaving a
checkpoint or token dump of the right name full of zeros. These tests record every `os.fsync`
(resolved to its path through /proc) and check that the file was flushed *before* it got its
final name, and that per-utterance waveforms skip the cost.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from opuslm.dump import Shard, ShardWriter
from opuslm.fileio import atomic_path, write_directory_atomic, write_text_atomic
from opuslm.train import checkpoint as ckpt
from opuslm.vocab import TokenList

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/fd").is_dir(), reason="needs /proc to name the fsynced files"
)


@pytest.fixture
def fsynced(monkeypatch) -> list[Path]:
    """The path of each fsync, in order, filled in by the test's writes (temp files and
    directories carry a leading "." and a ".tmp" suffix until their rename)."""
    calls: list[Path] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        calls.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    return calls


def test_text_is_flushed_under_its_temp_name_then_the_rename_is(tmp_path, fsynced):
    target = tmp_path / "result.json"
    write_text_atomic(target, "{}\n")
    assert target.read_text() == "{}\n"
    files = [p for p in fsynced if p != tmp_path]
    assert len(files) == 1 and files[0].name.startswith(".result.json.")  # before the rename
    assert fsynced[-1] == tmp_path  # the directory entry, after it


def test_waveform_writes_skip_the_fsync(tmp_path, fsynced):
    with atomic_path(tmp_path / "a.wav", durable=False) as tmp:
        Path(tmp).write_bytes(b"RIFF")
    assert (tmp_path / "a.wav").read_bytes() == b"RIFF"
    assert fsynced == []


def test_a_checkpoint_is_flushed_before_it_gets_its_step_name(tmp_path, fsynced):
    token_list = TokenList.build(["a", "b"], num_semantic=2, num_codebooks=1, codebook_size=2)
    weights = {"w": torch.ones(3)}
    final = ckpt.save_checkpoint(tmp_path, 5, weights, {"step": 5}, {"model": {}}, token_list)
    flushed_in_temp = {p.name for p in fsynced if p.parent.name.startswith(".step_")}
    assert {ckpt.WEIGHTS, ckpt.TRAIN_STATE, ckpt.CONFIG, ckpt.TOKEN_LIST} <= flushed_in_temp
    # Last: the `latest` pointer's directory entry, which also makes the step's rename durable.
    assert fsynced[-1] == tmp_path
    assert ckpt.latest_checkpoint(tmp_path) == final


def test_a_token_dump_shard_flushes_its_ark_before_publishing_it(tmp_path, fsynced):
    shard = Shard(tmp_path, "text", 1)
    with ShardWriter(shard, {"inputs": 1}) as writer:
        writer.add("utt1", np.arange(4))
        writer.commit({"count": 1})
    arks = [p for p in fsynced if p.name.startswith(f".{shard.path('ark').name}.")]
    assert len(arks) == 1  # the temp ark, flushed before its rename
    assert shard.summary({"inputs": 1}) is not None


def test_a_written_directory_is_flushed_before_the_rename(tmp_path, fsynced):
    def write(directory: Path) -> None:
        (directory / "sub").mkdir()
        (directory / "sub" / "x.bin").write_bytes(b"x")

    out = write_directory_atomic(tmp_path / "packed", write)
    assert (out / "sub" / "x.bin").read_bytes() == b"x"
    before = [p for p in fsynced if ".packed." in str(p)]
    assert any(p.name == "x.bin" for p in before)
    assert fsynced[-1] == tmp_path


def test_atomic_writes_get_the_mode_of_a_plain_write(tmp_path):
    """The temp files and directories are private (0600 / 0700) until renamed; the published
    results must not stay so, or a packed model or dump is unreadable by the rest of a team."""
    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "a.txt", "x")
        with atomic_path(tmp_path / "b.bin") as tmp:
            Path(tmp).write_bytes(b"y")
        # safetensors replaces the temp file with a private (0600) one of its own.
        with atomic_path(tmp_path / "e.safetensors") as tmp:
            save_file({"x": torch.ones(1)}, tmp)

        def write(directory: Path) -> None:
            (directory / "f").write_text("z")
            (directory / "run.sh").write_text("true\n")
            (directory / "run.sh").chmod(0o750)  # a mode the writer chose is kept

        out = write_directory_atomic(tmp_path / "d", write)
        token_list = TokenList.build(["a"], num_semantic=2, num_codebooks=1, codebook_size=2)
        step = ckpt.save_checkpoint(tmp_path / "ck", 1, {"w": torch.ones(1)}, {}, {}, token_list)
        os.umask(0o027)
        write_text_atomic(tmp_path / "c.txt", "x")
    finally:
        os.umask(old)
    written = [*tmp_path.iterdir(), out / "f", out / "run.sh", step, step / ckpt.WEIGHTS]
    modes = {p.name: p.stat().st_mode & 0o777 for p in written}
    assert modes == {
        "a.txt": 0o644,
        "b.bin": 0o644,
        "d": 0o755,
        "f": 0o644,
        "run.sh": 0o750,
        "e.safetensors": 0o644,
        "c.txt": 0o640,
        "ck": 0o755,
        step.name: 0o755,  # a checkpoint, too, is readable by the team
        ckpt.WEIGHTS: 0o644,
    }


def test_a_directory_written_again_replaces_the_old_one_whole(tmp_path, monkeypatch):
    out = write_directory_atomic(tmp_path / "d", lambda d: (d / "old").write_text("1"))
    write_directory_atomic(out, lambda d: (d / "new").write_text("2"))
    assert sorted(p.name for p in out.iterdir()) == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # no temp or moved-aside dir left

    # If publishing the new one fails, the old one is back in its place, whole.
    real_replace = os.replace

    def failing_replace(src, dst):
        if str(src).endswith(".tmp"):  # the new directory's rename, not the move aside / back
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_directory_atomic(out, lambda d: (d / "newer").write_text("3"))
    assert sorted(p.name for p in out.iterdir()) == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
