"""Train a sentencepiece text tokenizer (BPE / char / unigram) on Kaldi text or plain text files."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator

from opuslm.bin import run
from opuslm.tokenizers.text import TextTokenizerError, train_sentencepiece

log = logging.getLogger("opuslm.train_text_tokenizer")


def corpus_lines(paths: list[str], plain: bool) -> Iterator[str]:
    """The text of each line; Kaldi `text` files (the default) lose their leading uttid."""
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                yield line if plain else (line.split(maxsplit=1)[1:] or [""])[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--text", nargs="+", required=True, help="Kaldi text file(s)")
    parser.add_argument(
        "--plain_text", action="store_true", help="the files are plain text, no uttid column"
    )
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--vocab_size", type=int, required=True, help="upper bound for char")
    parser.add_argument("--model_type", choices=["bpe", "char", "unigram"], default="bpe")
    parser.add_argument("--character_coverage", type=float, default=1.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        tokenizer = train_sentencepiece(
            corpus_lines(args.text, args.plain_text),
            vocab_size=args.vocab_size,
            model_type=args.model_type,
            out_dir=args.output_dir,
            character_coverage=args.character_coverage,
        )
    except (TextTokenizerError, OSError) as e:
        log.error("%s", e)
        return 1
    log.info(
        "wrote %s: %s model, %d tokens", args.output_dir, args.model_type, tokenizer.vocab_size
    )
    return 0


if __name__ == "__main__":
    run(main)
