"""Synthesise the mini_flite corpus: offline sentences read by Debian's flite voices, text-disjoint.

Text comes from plain-text files, by default Debian's `fortunes` package: fortune-format files
(entries separated by `%` lines) or one-entry-per-line files. Entries are split into sentences,
cleaned so the written text is exactly what flite reads aloud (letters, apostrophes, basic
punctuation; no digits or symbols, which flite would expand into words the transcript lacks),
kept at 4-16 words and deduplicated. A seeded shuffle then deals the sentences out in a fixed order
- test, valid, train, text_test, text_train - so every sentence belongs to exactly one set and a
smaller preset's test set is a prefix of a larger one's. Each spoken sentence gets one voice,
round-robin, so every voice appears in every speech set.

Output (Kaldi data directories, sorted by uttid):
    <output_dir>/{train,valid,test}/{wav.scp,text,utt2spk,spk2utt,utt2dur}
    <output_dir>/{text_train,text_test}/{text,utt2spk,spk2utt}     text only (textlm, perplexity)
    <wav_dir>/<voice>/<uttid>.wav                                  16 kHz, 16-bit mono
An uttid is `<voice>-<hash of the sentence>`, so an existing wav always holds the same words and
voice; synthesis is resumable and reuses wavs across presets.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import soundfile
from tqdm import tqdm

from opuslm.bin import run
from opuslm.data.datadir import fix_data_dir, write_table
from opuslm.dump import atomic_path

DEFAULT_TEXT_SOURCE = "/usr/share/games/fortunes"
DEFAULT_VOICES = ("slt", "rms", "awb", "kal16")
SPEECH_SETS = ("test", "valid", "train")
TEXT_SETS = ("text_test", "text_train")
TEXT_SPEAKER = "text"
MIN_WORDS, MAX_WORDS = 4, 16

# Words ending in a period that do not end a sentence.
ABBREVIATIONS = frozenset(
    "mr mrs ms dr st jr sr prof vs etc eg ie mt no rev gen col capt lt sgt co inc ltd".split()
)
SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+")
ALLOWED = re.compile(r"[A-Za-z' ,.?!;:-]+")
TYPOGRAPHIC = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})


class CorpusError(RuntimeError):
    """Bad corpus options or a failed synthesis, with a message the user can act on."""


@dataclass(frozen=True)
class Utterance:
    uttid: str
    speaker: str
    text: str


def read_entries(path: Path) -> list[str]:
    """Entries of one text file: `%`-separated (fortune format) or one per non-empty line.

    Attribution lines (`-- Author`) end an entry: they are not part of what is said.
    """
    raw = path.read_text(encoding="utf-8", errors="replace")
    lines = raw.replace("\r", "").split("\n")
    if "%" in lines:
        chunks = "\n".join(lines).split("\n%\n")
    else:
        chunks = [line for line in lines if line.strip()]
    entries = []
    for chunk in chunks:
        kept = []
        for line in chunk.split("\n"):
            if line.strip().startswith("--") or "\t--" in line:
                break
            if line.strip() != "%":  # a separator left at the very start or end of the file
                kept.append(line.strip())
        entry = " ".join(kept).strip()
        if entry:
            entries.append(entry)
    return entries


def split_sentences(entry: str) -> list[str]:
    """Split at `.`, `!`, `?` followed by space, except after abbreviations and initials."""
    sentences: list[str] = []
    for piece in SENTENCE_BREAK.split(entry):
        if sentences and _ends_without_sentence_break(sentences[-1]):
            sentences[-1] = f"{sentences[-1]} {piece}"
        else:
            sentences.append(piece)
    return sentences


def _ends_without_sentence_break(text: str) -> bool:
    last_word = text.rsplit(" ", 1)[-1].rstrip(".").lower().replace(".", "")
    return text.endswith(".") and (last_word in ABBREVIATIONS or len(last_word) == 1)


def clean_sentence(sentence: str) -> str | None:
    """The sentence as flite should read it, or None when it cannot be read as written.

    Quotes, brackets and dashes are dropped or turned into pauses; anything else outside letters,
    apostrophes and `, . ? ! ; : -` (digits, symbols, code) rejects the sentence.
    """
    text = unicodedata.normalize("NFKD", sentence.translate(TYPOGRAPHIC))
    text = text.encode("ascii", "ignore").decode("ascii")
    text = re.sub(r".\x08", "", text)  # backspace overstrikes used for bold/underline
    text = re.sub(r'["()\[\]*_]', "", text)
    text = re.sub(r"\s*--+\s*", ", ", text)
    text = re.sub(r"([.,?!;:])[.,?!;:]+", r"\1", text)
    text = " ".join(text.split()).strip(" ,;:-'")
    if not text or ALLOWED.fullmatch(text) is None:
        return None
    words = text.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return None
    if any(re.search("[A-Za-z]", w) is None for w in words):
        return None
    return text


def dedup_key(text: str) -> str:
    """Sentences that read the same (case, punctuation) count as one."""
    return " ".join(re.sub(r"[^a-z' ]", " ", text.lower()).split())


def collect_sentences(sources: Iterable[Path]) -> list[str]:
    """Cleaned, deduplicated sentences from the files (directories: every plain file inside)."""
    seen: set[str] = set()
    sentences = []
    for path in sorted(_text_files(sources)):
        for entry in read_entries(path):
            for sentence in split_sentences(entry):
                text = clean_sentence(sentence)
                if text is None or dedup_key(text) in seen:
                    continue
                seen.add(dedup_key(text))
                sentences.append(text)
    return sentences


def _text_files(sources: Iterable[Path]) -> list[Path]:
    files = []
    for source in sources:
        if source.is_dir():
            # fortune's `.dat` files are binary indexes and `.u8` are symlinks to the text files.
            files += [
                p
                for p in source.iterdir()
                if p.is_file() and not p.is_symlink() and p.suffix not in (".dat", ".u8")
            ]
        elif source.is_file():
            files.append(source)
        else:
            raise CorpusError(f"text source {source} does not exist")
    return files


def deal_sentences(
    sentences: Sequence[str], sizes: dict[str, int], seed: int
) -> dict[str, list[str]]:
    """Shuffle once, then hand out consecutive slices in the order of `sizes` (-1 = the rest)."""
    order = list(sentences)
    random.Random(seed).shuffle(order)
    fixed = sum(n for n in sizes.values() if n >= 0)
    if fixed > len(order):
        raise CorpusError(
            f"the sets ask for {fixed} sentences but the text source gives only {len(order)}"
        )
    sets, start = {}, 0
    for name, size in sizes.items():
        end = len(order) if size < 0 else start + size
        sets[name] = order[start:end]
        start = end
    return sets


def utterance_id(speaker: str, text: str) -> str:
    return f"{speaker}-{hashlib.sha1(dedup_key(text).encode()).hexdigest()[:10]}"


def speech_utterances(sentences: Sequence[str], voices: Sequence[str]) -> list[Utterance]:
    """One voice per sentence, round-robin, so each voice appears once per len(voices) sentences."""
    return [
        Utterance(utterance_id(voices[i % len(voices)], text), voices[i % len(voices)], text)
        for i, text in enumerate(sentences)
    ]


def text_utterances(sentences: Sequence[str]) -> list[Utterance]:
    return [Utterance(utterance_id(TEXT_SPEAKER, t), TEXT_SPEAKER, t) for t in sentences]


def wav_path(wav_dir: Path, utt: Utterance) -> Path:
    return wav_dir / utt.speaker / f"{utt.uttid}.wav"


def synthesize(utterances: Sequence[Utterance], wav_dir: Path, nj: int) -> None:
    """Run flite for every utterance whose wav does not exist yet, `nj` processes at a time."""
    todo = [u for u in utterances if not wav_path(wav_dir, u).exists()]
    print(
        f"synthesis: {len(utterances) - len(todo)} wavs exist, {len(todo)} to make, nj={nj}",
        file=sys.stderr,
    )
    if not todo:
        return
    with ThreadPoolExecutor(max_workers=nj) as pool:
        for _ in tqdm(pool.map(lambda u: _flite(u, wav_dir), todo), total=len(todo), desc="flite"):
            pass


def flite_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment flite runs in: `environ` without the recipes' tcmalloc preload.

    One short flite process per utterance: the preload (path.sh, meant for the Python processes;
    it names it in OPUSLM_TCMALLOC_LIB) would add ~3 ms of start-up to each. A preload of the
    user's own stays.
    """
    env = dict(environ)
    if env.get("OPUSLM_TCMALLOC_LIB") and env.get("LD_PRELOAD") == env["OPUSLM_TCMALLOC_LIB"]:
        del env["LD_PRELOAD"]
    return env


