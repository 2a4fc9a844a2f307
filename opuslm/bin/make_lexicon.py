"""Write a word lexicon (`word count` per line, most frequent first) from Kaldi text tables.

The words are those `opuslm.model.lexicon` scores ASR hypotheses with: runs of letters, digits
and apostrophes, lower-cased. Stage 5 of the recipes builds it from the training transcripts and
the text-only training set (the text the model reads), and packing stores it with the model.
With --word_lm it also writes a word LM over the same words (`opuslm.model.word_lm`, for
shallow fusion in ASR decoding): its n-gram counts, or with a `.arpa` name the interpolated
Kneser-Ney estimate as an ARPA file (for inspection; other LM tools read it too).

    python -m opuslm.bin.make_lexicon --text data/train/text data/text_train/text \\
        --output data/lexicon.txt --word_lm data/word_lm.counts
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from pathlib import Path

from opuslm.bin import run
from opuslm.data.datadir import DataDirError, read_table
from opuslm.fileio import write_text_atomic
from opuslm.model.lexicon import words_of
from opuslm.model.word_lm import WordNgramLM

log = logging.getLogger("opuslm.make_lexicon")


def read_sentences(paths: list[Path]) -> list[list[str]]:
    """The words of each transcript of Kaldi text tables (`uttid text` lines)."""
    return [words_of(text) for path in paths for text in read_table(path).values()]


def lexicon_text(counts: Counter[str], min_count: int) -> str:
    kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return "".join(f"{word} {counts[word]}\n" for word in kept)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--text", nargs="+", required=True, type=Path, help="Kaldi text tables")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument(
        "--word_lm",
        type=Path,
        help="also write a word LM here: n-gram counts, or the estimate if the name ends in .arpa",
    )
    parser.add_argument("--word_lm_order", type=int, default=3, help="n of the word n-grams")
    parser.add_argument(
        "--min_count", type=int, default=1, help="leave out words seen fewer times than this"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.min_count < 1:
        parser.error(f"--min_count must be >= 1, got {args.min_count}")
    if args.word_lm_order < 1:
        parser.error(f"--word_lm_order must be >= 1, got {args.word_lm_order}")
    try:
        sentences = read_sentences(args.text)
    except (DataDirError, OSError) as e:
        log.error("%s", e)
        return 1
    counts = Counter(word for words in sentences for word in words)
    text = lexicon_text(counts, args.min_count)
    if not text:
        log.error("no words with at least %d occurrences in %s", args.min_count, args.text)
        return 1
    write_text_atomic(args.output, text)
    log.info(
        "%d words (of %d distinct, %d tokens) -> %s",
        text.count("\n"),
        len(counts),
        sum(counts.values()),
        args.output,
    )
    if args.word_lm is not None:
        # Every sentence, so the LM's vocabulary is the lexicon at --min_count 1.
        lm = WordNgramLM.from_sentences(sentences, args.word_lm_order)
        if args.word_lm.suffix == ".arpa":
            lm.save_arpa(args.word_lm)
        else:
            lm.save(args.word_lm)
        log.info("%d %d-grams of %d words -> %s", lm.num_ngrams, lm.order, len(lm), args.word_lm)
    return 0


if __name__ == "__main__":
    run(main)
