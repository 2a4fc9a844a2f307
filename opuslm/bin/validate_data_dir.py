"""Check a Kaldi-style data directory (sorting, ids, cross-file consistency, audio paths)."""

from __future__ import annotations

import argparse
import sys

from opuslm.bin import run
from opuslm.data.datadir import DEFAULT_REQUIRED, DataDirError, validate_data_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="validate_data_dir",
        description=__doc__ + " Prints every problem as `file:line: message`; exit status 1 "
        "if there is any.",
    )
    parser.add_argument("data_dir", help="the data directory, e.g. data/train")
    parser.add_argument(
        "--require",
        default=",".join(DEFAULT_REQUIRED),
        help="comma-separated files that must exist (default: %(default)s; '' for none)",
    )
    parser.add_argument(
        "--no_audio_check",
        action="store_true",
        help="do not check that the plain paths of wav.scp exist",
    )
    args = parser.parse_args(argv)
    require = [name for name in args.require.split(",") if name]
    try:
        problems = validate_data_dir(
            args.data_dir, require=require, check_audio_exists=not args.no_audio_check
        )
    except DataDirError as e:
        print(f"validate_data_dir: {e}", file=sys.stderr)
        return 1
    for problem in problems:
        print(problem.format(args.data_dir))
    if problems:
        print(f"validate_data_dir: {len(problems)} problem(s) in {args.data_dir}", file=sys.stderr)
        return 1
    print(f"validate_data_dir: {args.data_dir} is OK", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run(main)
