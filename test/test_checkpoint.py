"""Checkpoint directories: atomic writes, latest pointer, pruning, weights-only load, averaging."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from opuslm.bin import average_checkpoints
from opuslm.train import checkpoint as ckpt
from opuslm.vocab import TokenList

TOKEN_LIST = TokenList.build(["a", "b"], num_semantic=2, num_codebooks=1, codebook_size=2)


def weights(value: float) -> dict[str, torch.Tensor]:
    embedding = torch.full((3, 2), value)
    return {
        "embed.weight": embedding,
        "head.weight": embedding,  # tied: the same tensor under two names
        "norm.bias": torch.tensor([value, -value], dtype=torch.float64),
        "counter": torch.tensor([int(value)]),
    }


def save(root, step, value=1.0, keep=None):
    state = {"step": step, "rng": ckpt.rng_state(), "optimizer": {"state": {}, "param_groups": []}}
    return ckpt.save_checkpoint(
        root, step, weights(value), state, {"model": {"x": 1}}, TOKEN_LIST, keep_last_n=keep
    )


def test_round_trip_keeps_tied_weights_and_loads_weights_only(tmp_path):
    directory = save(tmp_path, 5, value=2.5)
    assert ckpt.latest_checkpoint(tmp_path) == directory == tmp_path / "step_5"
    loaded = ckpt.load_weights(directory / ckpt.WEIGHTS)
    assert set(loaded) == set(weights(0))
    assert loaded["head.weight"] is loaded["embed.weight"]
    assert torch.equal(loaded["norm.bias"], torch.tensor([2.5, -2.5], dtype=torch.float64))
    assert ckpt.load_train_state(directory)["step"] == 5  # torch.load(weights_only=True)
    assert ckpt.load_checkpoint_config(directory) == {"model": {"x": 1}}
    ckpt.require_token_list(directory, TOKEN_LIST)


def test_rng_state_round_trip(tmp_path):
    directory = save(tmp_path, 1)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    ckpt.set_rng_state(ckpt.load_train_state(directory)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_crash_before_rename_leaves_previous_checkpoint(tmp_path, monkeypatch):
    save(tmp_path, 10, value=1.0)
    real_replace = os.replace

    def crash(src, dst):
        if str(dst).endswith("step_20"):
            raise KeyboardInterrupt("killed between temp write and rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path, 20, value=9.0)
    monkeypatch.undo()
    assert not (tmp_path / "step_20").exists()
    assert not list(tmp_path.glob(".step_*"))  # the temp dir is cleaned up
    latest = ckpt.latest_checkpoint(tmp_path)
    assert latest == tmp_path / "step_10"
    assert ckpt.load_weights(latest / ckpt.WEIGHTS)["embed.weight"][0, 0] == 1.0


def test_keep_last_n_and_resolve(tmp_path):
    for step in (1, 2, 3, 4):
        save(tmp_path / "checkpoints", step, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "checkpoints")] == ["step_3", "step_4"]
    assert ckpt.resolve_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step_4"
    assert ckpt.resolve_checkpoint(tmp_path / "checkpoints" / "step_3").name == "step_3"
    with pytest.raises(ckpt.CheckpointError, match="not a checkpoint directory"):
        ckpt.resolve_checkpoint(tmp_path / "nowhere")


def test_average_checkpoints_is_exact(tmp_path):
    dirs = [
        save(tmp_path / "ck", step, value=value) for step, value in ((1, 1.0), (2, 2.0), (3, 4.0))
    ]
    out = tmp_path / "avg"
    argv = ["--checkpoints", *map(str, dirs), "--output", str(out)]
    assert average_checkpoints.main(argv) == 0
    averaged = ckpt.load_weights(out / ckpt.WEIGHTS)
    expected = torch.tensor(7.0 / 3.0, dtype=torch.float64)
    assert torch.equal(averaged["embed.weight"], expected.float().expand(3, 2))
    assert averaged["head.weight"] is averaged["embed.weight"]
    assert torch.equal(averaged["norm.bias"], torch.stack([expected, -expected]))
    assert torch.equal(averaged["counter"], torch.tensor([4]))  # non-float: the last checkpoint's
    assert (out / ckpt.TOKEN_LIST).exists() and (out / ckpt.CONFIG).exists()


def test_saving_a_step_again_replaces_it_and_a_lost_target_falls_back(tmp_path):
    save(tmp_path, 1, value=1.0)
    save(tmp_path, 2, value=2.0)
    save(tmp_path, 2, value=3.0)
    assert ckpt.load_weights(tmp_path / "step_2" / ckpt.WEIGHTS)["norm.bias"][0] == 3.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_1", "step_2"]
    # A crash between moving the old step_2 aside and renaming the new one in.
    (tmp_path / "step_2").rename(tmp_path / ".step_2.x.tmp.old")
    assert ckpt.latest_checkpoint(tmp_path) == tmp_path / "step_1"


def test_step_directories_without_a_pointer_are_found(tmp_path):
    """A step directory copied in by hand (or a crash before the first pointer): --resume takes
    the newest complete one instead of starting a new run beside it."""
    assert ckpt.latest_checkpoint(tmp_path) is None
    for step in (1000, 250):
        save(tmp_path / "saved", step)
        (tmp_path / "saved" / f"step_{step}").rename(tmp_path / f"step_{step}")
    (tmp_path / "step_1250").mkdir()  # incomplete: no weights
    assert not (tmp_path / ckpt.LATEST).exists()
    assert ckpt.latest_checkpoint(tmp_path) == tmp_path / "step_1000"
