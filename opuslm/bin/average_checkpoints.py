"""Average the weights of several checkpoints into a new (weights-only) checkpoint directory."""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from pathlib import Path

from opuslm.bin import run
from opuslm.train import checkpoint as ckpt
from opuslm.vocab import TokenList


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="opuslm average_checkpoints", description=__doc__)
    parser.add_argument(
        "--checkpoints", nargs="+", required=True, type=Path, help="step directories to average"
    )
    parser.add_argument("--output", required=True, type=Path, help="new checkpoint directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    directories = [ckpt.resolve_checkpoint(p) for p in args.checkpoints]
    token_list = TokenList.load(directories[0] / ckpt.TOKEN_LIST)
    for directory in directories[1:]:
        ckpt.require_token_list(directory, token_list)
    averaged = ckpt.average_weights(directories)
    output = args.output
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp"))
    try:
        ckpt.save_weights(averaged, tmp / ckpt.WEIGHTS)
        shutil.copy(directories[-1] / ckpt.CONFIG, tmp / ckpt.CONFIG)
        token_list.save(tmp / ckpt.TOKEN_LIST)
        if output.exists():
            shutil.rmtree(output)
        tmp.rename(output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logging.info("averaged %d checkpoints into %s", len(directories), output)
    return 0


if __name__ == "__main__":
    run(main)
