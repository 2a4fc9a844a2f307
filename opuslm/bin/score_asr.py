"""Score ASR hypotheses: WER/CER after text normalisation -> score.json and result.txt."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from opuslm.bin import run
from opuslm.eval.asr_scoring import (
    ScoringError,
    format_report,
    pair_texts,
    read_kaldi_text,
    score_texts,
)
from opuslm.eval.normalizer import DEFAULT_NORMALIZER, NORMALIZERS
from opuslm.fileio import write_text_atomic

logger = logging.getLogger("opuslm.score_asr")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ref", required=True, type=Path, help="reference Kaldi text file")
    parser.add_argument("--hyp", required=True, type=Path, help="hypothesis Kaldi text file")
    parser.add_argument("--output_dir", required=True, type=Path)
    parser.add_argument("--normalizer", choices=NORMALIZERS, default=DEFAULT_NORMALIZER)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        refs = read_kaldi_text(args.ref)
        hyps, missing = pair_texts(refs, read_kaldi_text(args.hyp), str(args.ref), str(args.hyp))
        score = score_texts(list(refs), list(refs.values()), hyps, args.normalizer, missing)
    except ScoringError as e:
        logger.error("%s", e)
        return 1
    if missing:
        logger.warning(
            "%d of %d utterances have no hypothesis in %s; scored as all deletions (listed in "
            "result.txt)",
            len(missing),
            len(refs),
            args.hyp,
        )
    result = {"task": "asr", **score.to_json()}
    write_text_atomic(args.output_dir / "result.txt", format_report(score))
    write_text_atomic(args.output_dir / "score.json", json.dumps(result, indent=2) + "\n")
    logger.info("WER %.2f%%  CER %.2f%%  (%s)", result["wer"], result["cer"], args.output_dir)
    return 0


if __name__ == "__main__":
    run(main)
