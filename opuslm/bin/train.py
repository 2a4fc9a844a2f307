"""Train a multi-stream LM (pre-training or annealing) from a YAML config; run under torchrun."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from opuslm.bin import run
from opuslm.train.config import load_config
from opuslm.train.distributed import init_distributed, shutdown
from opuslm.train.trainer import Trainer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="opuslm train",
        allow_abbrev=False,  # unknown options are config overrides; never guess a prefix
        description=__doc__,
        epilog="Any other option overrides a config key: --optim.lr 3e-4, schedule.max_steps=2000, "
        "--resume, --init_from exp/pretrain/checkpoints. "
        "Multi-process: torchrun --nproc_per_node N -m opuslm.bin.train ...",
    )
    parser.add_argument("--config", type=Path, help="YAML config (see opuslm/train/config.py)")
    parser.add_argument("--output_dir", type=Path, required=True, help="experiment directory")
    args, overrides = parser.parse_known_args(argv)
    info = init_distributed()
    logging.basicConfig(
        level=logging.INFO if info.is_main else logging.WARNING,
        format=f"%(asctime)s [rank{info.rank}] %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_config(args.config, overrides)
        summary = Trainer(config, args.output_dir, info).run()
    finally:
        shutdown()
    if info.is_main:
        logging.getLogger("opuslm.train").info(
            "finished at step %d (%s), %.0f positions/s, data wait %.1f%%",
            summary.step,
            "stopped by signal" if summary.stopped_early else "complete",
            summary.positions_per_s,
            100 * summary.data_wait_fraction,
        )
    return 0


if __name__ == "__main__":
    run(main)
