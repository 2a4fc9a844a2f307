"""Trainer throughput vs the bare model step, data loading included.

ours     : `opuslm.train.trainer.Trainer.run` on synthetic token dumps (kaldiio arks, task sequences
           built by DataLoader workers, collate, sampler, clipping, schedule, metrics, logging).
baseline : the bare step: MultiStreamLM loss + backward + AdamW step on a copy of the model, on the
           same batches already in memory, run right before each of the trainer's steps (side by
           side, so a drifting machine load hits both); its time is taken out of the trainer's.
Both: the same model, the same batches, one intra-op thread (the data workers use the other core),
positions (valid undelayed rows) per second over the second half of the steps (warm-up excluded).
Peak memory per step: the largest resident set size seen after any step (CPU; the process holds
both models, the baseline's copy adds weights + AdamW state) or torch.cuda.max_memory_allocated
(GPU).

    .venv/bin/python benchmarks/bench_trainer.py [--steps 30] [--workers 1] [--hidden 256]
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))
from test_manifest import tiny_token_list  # noqa: E402
from test_trainer import make_experiment  # noqa: E402

from opuslm.data.dataset import Batch  # noqa: E402
from opuslm.train.config import load_config  # noqa: E402
from opuslm.train.distributed import DistInfo  # noqa: E402
from opuslm.train.report import read_log  # noqa: E402
from opuslm.train.trainer import Trainer, parameter_groups  # noqa: E402

BODY = {  # the mini recipe's calibration body (DESIGN.md section 11): hidden 256, 4 layers
    "model_type": "llama",
    "hidden_size": 256,
    "intermediate_size": 768,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 2048,
}


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    with open("/proc/self/status") as f:
        rss_kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
    return rss_kb / 1024


class BareStep:
    """The baseline: loss + backward + AdamW on a copy of the model, timed step by step."""

    def __init__(
        self,
        model: torch.nn.Module,
        device: torch.device,
        autocast: AbstractContextManager | None = None,
    ) -> None:
        self.model = copy.deepcopy(model)
        # e.g. torch.autocast for bench_precision's bf16 step; none: plain fp32
        self.autocast = autocast if autocast is not None else nullcontext()
        self.optimizer = torch.optim.AdamW(
            parameter_groups(self.model, 0.1), lr=1e-4, betas=(0.9, 0.95)
        )
        self.device = device
        self.peak = 0.0
        self.last_loss = float("nan")
        self.reset_timer()

    def reset_timer(self) -> None:
        """Count time and positions from the next step on (warm-up excluded)."""
        self.seconds = 0.0
        self.positions = 0

    def run(self, batch: Batch) -> None:
        batch = batch.to(self.device)  # pre-built: the copy happens before the timer
        synchronize(self.device)
        start = time.perf_counter()
        with self.autocast:
            output = self.model(batch.frames, batch.loss_mask, batch.lengths)
        loss = output.loss_sum / output.num_target_frames
        loss.backward()
        self.last_loss = float(loss.detach())
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        synchronize(self.device)
        self.seconds += time.perf_counter() - start
        self.positions += batch.num_positions
        self.peak = max(self.peak, peak_memory_mb(self.device))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def side_by_side_args(description: str) -> tuple[argparse.Namespace, torch.device]:
    """--steps / --threads / --batch_bins of the side-by-side step benchmarks (threads set)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch_bins", type=int, default=3072, help="the demo's batch budget")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    return args, torch.device("cuda" if torch.cuda.is_available() else "cpu")


def demo_step_trainer(root: Path, steps: int, batch_bins: int, device: torch.device) -> Trainer:
    """A Trainer over a synthetic ASR / TTS corpus (3:1, 400 utterances) with the demo's body, CTC
    weight 1.0 and prefix LM: the setting bench_precision and bench_guided_attention time."""
    token_list = tiny_token_list(num_text=100, num_semantic=256, num_codebooks=4, codebook_size=256)
    config_path = make_experiment(
        root,
        num_utts=400,
        corpus={"speech_frames": (50, 130), "text_tokens": (30, 80), "token_list": token_list},
        model={"base": BODY, "ctc_weight": 1.0, "prefix_lm": True},
        data={"batch_bins": batch_bins, "num_workers": 0, "valid": []},
        schedule={"type": "constant", "warmup_steps": 0, "max_steps": steps},
        train={
            "valid_interval": 10**6,
            "save_interval": 10**6,
            "deterministic": False,
            "progress_bar": False,
        },
    )
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=device)
    return Trainer(load_config(config_path), root / "exp", info)


