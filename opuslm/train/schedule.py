"""Learning-rate schedules as `LambdaLR` factors of the optimizer step (0-based).

Warmup is linear, reaching the peak at step `warmup_steps - 1`. After warmup, `progress` runs
from 0 at step `warmup_steps` to exactly 1 at the LAST step `max_steps - 1`:

    constant : 1
    cosine   : floor + (1 - floor) * (1 + cos(pi * progress)) / 2   (pre-training, floor e.g. 0.3)
    linear   : 1 - progress                                          (annealing: the last step is 0)

The factors are small dataclasses rather than lambdas so that `LambdaLR.state_dict()` stores their
fields (plain numbers) with the checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SCHEDULES = ("constant", "cosine", "linear")


@dataclass
class LRFactor:
    """lr multiplier at a step: linear warmup, then `kind` (see the module docstring)."""

    kind: str
    warmup_steps: int
    max_steps: int
    floor_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.kind!r}; choose one of {SCHEDULES}")
        if self.warmup_steps < 0 or self.max_steps <= self.warmup_steps:
            raise ValueError(
                f"schedule needs 0 <= warmup_steps < max_steps, got warmup_steps="
                f"{self.warmup_steps}, max_steps={self.max_steps}"
            )
        if not 0.0 <= self.floor_ratio <= 1.0:
            raise ValueError(f"floor_ratio must be in [0, 1], got {self.floor_ratio}")

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return 1.0
        decay_steps = max(1, self.max_steps - 1 - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        if self.kind == "linear":
            return 1.0 - progress
        return self.floor_ratio + (1.0 - self.floor_ratio) * 0.5 * (
            1.0 + math.cos(math.pi * progress)
        )


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    kind: str,
    warmup_steps: int,
    max_steps: int,
    floor_ratio: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule named by the config (`schedule.type`: constant / cosine / linear)."""
    factor = LRFactor(kind, warmup_steps, max_steps, floor_ratio if kind == "cosine" else 0.0)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def warmup_constant(
    optimizer: torch.optim.Optimizer, warmup_steps: int, max_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return build_scheduler(optimizer, "constant", warmup_steps, max_steps)


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_steps: int, max_steps: int, floor_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    return build_scheduler(optimizer, "cosine", warmup_steps, max_steps, floor_ratio)


def linear_decay(
    optimizer: torch.optim.Optimizer, warmup_steps: int, max_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return build_scheduler(optimizer, "linear", warmup_steps, max_steps)
