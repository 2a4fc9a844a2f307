"""Trainer throughput vs the bare model step, data loading included.

ours     : `opuslm.train.trainer.Trainer.run` on synthetic token dumps (kaldiio arks, task sequences
           built by DataLoader workers, collate, sampler, clipping, schedule, metrics, logging).
baseline : the bare step: MultiStreamLM loss + backward + AdamW step on the same batches, pre-built
           as tensors in memory before timing.
Both: the same model, the same batches, one intra-op thread (the data workers use the other core),
positions (valid undelayed rows) per second over the second half of the steps (warm-up excluded).
Peak memory per step: the largest resident set size seen after any step (CPU) or
torch.cuda.max_memory_allocated (GPU).

    .venv/bin/python benchmarks/bench_trainer.py [--steps 40] [--workers 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))
from test_manifest import tiny_token_list  # noqa: E402
from test_trainer import make_experiment  # noqa: E402

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


def bare_step_rate(trainer: Trainer, batches: list, device: torch.device) -> tuple[float, float]:
    """Positions/s of loss + backward + AdamW on pre-built batches (second half), peak MB."""
    model = trainer.model
    optimizer = torch.optim.AdamW(parameter_groups(model, 0.1), lr=1e-4, betas=(0.9, 0.95))
    batches = [b.to(device) for b in batches]
    peak, start, positions = 0.0, 0.0, 0
    for i, batch in enumerate(batches):
        if i == len(batches) // 2:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start, positions = time.perf_counter(), 0
        output = model(batch.frames, batch.loss_mask, batch.lengths)
        (output.loss_sum / output.num_target_frames).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        positions += batch.num_positions
        peak = max(peak, peak_memory_mb(device))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return positions / (time.perf_counter() - start), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch_bins", type=int, default=4096)
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
            model={"base": BODY},
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
        # The exact batches the trainer will consume, for the bare step.
        sampler_batches = list(islice(iter(trainer.sampler), args.steps))
        batches = [
            trainer.dataset.collate([trainer.dataset[i] for i in b]) for b in sampler_batches
        ]
        trainer.sampler.load_state_dict({"position": 0, "seed": trainer.sampler.seed})
        peak = {"trainer": 0.0}
        real_step = trainer.train_step

        def measured_step(micro_batches, sums):
            done = real_step(micro_batches, sums)
            peak["trainer"] = max(peak["trainer"], peak_memory_mb(device))
            return done

        trainer.train_step = measured_step
        summary = trainer.run()
        record = [r for r in read_log(root / "exp" / "train.log.jsonl") if r["kind"] == "train"][-1]
        ours = record["frames_per_s"]
        baseline, bare_peak = bare_step_rate(trainer, batches, device)
    params = sum(p.numel() for p in trainer.model.parameters()) / 1e6
    mean_rows = sum(b.num_positions for b in batches) / len(batches)
    print(
        "| benchmark | setting | trainer positions/s | bare step positions/s | ratio | "
        "data wait | peak mem trainer (MB) | peak mem bare (MB) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| bench_trainer | {device.type}, {params:.1f}M params, S={token_list.num_streams}, "
        f"batch_bins {args.batch_bins} (~{mean_rows:.0f} rows/batch), {args.steps} steps, "
        f"{args.workers} worker(s) | {ours:.0f} | {baseline:.0f} | {ours / baseline:.3f} | "
        f"{100 * summary.data_wait_fraction:.1f}% | {peak['trainer']:.0f} | {bare_peak:.0f} |"
    )


if __name__ == "__main__":
    main()
