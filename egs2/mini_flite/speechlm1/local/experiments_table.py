#!/usr/bin/env python3
"""Rows of EXPERIMENTS.md from local/run_experiments.sh outputs (exp/experiments/<name>/).

Per experiment: steps, training seconds, the last held-out (valid) teacher-forced loss of each task
(valid sentences are text-disjoint from training), the CTC losses when used, and with --score the
test-set WER/CER of the greedy transcripts (opuslm.bin.score_asr, whisper normaliser).

    local/experiments_table.py [--score] [--out exp/experiments] [name...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from opuslm.bin.score_asr import main as score_asr
from opuslm.train.report import read_log

COLUMNS = (
    "experiment",
    "steps",
    "train s",
    "valid asr CE/char",
    "valid tts loss",
    "valid textlm CE",
    "ctc/char",
    "tts ctc/char",
    "test WER %",
    "test CER %",
)


def last_valid(log: Path) -> dict[str, dict]:
    """{task: last valid record of that task}."""
    records = {}
    for record in read_log(log):
        if record["kind"] == "valid":
            records[record["task"]] = record
    return records


def row(directory: Path, score: bool, reference: Path) -> list[str]:
    valid = last_valid(directory / "train.log.jsonl")
    asr = valid.get("asr", {})
    seconds = directory / "train_seconds"
    cells = [
        directory.name,
        str(max((r.get("step", 0) for r in valid.values()), default=0)),
        seconds.read_text().strip() if seconds.exists() else "-",
        # ASR: the text CE alone (its task loss also holds the CTC term when that is on).
        f"{asr['ce/text']:.3f}" if asr else "-",
        *(f"{valid[t]['loss/' + t]:.3f}" if t in valid else "-" for t in ("tts", "textlm")),
        f"{asr['ce/ctc']:.3f}" if "ce/ctc" in asr else "-",
        # model.tts_ctc_weight: the transcript read back from the TTS speech rows.
        f"{valid['tts']['ce/ctc_tts']:.3f}" if "ce/ctc_tts" in valid.get("tts", {}) else "-",
    ]
    hyp = directory / "asr_test" / "text"
    if score and hyp.exists():
        score_asr(["--ref", str(reference), "--hyp", str(hyp), "--output_dir", str(hyp.parent)])
    result = hyp.parent / "score.json"
    if result.exists():
        figures = json.loads(result.read_text())
        cells += [f"{figures['wer']:.1f}", f"{figures['cer']:.1f}"]
    else:
        cells += ["-", "-"]
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="experiments (default: all under --out)")
    parser.add_argument("--out", default="exp/experiments")
    parser.add_argument("--score", action="store_true", help="score the test transcripts first")
    parser.add_argument("--reference", default="data/test/text")
    args = parser.parse_args()
    out = Path(args.out)
    directories = [out / n for n in args.names] or sorted(p for p in out.iterdir() if p.is_dir())
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for directory in directories:
        print("| " + " | ".join(row(directory, args.score, Path(args.reference))) + " |")


if __name__ == "__main__":
    main()
