"""Learning-rate schedules at key steps, and their state in a checkpoint."""

from __future__ import annotations

import io
import math

import pytest
import torch

from opuslm.train.schedule import build_scheduler, linear_decay, warmup_constant, warmup_cosine


def lrs(scheduler, steps):
    optimizer = scheduler.optimizer
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def optimizer(lr=2.0):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_warmup_constant():
    values = lrs(warmup_constant(optimizer(), 4, 20), 20)
    assert values[:5] == [0.5, 1.0, 1.5, 2.0, 2.0]
    assert values[-1] == 2.0


def test_warmup_cosine_to_floor():
    values = lrs(warmup_cosine(optimizer(), 10, 110, 0.3), 110)
    assert values[9] == 2.0  # peak at the end of warmup
    assert values[10] == 2.0  # cosine starts at the peak
    progress = 50 / 99  # step 60 of the decay that runs from step 10 to the last step, 109
    assert values[60] == pytest.approx(2.0 * (0.3 + 0.7 * 0.5 * (1 + math.cos(math.pi * progress))))
    assert values[-1] == pytest.approx(0.6)  # floor ratio 0.3 at the last step
    assert all(a >= b for a, b in zip(values[10:], values[11:]))


def test_linear_decay_reaches_exactly_zero_at_the_last_step():
    values = lrs(linear_decay(optimizer(), 0, 50), 50)
    assert values[0] == 2.0
    assert values[25] == pytest.approx(2.0 * (1 - 25 / 49))
    assert values[-1] == 0.0


def test_bad_settings_are_errors():
    with pytest.raises(ValueError, match="unknown schedule 'step'"):
        build_scheduler(optimizer(), "step", 0, 10)
    with pytest.raises(ValueError, match="warmup_steps < max_steps"):
        build_scheduler(optimizer(), "cosine", 10, 10)


def test_state_round_trip_through_weights_only_load():
    scheduler = warmup_cosine(optimizer(), 5, 40, 0.3)
    lrs(scheduler, 17)
    buffer = io.BytesIO()
    torch.save({"opt": scheduler.optimizer.state_dict(), "sched": scheduler.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    restored = warmup_cosine(optimizer(), 1, 2, 0.0)  # different settings: the state wins
    restored.optimizer.load_state_dict(state["opt"])
    restored.load_state_dict(state["sched"])
    assert lrs(restored, 23) == lrs(scheduler, 23)
