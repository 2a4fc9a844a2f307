"""bf16 autocast vs fp32 training steps on this machine (`train.precision`).

ours     : the MultiStreamLM loss + backward + AdamW step under torch.autocast(bfloat16), as the
           trainer runs it with `train.precision: bf16` (weights and optimizer state stay fp32).
baseline : the same step in fp32 (`train.precision: fp32`, the default).
Both: copies of one model (the mini recipe's body: hidden 256, 4 layers, 5 streams), the same
batches from the trainer's own data pipeline, run one after the other on each batch in alternating
order (side by side, so a drifting machine load hits both); positions per second over the second
half of the steps (warm-up excluded). The losses of the last step show that the bf16 copy trains
the same model: both copies start from the same weights and see the same batches.

    .venv/bin/python benchmarks/bench_precision.py [--steps 40] [--threads 2]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_trainer import (  # noqa: E402
    BareStep,
    demo_step_trainer,
    side_by_side_args,
    time_side_by_side,
)

from opuslm.train.trainer import cpu_has_bf16_kernels  # noqa: E402


def main() -> None:
    args, device = side_by_side_args(__doc__)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = demo_step_trainer(Path(tmp), args.steps, args.batch_bins, device)
        steps = {"fp32": BareStep(trainer.model, device)}
        steps["bf16"] = BareStep(trainer.model, device, torch.autocast(device.type, torch.bfloat16))
        time_side_by_side(trainer, steps)
    fp32, bf16 = steps["fp32"], steps["bf16"]
    ours, baseline = bf16.positions / bf16.seconds, fp32.positions / fp32.seconds
    kernels = "bf16 kernels" if device.type == "cuda" or cpu_has_bf16_kernels() else "no bf16"
    print(
        "| benchmark | setting | bf16 positions/s | fp32 positions/s | ratio | "
        "loss at the last step bf16 / fp32 |"
    )
    print("|---|---|---|---|---|---|")
    print(
        f"| bench_precision | {device.type} ({kernels}), {args.threads} thread(s), batch_bins "
        f"{args.batch_bins}, {args.steps} steps | {ours:.0f} | {baseline:.0f} | "
        f"{ours / baseline:.2f} | {bf16.last_loss:.3f} / {fp32.last_loss:.3f} |"
    )


if __name__ == "__main__":
    main()
