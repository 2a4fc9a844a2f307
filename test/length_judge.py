"""A judge for the worker-pool tests (test_judge_parallel.py), in a module of its own.

A judge pool's forkserver preloads the judge's module: this one imports nothing heavy, where the
test module imports torch and transformers through test_judges (5 s per pool)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from opuslm.eval.judges import AsrJudge


class LengthJudge(AsrJudge):
    """Answers `<length> <pid>` after a pause that is longest for the shortest audio, so the
    workers finish out of order; raises on audio of length `fail_length`.

    meet: a directory where each process's first call waits (up to 30 s) until `processes`
    processes have arrived, so that every worker of a pool gets work, however fast the first
    one starts.
    """

    name = "length"

    def __init__(self, fail_length: int = -1, meet: Path | None = None, processes: int = 2):
        self.fail_length = fail_length
        self.meet, self.processes = meet, processes

    def transcribe(self, wav: np.ndarray, sample_rate: int) -> str:
        if len(wav) == self.fail_length:
            raise RuntimeError("model exploded")
        if self.meet is not None and not (self.meet / str(os.getpid())).exists():
            (self.meet / str(os.getpid())).touch()
            deadline = time.monotonic() + 30
            while len(list(self.meet.iterdir())) < self.processes and time.monotonic() < deadline:
                time.sleep(0.01)
        time.sleep(0.2 * 1000 / len(wav))
        return f"{len(wav)} {os.getpid()}"
