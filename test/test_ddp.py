"""Two gloo processes on CPU (DDP; FSDP2 `fully_shard` as a slow check) follow the same loss curve
as one process on the same global batch (the loss is normalised once, by the global number of target
frames)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from test_trainer import SINGLE, SUBPROCESS_ENV, make_experiment, train_command

from opuslm.train.config import load_config
from opuslm.train.report import read_log
from opuslm.train.trainer import Trainer


def curves(output_dir) -> tuple[list[float], list[float]]:
    """Loss and pre-clipping gradient norm per step (the norm also checks the gradient's scale,
    which AdamW and clipping would hide from the loss curve)."""
    records = [r for r in read_log(output_dir / "train.log.jsonl") if r["kind"] == "train"]
    assert [r["step"] for r in records] == list(range(1, 21))
    return [r["loss"] for r in records], [r["grad_norm"] for r in records]


@pytest.mark.parametrize(
    "parallel", ["ddp", pytest.param("fsdp", marks=pytest.mark.slow)], ids=["ddp", "fsdp"]
)
def test_two_processes_match_one_process(tmp_path, parallel):
    config = make_experiment(
        tmp_path,
        schedule={"max_steps": 20},
        # accum_grad 2: the normalisation spans micro-batches as well as ranks.
        optim={"accum_grad": 2},
        train={"save_interval": 100, "valid_interval": 100, "parallel": parallel},
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        Trainer(load_config(config), tmp_path / "one", SINGLE).run()
    finally:
        torch.set_num_threads(threads)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    two = subprocess.run(
        torchrun + train_command(config, tmp_path / "two")[1:],
        env=SUBPROCESS_ENV,
        capture_output=True,
        text=True,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    (one_loss, one_norm), (two_loss, two_norm) = curves(tmp_path / "one"), curves(tmp_path / "two")
    for step in range(20):
        assert abs(one_loss[step] - two_loss[step]) / one_loss[step] < 1e-4, (
            step,
            one_loss,
            two_loss,
        )
        assert abs(one_norm[step] - two_norm[step]) / one_norm[step] < 1e-4, (
            step,
            one_norm,
            two_norm,
        )
    assert one_loss[-1] < one_loss[0]  # it trained
