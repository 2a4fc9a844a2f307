"""Faults (issue 9 item 2): SIGKILL at chosen points of training and of the token dumpers, a full
disk while writing, non-finite losses.

A kill is a real SIGKILL, sent by a forked child to itself at the planted point (inside the
checkpoint writer, between two renames, in the middle of an ark ...), so no `finally` block or
temp-file cleanup runs, as when a cluster scheduler kills a job; but the point is exact and the
test needs no timing or new interpreter. The points where a kill lands (which step, which save,
which utterance) are drawn once with a fixed seed (`KILL_SEED`). The run is then resumed (re-run)
in this process and its final state compared with an uninterrupted run: weights and optimizer
state bit-identical, every step logged once, token dumps byte-identical.

`test_trainer.py::test_kill_9_then_resume_is_bit_identical` kills a real `opuslm.bin.train`
process from outside at a random time; this module covers the points that such a kill only hits
by chance.
"""

from __future__ import annotations

import errno
import os
import random
import re
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from test_trainer import SINGLE, make_experiment
from tiny_model import TinyModel

from opuslm import dump as dump_module
from opuslm.bin import tokenize_audio, tokenize_text
from opuslm.data.ark import ScpTable
from opuslm.train import checkpoint as ckpt
from opuslm.train.config import load_config
from opuslm.train.report import JsonlLog, read_log
from opuslm.train.trainer import Trainer
from opuslm.vocab import TokenList
from robustness.helpers import write_lines

KILL_SEED = 9
STEPS = 12
SAVE_INTERVAL = 3  # saves at steps 3, 6, 9, 12; keep_last_n 2 prunes at 9 and 12
SAVES = STEPS // SAVE_INTERVAL
CHILD_TIMEOUT_S = 120


# One thread (tiny models, bit-identical kernels); determinism restored (test/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread_and_restored_determinism")


# ---------------------------------------------------------------------------------- killing
def sigkill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def run_killed(target: Callable[[], object]) -> None:
    """Run `target` in a forked child and assert that it died of SIGKILL (the planted point).

    The child never returns into pytest: it leaves through the kill, or os._exit when the kill
    point was not reached (the assertion then fails).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        try:
            target()
        except BaseException:
            traceback.print_exc()
        os._exit(3)
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while (status := os.waitpid(pid, os.WNOHANG)[1]) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    if status == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail(f"the forked run did not finish within {CHILD_TIMEOUT_S} s")
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
        f"the child exited with status {os.waitstatus_to_exitcode(status)} before the kill point"
    )


def on_call(number: int, function: Callable, instead: Callable) -> Callable:
    """`function`, except that its `number`-th call (1-based) goes to `instead`."""
    calls = {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        return (instead if calls["n"] == number else function)(*args, **kwargs)

    return wrapped


def killed(*args, **kwargs) -> None:
    sigkill()


def half_written(writer: Callable, then: Callable[[], None]) -> Callable:
    """A writer called as (data, path) that writes half of the real file, then calls `then`."""

    def write(data, path, *args, **kwargs):
        writer(data, path, *args, **kwargs)
        Path(path).write_bytes(Path(path).read_bytes()[: Path(path).stat().st_size // 2])
        then()

    return write


# ---------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(config, output dir of the uninterrupted reference run): tiny Llama, 12 steps."""
    root = tmp_path_factory.mktemp("faults_training")
    config = make_experiment(
        root,
        schedule={"max_steps": STEPS},
        train={"save_interval": SAVE_INTERVAL, "valid_interval": 100, "keep_last_n": 2},
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        Trainer(load_config(config), root / "reference", SINGLE).run()
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)
    return config, root / "reference"


def kill_between_steps(step: int) -> None:
    Trainer.train_step = on_call(step, Trainer.train_step, killed)


def kill_in_weights_write(save: int) -> None:
    writer = ckpt.save_weights
    ckpt.save_weights = on_call(save, writer, half_written(writer, sigkill))


def kill_in_train_state_write(save: int) -> None:
    torch.save = on_call(save, torch.save, half_written(torch.save, sigkill))


def kill_before_rename(save: int) -> None:
    final = re.compile(rf"{ckpt.STEP_PREFIX}\d+")
    real_replace, count = os.replace, {"n": 0}

    def replace(src, dst):
        if final.fullmatch(Path(dst).name):
            count["n"] += 1
            if count["n"] == save:
                sigkill()
        real_replace(src, dst)

    os.replace = replace


def kill_before_latest(save: int) -> None:
    real_write, count = ckpt.write_text_atomic, {"n": 0}

    def write(path, text):
        if Path(path).name == ckpt.LATEST:
            count["n"] += 1
            if count["n"] == save:
                sigkill()
        real_write(path, text)

    ckpt.write_text_atomic = write


