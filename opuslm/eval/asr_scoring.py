"""Word and character error rates of hypotheses against references (jiwer), with a report.

Both sides are normalised first (`opuslm.eval.normalizer`). A reference without a hypothesis
counts as all deletions and is listed in the report; a hypothesis for an utterance that is not
in the references is an error, as are references and hypotheses that share no utterance at all.
The report (`result.txt`) follows sclite's per-utterance layout: aligned REF/HYP lines with
errors in upper case and `***` for the missing side of insertions and deletions.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import jiwer

from opuslm.eval.bootstrap import error_rate_interval
from opuslm.eval.normalizer import get_normalizer


class ScoringError(ValueError):
    """Inputs to scoring that do not fit together (missing files, ids, malformed lines)."""


def read_kaldi_text(path: str | os.PathLike) -> dict[str, str]:
    """Read a Kaldi `text` file (`uttid words...` per line) into {uttid: text}.

    A line with only an uttid is an empty transcript (an ASR system may output nothing).
    """
    path = Path(path)
    if not path.is_file():
        raise ScoringError(f"{path}: text file not found")
    texts: dict[str, str] = {}
    first_line: dict[str, int] = {}
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as e:
                raise ScoringError(f"{path}:{lineno}: not valid UTF-8 ({e.reason})") from None
            if not line:
                continue
            uttid, *rest = line.split(maxsplit=1)
            text = rest[0] if rest else ""
            if uttid in texts:
                raise ScoringError(
                    f"{path}:{lineno}: duplicate utterance id {uttid!r} "
                    f"(first on line {first_line[uttid]})"
                )
            texts[uttid] = text
            first_line[uttid] = lineno
    return texts


def format_ids(ids: Sequence[str], limit: int = 5) -> str:
    """The first `limit` ids for an error message, with the total when there are more."""
    shown = ", ".join(ids[:limit])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")


def pair_texts(
    refs: dict[str, str],
    hyps: dict[str, str],
    ref_name: str = "reference",
    hyp_name: str = "hypothesis",
) -> tuple[list[str], list[str]]:
    """Hypotheses in reference order, "" for missing ones; also returns the missing uttids.

    Returns (hypotheses aligned with `refs`, uttids that had no hypothesis).
    """
    extra = [uttid for uttid in hyps if uttid not in refs]
    if extra:
        raise ScoringError(
            f"{hyp_name}: {len(extra)} utterance ids are not in {ref_name}: {format_ids(extra)}"
        )
    if refs and not hyps.keys() & refs.keys():
        raise ScoringError(f"{hyp_name} and {ref_name} have no utterance id in common")
    missing = [uttid for uttid in refs if uttid not in hyps]
    return [hyps.get(uttid, "") for uttid in refs], missing


@dataclass(frozen=True)
class ErrorCounts:
    """Edit-distance counts of one or more utterances, in words or characters."""

    hits: int
    substitutions: int
    deletions: int
    insertions: int

    @property
    def num_ref(self) -> int:
        return self.hits + self.substitutions + self.deletions

    @property
    def num_errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    def percent(self, count: int) -> float:
        """`count` as a percentage of the reference length."""
        if self.num_ref == 0:
            raise ScoringError("error rates are undefined: the references are empty")
        return 100.0 * count / self.num_ref

    @property
    def error_rate(self) -> float:
        return self.percent(self.num_errors)

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(
            self.hits + other.hits,
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
        )


@dataclass(frozen=True)
class UtteranceScore:
    """One utterance: normalised texts, word error counts, and its aligned REF/HYP lines."""

    uttid: str
    ref: str
    hyp: str
    words: ErrorCounts
    ref_line: str
    hyp_line: str


@dataclass(frozen=True)
class AsrScore:
    """Word and character error counts of a test set, per utterance and in total."""

    utterances: list[UtteranceScore]
    words: ErrorCounts
    chars: ErrorCounts
    normalizer: str
    missing: list[str]

    def to_json(self) -> dict[str, object]:
        """The score.json fields (rates in percent)."""
        return {
            "wer": round(self.words.error_rate, 4),
            "cer": round(self.chars.error_rate, 4),
            "num_utts": len(self.utterances),
            "num_ref_words": self.words.num_ref,
            "sub": round(self.words.percent(self.words.substitutions), 4),
            "del": round(self.words.percent(self.words.deletions), 4),
            "ins": round(self.words.percent(self.words.insertions), 4),
            "num_missing_hyps": len(self.missing),
            "normalizer": self.normalizer,
            # What the draw of these utterances leaves open (opuslm.eval.bootstrap).
            "wer_interval_95": [round(x, 2) for x in self.wer_interval()],
        }

    def word_counts(self) -> tuple[list[int], list[int]]:
        """Word errors [U] and reference words [U] of each utterance."""
        return (
            [u.words.num_errors for u in self.utterances],
            [u.words.num_ref for u in self.utterances],
        )

    def wer_interval(self) -> tuple[float, float]:
        """95% bootstrap interval of the WER over the utterances (percent)."""
        return error_rate_interval(*self.word_counts())


def _aligned_lines(ref_words: list[str], hyp_words: list[str], chunks) -> tuple[str, str]:
    """sclite-style REF/HYP lines: correct words lower case, errors upper case, `***` gaps."""
    ref_cells, hyp_cells = [], []
    for chunk in chunks:
        ref_part = ref_words[chunk.ref_start_idx : chunk.ref_end_idx]
        hyp_part = hyp_words[chunk.hyp_start_idx : chunk.hyp_end_idx]
        if chunk.type == "equal":
            ref_cells += [w.lower() for w in ref_part]
            hyp_cells += [w.lower() for w in hyp_part]
        elif chunk.type == "substitute":
            ref_cells += [w.upper() for w in ref_part]
            hyp_cells += [w.upper() for w in hyp_part]
        elif chunk.type == "delete":
            ref_cells += [w.upper() for w in ref_part]
            hyp_cells += ["*" * max(3, len(w)) for w in ref_part]
        else:
            ref_cells += ["*" * max(3, len(w)) for w in hyp_part]
            hyp_cells += [w.upper() for w in hyp_part]
    widths = [max(len(r), len(h)) for r, h in zip(ref_cells, hyp_cells)]
    return (
        " ".join(c.ljust(w) for c, w in zip(ref_cells, widths)).rstrip(),
        " ".join(c.ljust(w) for c, w in zip(hyp_cells, widths)).rstrip(),
    )


def _counts(chunks) -> ErrorCounts:
    def total(kind: str, side: str) -> int:
        return sum(
            getattr(c, f"{side}_end_idx") - getattr(c, f"{side}_start_idx")
            for c in chunks
            if c.type == kind
        )

    return ErrorCounts(
        hits=total("equal", "ref"),
        substitutions=total("substitute", "ref"),
        deletions=total("delete", "ref"),
        insertions=total("insert", "hyp"),
    )


def score_texts(
    uttids: Sequence[str],
    refs: Sequence[str],
    hyps: Sequence[str],
    normalizer: str = "whisper_english",
    missing: Sequence[str] = (),
) -> AsrScore:
    """WER/CER of `hyps` against `refs` (same order as `uttids`) after normalising both.

    missing: uttids whose hypothesis was absent (given as ""), kept for the report.
    """
    if not len(uttids) == len(refs) == len(hyps):
        raise ScoringError(
            f"{len(uttids)} uttids, {len(refs)} references and {len(hyps)} hypotheses differ"
        )
    if not uttids:
        raise ScoringError("nothing to score: no utterances")
    normalize: Callable[[str], str] = get_normalizer(normalizer)
    norm_refs = [normalize(text) for text in refs]
    norm_hyps = [normalize(text) for text in hyps]
    words = jiwer.process_words(norm_refs, norm_hyps)
    chars = jiwer.process_characters(norm_refs, norm_hyps)
    utterances = []
    for uttid, ref, hyp, chunks in zip(uttids, norm_refs, norm_hyps, words.alignments):
        ref_line, hyp_line = _aligned_lines(ref.split(), hyp.split(), chunks)
        utterances.append(UtteranceScore(uttid, ref, hyp, _counts(chunks), ref_line, hyp_line))
    word_counts = ErrorCounts(words.hits, words.substitutions, words.deletions, words.insertions)
    if word_counts.num_ref == 0:
        raise ScoringError(
            f"all {len(uttids)} references are empty after the {normalizer!r} normaliser"
        )
    char_counts = ErrorCounts(chars.hits, chars.substitutions, chars.deletions, chars.insertions)
    return AsrScore(utterances, word_counts, char_counts, normalizer, list(missing))


def format_report(score: AsrScore) -> str:
    """The sclite-style per-utterance report, then missing hypotheses, then totals."""
    lines = []
    for utt in score.utterances:
        w = utt.words
        lines += [
            f"id: ({utt.uttid})",
            f"Scores: (#C #S #D #I) {w.hits} {w.substitutions} {w.deletions} {w.insertions}",
            f"REF:  {utt.ref_line}",
            f"HYP:  {utt.hyp_line}",
            "",
        ]
    if score.missing:
        lines.append(f"Missing hypotheses (scored as all deletions): {len(score.missing)}")
        lines += [f"  {uttid}" for uttid in score.missing]
        lines.append("")
    lines.append(f"Normalizer: {score.normalizer}")
    lines.append(f"{'':6}{'#Snt':>6}{'#Wrd':>8}{'Corr':>8}{'Sub':>8}{'Del':>8}{'Ins':>8}{'Err':>8}")
    for name, counts in (("Words", score.words), ("Chars", score.chars)):
        rates = [counts.hits, counts.substitutions, counts.deletions, counts.insertions]
        cells = "".join(f"{counts.percent(n):8.2f}" for n in rates)
        lines.append(
            f"{name:6}{len(score.utterances):6d}{counts.num_ref:8d}{cells}{counts.error_rate:8.2f}"
        )
    return "\n".join(lines) + "\n"