FLITE_ENV = flite_env(os.environ)


def _flite(utt: Utterance, wav_dir: Path) -> None:
    # Text goes through a file: `-t` would read a leading '-' as an option.
    with (
        atomic_path(wav_path(wav_dir, utt), durable=False) as tmp,
        tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="ascii") as text_file,
    ):
        text_file.write(utt.text + "\n")
        text_file.flush()
        result = subprocess.run(
            ["flite", "-voice", utt.speaker, "-f", text_file.name, "-o", tmp],
            capture_output=True,
            text=True,
            env=FLITE_ENV,
        )
        if result.returncode != 0 or os.path.getsize(tmp) <= 44:
            raise CorpusError(
                f"flite failed for {utt.uttid} (voice {utt.speaker}): {result.stderr.strip()}"
            )


def write_data_dir(
    data_dir: Path, utterances: Sequence[Utterance], wav_dir: Path | None = None
) -> None:
    """Kaldi data directory, sorted by uttid; wav.scp and utt2dur only with `wav_dir`."""
    utts = sorted(utterances, key=lambda u: u.uttid)
    write_table(data_dir / "text", ((u.uttid, u.text) for u in utts))
    write_table(data_dir / "utt2spk", ((u.uttid, u.speaker) for u in utts))
    if wav_dir is not None:
        paths = {u.uttid: str(wav_path(wav_dir, u).resolve()) for u in utts}
        write_table(data_dir / "wav.scp", ((u.uttid, paths[u.uttid]) for u in utts))
        durations = ((u.uttid, f"{soundfile.info(paths[u.uttid]).duration:.3f}") for u in utts)
        write_table(data_dir / "utt2dur", durations)
    fix_data_dir(data_dir, verbose=False)  # makes spk2utt