def kill_in_pruning(prune: int) -> None:
    """Kill after the first file of an old checkpoint is deleted (`prune`-th directory)."""
    real_rmtree, count = shutil.rmtree, {"n": 0}

    def rmtree(path, *args, **kwargs):
        if Path(path).name.startswith(ckpt.STEP_PREFIX):
            count["n"] += 1
            if count["n"] == prune:
                (Path(path) / ckpt.WEIGHTS).unlink()
                sigkill()
        real_rmtree(path, *args, **kwargs)

    shutil.rmtree = rmtree


def kill_in_log_line(record: int) -> None:
    """A torn last log line: half of the `record`-th JSON line reaches the file, then the kill
    (what a crash with unflushed buffers or a full disk leaves)."""
    real_write, count = JsonlLog.write, {"n": 0}

    def write(self, entry):
        count["n"] += 1
        if count["n"] == record:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(str(entry)[:20])
            sigkill()
        real_write(self, entry)

    JsonlLog.write = write


draw = random.Random(KILL_SEED)
# (name, plant the kill, the drawn call number at which it fires)
TRAINING_KILLS = [
    ("between steps", kill_between_steps, draw.randint(2, STEPS)),
    ("inside the weights write", kill_in_weights_write, draw.randint(1, SAVES)),
    ("inside the training-state write", kill_in_train_state_write, draw.randint(1, SAVES)),
    ("before the step directory rename", kill_before_rename, draw.randint(1, SAVES)),
    ("before the latest pointer update", kill_before_latest, draw.randint(1, SAVES)),
    ("while pruning an old checkpoint", kill_in_pruning, draw.randint(1, 2)),
    ("inside a log line", kill_in_log_line, draw.randint(2, STEPS)),
]


def compare_runs(reference: Path, run: Path) -> int:
    """Assert that `run` ended exactly as `reference`; return the number of bytes compared."""
    final = f"{ckpt.STEP_PREFIX}{STEPS}"
    names = sorted(p.name for p in (reference / "checkpoints").iterdir())
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == names  # no temp dir left
    compared = 0
    expected = ckpt.load_weights(reference / "checkpoints" / final / ckpt.WEIGHTS)
    got = ckpt.load_weights(run / "checkpoints" / final / ckpt.WEIGHTS)
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, got[name]), name
        compared += tensor.numel() * tensor.element_size()
    expected_state = ckpt.load_train_state(reference / "checkpoints" / final)
    got_state = ckpt.load_train_state(run / "checkpoints" / final)
    for key in ("step", "sampler", "bad_steps_total", "scheduler"):
        assert got_state[key] == expected_state[key], key
    for index, moments in expected_state["optimizer"]["state"].items():
        for key, tensor in moments.items():
            assert torch.equal(tensor, got_state["optimizer"]["state"][index][key])
            compared += tensor.numel() * tensor.element_size()
    reference_log = [r for r in read_log(reference / "train.log.jsonl") if r["kind"] == "train"]
    log = [r for r in read_log(run / "train.log.jsonl") if r["kind"] == "train"]
    assert [r["step"] for r in log] == list(range(1, STEPS + 1))  # nothing lost or duplicated
    assert [r["loss"] for r in log] == [r["loss"] for r in reference_log]
    return compared


@pytest.mark.parametrize(
    "name, plant, call", TRAINING_KILLS, ids=[f"{n} (call {c})" for n, _, c in TRAINING_KILLS]
)
def test_training_killed_then_resumed_is_bit_identical(
    experiment, tmp_path: Path, name: str, plant: Callable[[int], None], call: int
):
    config, reference = experiment
    run = tmp_path / "run"

    def killed_run() -> None:
        plant(call)
        Trainer(load_config(config), run, SINGLE).run()

    run_killed(killed_run)
    assert not (run / "checkpoints" / f"{ckpt.STEP_PREFIX}{STEPS}").exists()
    summary = Trainer(load_config(config, ["--resume"]), run, SINGLE).run()
    assert summary.step == STEPS
    assert compare_runs(reference, run) > 50_000


# -------------------------------------------------------------------------------- full disk
def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


TOKEN_LIST = TokenList.build(["a", "b"], num_semantic=2, num_codebooks=1, codebook_size=2)


def save(root: Path, step: int, value: float) -> Path:
    weights = {"w": torch.full((64, 64), value)}
    state = {"step": step, "optimizer": {"state": {}, "param_groups": []}}
    return ckpt.save_checkpoint(root, step, weights, state, {"model": {}}, TOKEN_LIST)


