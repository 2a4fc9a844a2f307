"""Guided attention's training cost (`model.guided_attention`) on this machine.

ours     : the MultiStreamLM loss + backward + AdamW step with the guided-attention loss on
           (the setting in conf/exp/experiments.tsv's guided rows: weight 1.0, sigma 0.2, all 4
           heads of layers 1-3), which records the rotated queries and keys of the guided layers
           and scores the transcript <-> speech pairs of every ASR and TTS example.
baseline : the same step without it.
Both: copies of one model (the mini recipe's body: hidden 256, 4 layers, 5 streams, CTC weight
1.0, prefix LM), the same ASR / TTS batches from the trainer's own data pipeline, alternating which
goes first; positions per second over the second half of the steps (warm-up excluded), in fp32.

    .venv/bin/python benchmarks/bench_guided_attention.py [--steps 40] [--threads 2]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_trainer import (  # noqa: E402
    BareStep,
    demo_step_trainer,
    side_by_side_args,
    time_side_by_side,
)

from opuslm.model.guided_attention import GuidedAttention  # noqa: E402

GUIDE = GuidedAttention(weight=1.0, sigma=0.2, layers=(1, 2, 3), heads=4)


def main() -> None:
    args, device = side_by_side_args(__doc__)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = demo_step_trainer(Path(tmp), args.steps, args.batch_bins, device)
        steps = {"plain": BareStep(trainer.model, device)}
        steps["guided"] = BareStep(trainer.model, device)
        steps["guided"].model.guided_attention = GUIDE
        time_side_by_side(trainer, steps)
    plain, guided = steps["plain"], steps["guided"]
    ours, baseline = guided.positions / guided.seconds, plain.positions / plain.seconds
    print(
        "| benchmark | setting | guided positions/s | plain positions/s | ratio | "
        "loss at the last step guided / plain |"
    )
    print("|---|---|---|---|---|---|")
    print(
        f"| bench_guided_attention | {device.type}, {args.threads} thread(s), batch_bins "
        f"{args.batch_bins}, {args.steps} steps | {ours:.0f} | {baseline:.0f} | "
        f"{ours / baseline:.2f} | {guided.last_loss:.3f} / {plain.last_loss:.3f} |"
    )


if __name__ == "__main__":
    main()
