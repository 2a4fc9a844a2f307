"""Make Kaldi data directories from a LibriSpeech corpus in its standard layout.

Layout read: `<corpus_root>/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac` with one
`<speaker>-<chapter>.trans.txt` per chapter (`<uttid> TRANSCRIPT` lines).
Written per subset: `<output_dir>/<subset, '-' as '_'>/{wav.scp,text,utt2spk,spk2utt}`, sorted by
uttid; wav.scp points at the flac files (soundfile and sox read them), speakers are the
LibriSpeech speaker ids, transcripts are kept as published (upper case, no punctuation).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from opuslm.bin import run
from opuslm.data.datadir import fix_data_dir, write_table

DEFAULT_SUBSETS = (
    "train-clean-100",
    "train-clean-360",
    "train-other-500",
    "dev-clean",
    "dev-other",
    "test-clean",
    "test-other",
)


class LibriSpeechError(RuntimeError):
    """A missing corpus, subset or file, or a malformed transcript line."""


def read_chapter(trans_file: Path) -> dict[str, tuple[str, Path]]:
    """uttid -> (transcript, flac path) of one chapter, checking every line and flac exists."""
    utterances = {}
    for lineno, line in enumerate(trans_file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        uttid, _, transcript = line.strip().partition(" ")
        where = f"{trans_file}:{lineno}"
        if not transcript.strip():
            raise LibriSpeechError(f"{where}: expected '<uttid> TRANSCRIPT', got {line!r}")
        if not uttid.startswith(trans_file.name.removesuffix(".trans.txt") + "-"):
            raise LibriSpeechError(f"{where}: uttid {uttid} is not from this chapter")
        flac = trans_file.parent / f"{uttid}.flac"
        if not flac.is_file():
            raise LibriSpeechError(f"{where}: {flac} does not exist")
        utterances[uttid] = (" ".join(transcript.split()), flac.resolve())
    return utterances


def prepare_subset(subset_dir: Path, data_dir: Path) -> int:
    """Write one data directory; returns its number of utterances."""
    trans_files = sorted(subset_dir.glob("*/*/*.trans.txt"))
    if not trans_files:
        raise LibriSpeechError(f"{subset_dir}: no <speaker>/<chapter>/*.trans.txt files")
    utterances: dict[str, tuple[str, Path]] = {}
    for trans_file in tqdm(trans_files, desc=subset_dir.name, unit="chapter"):
        utterances.update(read_chapter(trans_file))
    uttids = sorted(utterances)
    write_table(data_dir / "wav.scp", ((u, str(utterances[u][1])) for u in uttids))
    write_table(data_dir / "text", ((u, utterances[u][0]) for u in uttids))
    write_table(data_dir / "utt2spk", ((u, u.split("-", 1)[0]) for u in uttids))
    fix_data_dir(data_dir, verbose=False)  # makes spk2utt
    return len(uttids)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus_root", type=Path, required=True, help="holds <subset>/ dirs")
    parser.add_argument("--output_dir", type=Path, required=True, help="parent of the data dirs")
    parser.add_argument("--subsets", nargs="+", default=list(DEFAULT_SUBSETS))
    args = parser.parse_args(argv)
    try:
        if not args.corpus_root.is_dir():
            raise LibriSpeechError(f"LibriSpeech root {args.corpus_root} is not a directory")
        missing = [s for s in args.subsets if not (args.corpus_root / s).is_dir()]
        if missing:
            raise LibriSpeechError(f"{args.corpus_root} has no subset {' '.join(missing)}")
        for subset in args.subsets:
            data_dir = args.output_dir / subset.replace("-", "_")
            count = prepare_subset(args.corpus_root / subset, data_dir)
            print(f"{data_dir}: {count} utterances", file=sys.stderr)
    except LibriSpeechError as e:
        print(f"prepare_librispeech: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run(main)
