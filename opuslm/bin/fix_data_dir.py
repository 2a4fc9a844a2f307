"""Make a Kaldi-style data directory consistent: keep utterances valid in every file, sort."""

from __future__ import annotations

import argparse
import sys

from opuslm.bin import run
from opuslm.data.datadir import DataDirError, fix_data_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fix_data_dir",
        description=__doc__ + " spk2utt is rebuilt from utt2spk; every rewritten file is first "
        "copied to <data_dir>/.backup/.",
    )
    parser.add_argument("data_dir", help="the data directory, e.g. data/train")
    args = parser.parse_args(argv)
    try:
        fix_data_dir(args.data_dir)
    except DataDirError as e:
        print(f"fix_data_dir: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run(main)