@pytest.mark.parametrize("where", ["weights", "training state", "latest pointer"])
def test_full_disk_during_a_checkpoint_write_keeps_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
):
    save(tmp_path, 10, 1.0)
    if where == "weights":
        monkeypatch.setattr(ckpt, "save_weights", half_written(ckpt.save_weights, disk_full))
    elif where == "training state":
        monkeypatch.setattr(torch, "save", half_written(torch.save, disk_full))
    else:
        monkeypatch.setattr(ckpt, "write_text_atomic", disk_full)
    with pytest.raises(OSError) as error:
        save(tmp_path, 20, 2.0)
    assert error.value.errno == errno.ENOSPC
    monkeypatch.undo()
    latest = ckpt.latest_checkpoint(tmp_path)
    assert latest == tmp_path / "step_10"
    assert torch.equal(ckpt.load_weights(latest / ckpt.WEIGHTS)["w"], torch.full((64, 64), 1.0))
    assert ckpt.load_train_state(latest)["step"] == 10
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
    assert leftovers == []
    # After the pointer failed, step_20 itself is complete: it is used once it is saved again.
    assert (tmp_path / "step_20").exists() == (where == "latest pointer")


@pytest.mark.parametrize("where", ["weights write", "log line"])
def test_training_stopped_by_a_full_disk_resumes_bit_identical(
    experiment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
):
    config, reference = experiment
    run = tmp_path / "run"
    if where == "weights write":
        full_disk_write = half_written(ckpt.save_weights, disk_full)
        monkeypatch.setattr(ckpt, "save_weights", on_call(2, ckpt.save_weights, full_disk_write))
    else:
        real_write = JsonlLog.write

        def torn_write(self, entry):
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(str(entry)[:20])
            disk_full()

        monkeypatch.setattr(JsonlLog, "write", on_call(5, real_write, torn_write))
    with pytest.raises(OSError, match="No space left on device"):
        Trainer(load_config(config), run, SINGLE).run()
    monkeypatch.undo()
    Trainer(load_config(config, ["--resume"]), run, SINGLE).run()
    compare_runs(reference, run)


# ------------------------------------------------------------------------ non-finite losses
@pytest.mark.parametrize("kind", ["inf loss", "NaN gradient"])
def test_a_non_finite_step_is_skipped_counted_and_remembered(experiment, tmp_path, caplog, kind):
    config, _ = experiment
    trainer = Trainer(load_config(config, ["schedule.max_steps=4"]), tmp_path / "exp", SINGLE)
    real_forward = trainer.model.forward

    def non_finite_forward(*args):
        output = real_forward(*args)
        if kind == "inf loss":
            output.loss_sum = output.loss_sum * float("inf")
        else:  # a finite loss whose backward pass gives NaN gradients
            output.loss_sum.register_hook(lambda grad: grad * float("nan"))
        return output

    trainer.model.forward = on_call(2, real_forward, non_finite_forward)
    summary = trainer.run()
    assert (summary.step, summary.bad_steps, summary.position) == (4, 1, 5)
    skipped = [r.getMessage() for r in caplog.records if "non-finite" in r.getMessage()]
    assert len(skipped) == 1
    assert "step 2 skipped (1 in a row, 1 in the run; utterances spk" in skipped[0]
    log = [r for r in read_log(tmp_path / "exp" / "train.log.jsonl") if r["kind"] == "train"]
    assert [r["bad_steps_total"] for r in log] == [0, 1, 1, 1]
    state = ckpt.load_train_state(tmp_path / "exp" / "checkpoints" / "step_4")
    assert state["bad_steps_total"] == 1  # a resumed run keeps counting from here


# ------------------------------------------------------------------------------ token dumps
WORDS = "the cat sat on mat a dog ran in park we like to read good books".split()


@pytest.fixture(scope="module")
def transcripts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Kaldi text file of 40 utterances made of the tiny tokenizer's words."""
    rng = np.random.default_rng(KILL_SEED)
    path = tmp_path_factory.mktemp("faults_text") / "text"
    lines = [f"utt{i:03d} {' '.join(rng.choice(WORDS, rng.integers(2, 8)))}" for i in range(40)]
    return write_lines(path, lines)


def dump_files(directory: Path) -> dict[str, bytes]:
    """Every file of a finished dump, scp paths made relative so two directories compare."""
    files = {}
    for path in sorted(directory.iterdir()):
        if path.is_file():
            files[path.name] = path.read_bytes().replace(str(directory).encode(), b"<dir>")
    return files


def text_dump(text: Path, tiny: TinyModel, output: Path) -> None:
    """Two shards as two jobs, then the merge (as `--nj 2` does through the job runner)."""
    argv = ["--text", str(text), "--tokenizer_dir", str(tiny.text_tokenizer_dir), "--nj", "2"]
    argv += ["--output_dir", str(output)]
    for job in ("1", "2"):
        assert tokenize_text.main([*argv, "--job", job]) == 0
    assert tokenize_text.main(argv) == 0


