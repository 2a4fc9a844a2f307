"""Dump the base-tokenizer ids of a Kaldi `text` file as int32 vectors (text.scp)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from opuslm.bin import run
from opuslm.data.datadir import DataDirError, read_table
from opuslm.dump import Dump, DumpError, ShardWriter, fingerprint, split_for_job
from opuslm.tokenizers.text import TextTokenizer, TextTokenizerError, load_text_tokenizer

log = logging.getLogger("opuslm.tokenize_text")


class TranscriptError(ValueError):
    """A transcript that cannot be turned into token ids."""


def encode_transcript(
    tokenizer: TextTokenizer, uttid: str, text: str, add_special_tokens: bool
) -> np.ndarray:
    """int32 [L] ids of one transcript.

    Refused (TranscriptError naming the uttid): an empty transcript, and one the tokenizer maps
    partly to its unknown token, since training would then learn to emit <unk> for real words.
    Byte-level tokenizers never produce unk; sentencepiece models do for unseen characters.
    """
    if not text.strip():
        raise TranscriptError(f"utterance {uttid}: empty transcript")
    ids = tokenizer.encode(text, add_special_tokens=add_special_tokens)
    unknown = 0 if tokenizer.unk_id is None else ids.count(tokenizer.unk_id)
    if unknown:
        raise TranscriptError(
            f"utterance {uttid}: the tokenizer maps {unknown} of {len(ids)} tokens of {text!r} "
            f"to <unk>; train the tokenizer on text with these characters"
        )
    return np.asarray(ids, dtype=np.int32)


def write_shard(
    args: argparse.Namespace, transcripts: dict[str, str], writer: ShardWriter, job: int
) -> dict:
    tokenizer = load_text_tokenizer(args.tokenizer_dir)
    summary = {"utterances": 0, "tokens": 0, "skipped": 0}
    uttids = split_for_job(list(transcripts), job, args.nj)
    for uttid in tqdm(uttids, unit="utt", desc=f"tokenize_text job {job}/{args.nj}"):
        try:
            ids = encode_transcript(tokenizer, uttid, transcripts[uttid], args.add_special_tokens)
        except TranscriptError as e:
            if not args.skip_bad:
                raise
            log.warning("skipping: %s", e)
            summary["skipped"] += 1
            continue
        writer.add(uttid, ids)
        summary["utterances"] += 1
        summary["tokens"] += len(ids)
    return summary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--text", required=True, help="Kaldi text file: `uttid words...`")
    parser.add_argument("--tokenizer_dir", required=True, help="text tokenizer directory")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument(
        "--add_special_tokens",
        action="store_true",
        help="wrap each transcript in the tokenizer's own bos / eos (textlm data)",
    )
    parser.add_argument("--nj", type=int, default=1, help="number of parallel jobs")
    parser.add_argument("--job", type=int, help="run only this job (1..nj); no merging")
    parser.add_argument(
        "--skip_bad", action="store_true", help="skip bad transcripts (logged) instead of failing"
    )
    args = parser.parse_args(argv)
    if args.nj < 1:
        parser.error("--nj must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        dump = Dump(
            output_dir=Path(args.output_dir),
            name="text",
            lengths_name="utt2num_tokens",
            module="opuslm.bin.tokenize_text",
            nj=args.nj,
            signature={
                "text": fingerprint(args.text),
                "tokenizer": fingerprint(args.tokenizer_dir),
                "nj": args.nj,
                "options": [args.add_special_tokens, args.skip_bad],
            },
        )
        dump.run(
            argv,
            args.job,
            lambda writer, job: write_shard(args, read_table(args.text), writer, job),
        )
    except (DataDirError, DumpError, TextTokenizerError, TranscriptError, OSError) as e:
        log.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    run(main)