def check_voices(voices: Sequence[str]) -> None:
    if shutil.which("flite") is None:
        raise CorpusError("flite not found: run `make install` or `apt-get install flite`")
    listed = subprocess.run(["flite", "-lv"], capture_output=True, text=True).stdout.split()
    unknown = [v for v in voices if v not in listed]
    if unknown:
        raise CorpusError(f"flite has no voice {unknown}; it has: {' '.join(listed[2:])}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", type=Path, required=True, help="parent of the data dirs")
    parser.add_argument("--wav_dir", type=Path, required=True, help="where the wavs are kept")
    parser.add_argument(
        "--text_source",
        type=Path,
        nargs="+",
        default=[Path(DEFAULT_TEXT_SOURCE)],
        help="text files or directories of them (default: %(default)s)",
    )
    parser.add_argument("--voices", nargs="+", default=list(DEFAULT_VOICES))
    parser.add_argument("--num_train", type=int, required=True, help="spoken training sentences")
    parser.add_argument("--num_valid", type=int, required=True)
    parser.add_argument("--num_test", type=int, required=True)
    parser.add_argument("--num_text_test", type=int, required=True, help="held-out text only")
    parser.add_argument(
        "--num_text_train", type=int, default=-1, help="text-only training sentences (-1: rest)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nj", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    for name in ("num_train", "num_valid", "num_test"):
        if getattr(args, name) < len(args.voices):
            parser.error(f"--{name} must be at least the number of voices ({len(args.voices)})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_voices(args.voices)
        sentences = collect_sentences(args.text_source)
        sources = " ".join(map(str, args.text_source))
        print(f"{len(sentences)} distinct sentences from {sources}", file=sys.stderr)
        sizes = {
            "test": args.num_test,
            "valid": args.num_valid,
            "train": args.num_train,
            "text_test": args.num_text_test,
            "text_train": args.num_text_train,
        }
        sets = deal_sentences(sentences, sizes, args.seed)
        speech = {name: speech_utterances(sets[name], args.voices) for name in SPEECH_SETS}
        synthesize([u for utts in speech.values() for u in utts], args.wav_dir, args.nj)
    except CorpusError as e:
        print(f"prepare_flite_corpus: error: {e}", file=sys.stderr)
        return 1
    for name, utts in speech.items():
        write_data_dir(args.output_dir / name, utts, args.wav_dir)
    for name in TEXT_SETS:
        write_data_dir(args.output_dir / name, text_utterances(sets[name]))
    for name in SPEECH_SETS + TEXT_SETS:
        print(f"{args.output_dir / name}: {len(sets[name])} utterances", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run(main)