def kill_in_shard(add: int) -> None:
    dump_module.ShardWriter.add = on_call(add, dump_module.ShardWriter.add, killed)


def kill_on_write(write: int) -> None:
    """Kill before the `write`-th atomic text write of the dumper: per shard its scp, lengths
    and .done, then the merged lengths, scp and .done."""
    dump_module.write_text_atomic = on_call(write, dump_module.write_text_atomic, killed)


def kill_before_merge(_: int) -> None:
    dump_module.merge_shards = on_call(1, dump_module.merge_shards, killed)


# (name, plant the kill, drawn call number); the text dump writes 40 utterances in 2 shards and
# 3 files per shard + 3 merged files.
DUMP_KILLS = [
    ("inside an ark", kill_in_shard, draw.randint(1, 40)),
    ("between an ark and its scp", kill_on_write, 1),
    ("between a shard's files and its .done", kill_on_write, 3),
    ("inside the merge", kill_on_write, draw.randint(7, 8)),
    ("after the merge, before its .done", kill_on_write, 9),
    ("between the shards and the merge", kill_before_merge, 1),
]


@pytest.fixture(scope="module")
def reference_text_dump(tiny: TinyModel, transcripts: Path, tmp_path_factory) -> dict[str, bytes]:
    output = tmp_path_factory.mktemp("reference_text_dump") / "dump"
    text_dump(transcripts, tiny, output)
    return dump_files(output)


@pytest.mark.parametrize(
    "name, plant, call", DUMP_KILLS, ids=[f"{n} (call {c})" for n, _, c in DUMP_KILLS]
)
def test_text_dump_killed_then_rerun_is_byte_identical(
    tiny, transcripts, reference_text_dump, tmp_path, name, plant, call
):
    output = tmp_path / "dump"

    def killed_dump() -> None:
        plant(call)
        text_dump(transcripts, tiny, output)

    run_killed(killed_dump)
    assert not (output / "text.done").exists()
    text_dump(transcripts, tiny, output)
    assert dump_files(output) == reference_text_dump
    assert len(ScpTable(output / "text.scp")) == 40  # every utterance once


def test_text_dump_after_a_full_disk_is_byte_identical(
    tiny, transcripts, reference_text_dump, tmp_path, monkeypatch, caplog
):
    output = tmp_path / "dump"
    monkeypatch.setattr(
        dump_module.ShardWriter, "add", on_call(7, dump_module.ShardWriter.add, disk_full)
    )
    argv = ["--text", str(transcripts), "--tokenizer_dir", str(tiny.text_tokenizer_dir)]
    argv += ["--nj", "2", "--output_dir", str(output), "--job", "1"]
    assert tokenize_text.main(argv) == 1
    assert "No space left on device" in caplog.text
    assert sorted(p.name for p in output.iterdir()) == []  # no partial shard is kept
    monkeypatch.undo()
    text_dump(transcripts, tiny, output)
    assert dump_files(output) == reference_text_dump


def audio_dump(data: Path, tiny: TinyModel, output: Path) -> None:
    argv = ["--data_dir", str(data), "--semantic_dir", str(tiny.semantic_dir)]
    argv += ["--codec_dir", str(tiny.codec_dir), "--output_dir", str(output), "--batch_size", "2"]
    assert tokenize_audio.main(argv) == 0


AUDIO_KILLS = [
    ("inside an ark", kill_in_shard, draw.randint(1, 6)),
    ("between an ark and its scp", kill_on_write, 1),
    ("inside the merge", kill_on_write, draw.randint(4, 5)),
]


@pytest.mark.parametrize(
    "name, plant, call", AUDIO_KILLS, ids=[f"{n} (call {c})" for n, _, c in AUDIO_KILLS]
)
def test_audio_dump_killed_then_rerun_is_byte_identical(
    tiny, tmp_path, monkeypatch, name, plant, call
):
    # One thread (the dumper uses cpu_count // nj): a forked child hangs in an OpenMP thread
    # team that its parent started.
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    data = tmp_path / "data"
    data.mkdir()
    wavs = list(tiny.wavs.values())
    write_lines(data / "wav.scp", [f"utt{i} {wavs[i % len(wavs)]}" for i in range(6)])
    audio_dump(data, tiny, tmp_path / "reference")

    def killed_dump() -> None:
        plant(call)
        audio_dump(data, tiny, tmp_path / "run")

    run_killed(killed_dump)
    audio_dump(data, tiny, tmp_path / "run")
    assert dump_files(tmp_path / "run") == dump_files(tmp_path / "reference")
