"""Training reports: the JSON-lines log (`train.log.jsonl`) and the loss / accuracy plot (PNG).

Each log line is one JSON object with `"kind": "train"` or `"kind": "valid"`, the optimizer `step`
and flat metric names: `loss`, `acc`, `lr`, `frames_per_s`, `loss/<task>`, `loss/stream<s>`,
`acc/<modality>`, ... (validation: the same names per task).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on training machines
import matplotlib.pyplot as plt  # noqa: E402


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
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in keep)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def read_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                records.append(json.loads(line))
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
    png_path = Path(png_path)
    fd, tmp = tempfile.mkstemp(dir=png_path.parent, prefix=f".{png_path.name}", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, png_path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)
