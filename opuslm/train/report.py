"""Training reports: metric sums and throughput, the JSON-lines log (`train.log.jsonl`) and the
loss / accuracy plot (PNG).

Each log line is one JSON object with `"kind": "train"` or `"kind": "valid"`, the optimizer `step`
and flat metric names: `loss`, `acc`, `lr`, `frames_per_s`, `loss/<task>`, `loss/stream<s>`,
`acc/<modality>`, ... (validation: the same names per task).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib
import torch

matplotlib.use("Agg")  # no display on training machines
import matplotlib.pyplot as plt  # noqa: E402

from opuslm.data.dataset import Batch  # noqa: E402
from opuslm.fileio import atomic_path, write_text_atomic  # noqa: E402
from opuslm.model.lm import LMOutput  # noqa: E402
from opuslm.train.distributed import all_reduce_sum  # noqa: E402

logger = logging.getLogger(__name__)


class MetricSums:
    """Sums of loss / count / correct statistics, reduced over ranks on demand."""

    def __init__(self, tasks: list[str]) -> None:
        self.tasks = tasks
        self.values: dict[str, float] = defaultdict(float)

    def add(self, output: LMOutput, batch: Batch) -> None:
        for key, value in output.stats.items():
            self.values[key] += value
        self.values["loss_sum"] += float(output.loss_sum.detach())
        self.values["frames"] += float(output.num_target_frames)
        example_loss = output.example_loss_sum.detach().cpu().tolist()
        example_frames = batch.loss_mask.sum(1).tolist()
        for task, loss, frames in zip(batch.tasks, example_loss, example_frames):
            self.values[f"task_loss_sum/{task}"] += loss
            self.values[f"task_frames/{task}"] += frames

    def reduced(self, device: torch.device) -> dict[str, float]:
        """Sums over all ranks (collective: every rank calls it)."""
        # Same keys on every rank: LMOutput.stats has fixed names and every task gets its keys.
        task_keys = {f"task_{kind}/{t}" for t in self.tasks for kind in ("loss_sum", "frames")}
        keys = sorted(set(self.values) | task_keys)
        tensor = torch.tensor([self.values.get(k, 0.0) for k in keys], dtype=torch.float64)
        tensor = all_reduce_sum(tensor.to(device)).cpu()
        return dict(zip(keys, tensor.tolist()))

    def clear(self) -> None:
        self.values.clear()


def summarise(sums: dict[str, float]) -> dict[str, float]:
    """Sums -> per-frame loss, accuracies and per-stream / per-modality / per-task metrics."""
    out = {"loss": sums.get("loss_sum", 0.0) / max(sums.get("frames", 0.0), 1.0)}
    streams = sorted({k.split("/", 1)[1] for k in sums if k.startswith("count/stream")})
    total_correct = sum(sums[f"correct/{s}"] for s in streams)
    total_count = sum(sums[f"count/{s}"] for s in streams)
    out["acc"] = total_correct / max(total_count, 1.0)
    for key, count in sums.items():
        if key.startswith("count/") and count > 0:
            name = key.split("/", 1)[1]
            out[f"ce/{name}"] = sums[f"loss_sum/{name}"] / count
            if f"correct/{name}" in sums:  # the CTC loss has no accuracy
                out[f"acc/{name}"] = sums[f"correct/{name}"] / count
        if key.startswith("task_frames/") and count > 0:
            task = key.split("/", 1)[1]
            out[f"loss/{task}"] = sums[f"task_loss_sum/{task}"] / count
    return out


class Throughput:
    """Training positions per second (validation, logging and checkpoints excluded) and the time
    spent waiting for data, in total and per log interval."""

    def __init__(self) -> None:
        self.total_positions = 0
        self.total_seconds = 0.0
        self.data_wait = 0.0
        self.interval_positions = 0
        self.interval_seconds = 0.0
        self.interval_steps = 0
        self.interval_wait = 0.0
        self._since = time.perf_counter()

    @contextmanager
    def waiting(self) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.data_wait += time.perf_counter() - start
        self.interval_wait += time.perf_counter() - start

    @contextmanager
    def paused(self) -> Iterator[None]:
        yield
        self._since = time.perf_counter()

    def step(self, positions: int) -> None:
        now = time.perf_counter()
        self.total_seconds += now - self._since
        self.interval_seconds += now - self._since
        self._since = now
        self.total_positions += positions
        self.interval_positions += positions
        self.interval_steps += 1

    def take_interval(self) -> tuple[int, int, float, float]:
        """(positions, steps, seconds, seconds waiting for data) since the last call."""
        out = (
            self.interval_positions,
            self.interval_steps,
            self.interval_seconds,
            self.interval_wait,
        )
        self.interval_positions, self.interval_steps = 0, 0
        self.interval_seconds, self.interval_wait = 0.0, 0.0
        return out


class JsonlLog:
    """Append-only JSON-lines log, flushed after every record so a killed run keeps its history."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop records past `step` (a resumed run rewrites the steps after its checkpoint)."""
        if not self.path.exists():
            return
        keep = [r for r in read_log(self.path) if r.get("step", 0) <= step]
        write_text_atomic(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))


def read_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The log's records. A torn last line (a write cut short by a crash or a full disk) is
    skipped with a warning, so the run can resume (`truncate_after` then rewrites the file)."""
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if number == len(lines) and not line.endswith("\n"):
                logger.warning("%s:%d: skipping a torn last line: %.60r", path, number, line)
                break
            raise ValueError(f"{path}:{number}: not a JSON log record ({e})") from None
    return records


def plot_curves(log_path: str | os.PathLike, png_path: str | os.PathLike) -> None:
    """Loss (left) and accuracy (right) against step: train, and valid per task; atomic write."""
    records = read_log(log_path)
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    train = [r for r in records if r.get("kind") == "train"]
    if train:
        steps = [r["step"] for r in train]
        loss_ax.plot(steps, [r["loss"] for r in train], label="train", lw=1)
        acc_ax.plot(steps, [r["acc"] for r in train], label="train", lw=1)
    valid = [r for r in records if r.get("kind") == "valid"]
    for task in sorted({r["task"] for r in valid}):
        rows = [r for r in valid if r["task"] == task]
        steps = [r["step"] for r in rows]
        loss_ax.plot(steps, [r["loss"] for r in rows], "o-", label=f"valid {task}")
        acc_ax.plot(steps, [r["acc"] for r in rows], "o-", label=f"valid {task}")
    loss_ax.set(xlabel="step", ylabel="loss (weighted CE per target frame)", title="loss")
    acc_ax.set(xlabel="step", ylabel="token accuracy", title="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        # A figure, redrawn at every validation: not worth an fsync.
        with atomic_path(png_path, durable=False) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)