def time_side_by_side(trainer: Trainer, steps: dict[str, BareStep]) -> None:
    """Run the trainer's data pipeline, each batch through every BareStep in turn (the order
    alternating per step, so a drifting machine load hits all of them), timed over the second
    half of the steps. The trainer's own model is not stepped."""
    timed_from = trainer.config.schedule.max_steps // 2
    names = list(steps)

    def side_by_side(micro_batches: list[Batch], sums: object) -> bool:
        order = names if trainer.step % 2 == 0 else names[::-1]
        for name in order:
            if trainer.step == timed_from:
                steps[name].reset_timer()
            steps[name].run(micro_batches[0])
        return True

    trainer.train_step = side_by_side
    trainer.run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch_bins", type=int, default=4096)
    parser.add_argument(
        "--hidden",
        type=int,
        default=BODY["hidden_size"],
        help="smaller = faster steps, so data loading weighs more",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        token_list = tiny_token_list(
            num_text=256, num_semantic=256, num_codebooks=4, codebook_size=256
        )
        config_path = make_experiment(
            root,
            num_utts=400,
            corpus={"speech_frames": (50, 250), "text_tokens": (20, 80), "token_list": token_list},
            model={
                "base": {**BODY, "hidden_size": args.hidden, "intermediate_size": 3 * args.hidden}
            },
            data={"batch_bins": args.batch_bins, "num_workers": args.workers, "valid": []},
            schedule={"type": "constant", "warmup_steps": 0, "max_steps": args.steps},
            train={
                "log_interval": args.steps // 2,
                "valid_interval": 10**6,
                "save_interval": 10**6,
                "deterministic": False,
                "progress_bar": False,
            },
        )
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        info = DistInfo(rank=0, world_size=1, local_rank=0, device=device)
        trainer = Trainer(load_config(config_path), root / "exp", info)
        bare = BareStep(trainer.model, device)
        peak = {"trainer": 0.0}
        real_step = trainer.train_step
        timed_from = args.steps // 2  # the last log interval: warm-up excluded

        def measured_step(micro_batches, sums):
            # Side by side: the bare step on the same batch right before the trainer's own step,
            # so both see the same machine load; its time is taken out of the trainer's interval.
            if trainer.step >= timed_from:
                bare.run(micro_batches[0])
            done = real_step(micro_batches, sums)
            peak["trainer"] = max(peak["trainer"], peak_memory_mb(device))
            return done

        trainer.train_step = measured_step
        trainer.run()
        record = [r for r in read_log(root / "exp" / "train.log.jsonl") if r["kind"] == "train"][-1]
        interval_positions = bare.positions  # the same batches
        interval_seconds = interval_positions / record["frames_per_s"] - bare.seconds
        ours = interval_positions / interval_seconds
        baseline = bare.positions / bare.seconds
        data_wait = record["data_wait"] * interval_positions / record["frames_per_s"]
        data_wait /= interval_seconds
    params = sum(p.numel() for p in trainer.model.parameters()) / 1e6
    mean_rows = bare.positions / (args.steps - timed_from)
    print(
        "| benchmark | setting | trainer positions/s | bare step positions/s | ratio | data wait | "
        "peak mem trainer (MB) | peak mem bare (MB) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| bench_trainer | {device.type}, {params:.1f}M params, S={token_list.num_streams}, "
        f"batch_bins {args.batch_bins} (~{mean_rows:.0f} rows/batch), {args.steps} steps, "
        f"{args.workers} worker(s) | {ours:.0f} | {baseline:.0f} | {ours / baseline:.3f} | "
        f"{100 * data_wait:.1f}% | {peak['trainer']:.0f} | {bare.peak:.0f} |"
    )


if __name__ == "__main__":
    main()
