"""Gather every score.json below an experiment directory into its RESULTS.md (also printed)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from opuslm.bin import run
from opuslm.dump import write_text_atomic
from opuslm.eval.asr_scoring import ScoringError
from opuslm.eval.results import find_scores, format_results

logger = logging.getLogger("opuslm.results")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("exp_dir", type=Path, help="experiment directory, e.g. exp/<model tag>")
    parser.add_argument(
        "--output", type=Path, help="where to write the table (default: <exp_dir>/RESULTS.md)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        entries = find_scores(args.exp_dir)
    except ScoringError as e:
        logger.error("%s", e)
        return 1
    if not entries:
        logger.error("%s: no score.json found below it (run the scoring stage first)", args.exp_dir)
        return 1
    results = format_results(args.exp_dir.resolve().name, entries)
    output = args.output or args.exp_dir / "RESULTS.md"
    write_text_atomic(output, results)
    print(results, end="")
    logger.info("%d scores -> %s", len(entries), output)
    return 0


if __name__ == "__main__":
    run(main)
