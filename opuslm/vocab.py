"""The joint vocabulary of text, special, semantic and acoustic tokens (`token_list.json`).

Layout (DESIGN.md section 3), one id space shared by every stream:

    [0, V_text)                text: exactly the base LM's ids; rows the tokenizer does not use
                               are named `<unused_text_i>`
    [V_text, V_text + N_sp)    special: pad, sos, eos, eou, `<{modality}_start>`, `<{task}_task>`,
                               then `<reserved_i>` slots so new tasks never move an id
    [a, a + K)                 semantic units 0..K-1
    [b, b + n_q * C)           acoustic codes, codebook-major: codebook q is [b + q*C, b + (q+1)*C)

A frame has S = 1 + n_q streams: stream 0 holds text, special and semantic ids; stream s >= 1
holds codebook s-1. Every id used anywhere is read from this object, never hard-coded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from opuslm.fileio import write_text_atomic

MODALITIES = ("text", "special", "semantic", "acoustic")
BASE_SPECIAL_TOKENS = ("<pad>", "<sos>", "<eos>", "<eou>")
SEGMENT_STARTS = ("text", "speech", "spk")
DEFAULT_TASKS = ("asr", "tts", "audiolm", "textlm")
DEFAULT_SPECIAL_SLOTS = 64
FORMAT_VERSION = 1


class VocabError(ValueError):
    """A token list that is malformed or does not match what it is used with."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def special_token_names(tasks: Sequence[str], slots: int) -> list[str]:
    """The special block: fixed tokens, segment starts, task tokens, then reserved slots."""
    names = list(BASE_SPECIAL_TOKENS)
    names += [f"<{m}_start>" for m in SEGMENT_STARTS]
    names += [f"<{t}_task>" for t in tasks]
    if len(names) > slots:
        raise VocabError(f"{len(names)} special tokens do not fit in {slots} special slots")
    names += [f"<reserved_{i}>" for i in range(slots - len(names))]
    return names


@dataclass(frozen=True)
class TokenList:
    """The ordered token strings and the `[start, end)` range of each modality."""

    tokens: tuple[str, ...]
    ranges: dict[str, tuple[int, int]]
    num_codebooks: int
    codebook_size: int
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {tok: i for i, tok in enumerate(self.tokens)})
        self._check()

    # ------------------------------------------------------------------ construction / IO
    @classmethod
    def build(
        cls,
        text_tokens: Sequence[str],
        num_text_rows: int | None = None,
        num_semantic: int = 0,
        num_codebooks: int = 0,
        codebook_size: int = 0,
        tasks: Sequence[str] = DEFAULT_TASKS,
        special_slots: int = DEFAULT_SPECIAL_SLOTS,
    ) -> TokenList:
        """Build the joint vocabulary.

        text_tokens: the base tokenizer's tokens in id order.
        num_text_rows: the base model's embedding rows (>= len(text_tokens)); the extra rows keep
            their ids and are named `<unused_text_i>`.
        """
        num_text_rows = len(text_tokens) if num_text_rows is None else num_text_rows
        if num_text_rows < len(text_tokens):
            raise VocabError(
                f"the base model has {num_text_rows} embedding rows but its tokenizer has "
                f"{len(text_tokens)} tokens"
            )
        if num_codebooks and codebook_size <= 0:
            raise VocabError("codebook_size must be positive when num_codebooks > 0")
        text = [str(t) for t in text_tokens]
        text += [f"<unused_text_{i}>" for i in range(len(text), num_text_rows)]
        special = special_token_names(tasks, special_slots)
        semantic = [f"<sem_{k}>" for k in range(num_semantic)]
        acoustic = [f"<codec_{q}_{c}>" for q in range(num_codebooks) for c in range(codebook_size)]
        ranges = {}
        start = 0
        for name, block in zip(MODALITIES, (text, special, semantic, acoustic)):
            ranges[name] = (start, start + len(block))
            start += len(block)
        return cls(
            tokens=tuple(text + special + semantic + acoustic),
            ranges=ranges,
            num_codebooks=num_codebooks,
            codebook_size=codebook_size if num_codebooks else 0,
        )

    def save(self, path: str | os.PathLike) -> None:
        """Write `token_list.json` atomically (temp file in the same directory, then rename)."""
        payload = {
            "format_version": FORMAT_VERSION,
            "num_codebooks": self.num_codebooks,
            "codebook_size": self.codebook_size,
            "ranges": {k: list(v) for k, v in self.ranges.items()},
            "tokens": list(self.tokens),
        }
        write_text_atomic(path, json.dumps(payload, ensure_ascii=False, indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike) -> TokenList:
        path = Path(path)
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise VocabError(f"{path}: token list not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise VocabError(f"{path}: not a valid token_list.json ({e})") from None
        if not isinstance(payload, dict):
            raise VocabError(f"{path}: expected a JSON object")
        missing = [
            k for k in ("tokens", "ranges", "num_codebooks", "codebook_size") if k not in payload
        ]
        if missing:
            raise VocabError(f"{path}: missing keys {missing}")
        try:
            ranges, tokens = payload["ranges"], payload["tokens"]
            if not isinstance(ranges, dict) or not all(
                isinstance(v, list) and len(v) == 2 and all(_is_int(i) for i in v)
                for v in ranges.values()
            ):
                raise VocabError(f"ranges must map modalities to [start, end], got {ranges!r:.80}")
            if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
                raise VocabError("tokens must be a list of strings")
            sizes = {k: payload[k] for k in ("num_codebooks", "codebook_size")}
            if not all(_is_int(v) and v >= 0 for v in sizes.values()):
                raise VocabError(f"num_codebooks and codebook_size must be integers >= 0: {sizes}")
            return cls(
                tokens=tuple(tokens),
                ranges={k: (v[0], v[1]) for k, v in ranges.items()},
                num_codebooks=sizes["num_codebooks"],
                codebook_size=sizes["codebook_size"],
            )
        except VocabError as e:
            raise VocabError(f"{path}: {e}") from None

    def _check(self) -> None:
        if tuple(self.ranges) != MODALITIES:
            raise VocabError(f"ranges must list {MODALITIES} in order, got {tuple(self.ranges)}")
        expected_start = 0
        for name, (start, end) in self.ranges.items():
            if start != expected_start or end < start:
                raise VocabError(
                    f"range of {name!r} is [{start}, {end}), expected to start at {expected_start}"
                )
            expected_start = end
        if expected_start != len(self.tokens):
            raise VocabError(
                f"ranges cover {expected_start} ids but there are {len(self.tokens)} tokens"
            )
        if len(self._index) != len(self.tokens):
            seen: set[str] = set()
            dup = next(t for t in self.tokens if t in seen or seen.add(t))
            raise VocabError(f"duplicate token {dup!r}")
        acoustic = self.size("acoustic")
        if acoustic != self.num_codebooks * self.codebook_size:
            raise VocabError(
                f"acoustic range holds {acoustic} ids, expected num_codebooks x codebook_size = "
                f"{self.num_codebooks} x {self.codebook_size}"
            )
        for tok in BASE_SPECIAL_TOKENS:
            if tok not in self._index:
                raise VocabError(f"special token {tok} missing")

    # ------------------------------------------------------------------ comparison
    def first_difference(self, other: TokenList) -> str | None:
        """A human-readable description of the first difference, or None if identical."""
        for key in ("num_codebooks", "codebook_size"):
            if getattr(self, key) != getattr(other, key):
                return f"{key}: {getattr(self, key)} vs {getattr(other, key)}"
        for name in MODALITIES:
            if self.ranges[name] != other.ranges[name]:
                return f"range of {name}: {list(self.ranges[name])} vs {list(other.ranges[name])}"
        for i, (a, b) in enumerate(zip(self.tokens, other.tokens)):
            if a != b:
                return f"token id {i}: {a!r} vs {b!r}"
        if len(self.tokens) != len(other.tokens):
            return f"size: {len(self.tokens)} vs {len(other.tokens)}"
        return None

    def require_same(self, other: TokenList, what: str = "token list") -> None:
        """Raise VocabError naming the first difference between `self` (expected) and `other`."""
        diff = self.first_difference(other)
        if diff is not None:
            raise VocabError(
                f"{what} does not match (expected vs given): first difference at {diff}"
            )

    # ------------------------------------------------------------------ lookups
    def __len__(self) -> int:
        return len(self.tokens)

    def size(self, modality: str) -> int:
        start, end = self.ranges[modality]
        return end - start

    def id(self, token: str) -> int:
        try:
            return self._index[token]
        except KeyError:
            raise VocabError(f"token {token!r} is not in the token list") from None

    def has(self, token: str) -> bool:
        return token in self._index

    def task_id(self, task: str) -> int:
        return self.id(f"<{task}_task>")

    def start_id(self, segment: str) -> int:
        return self.id(f"<{segment}_start>")

    @property
    def pad_id(self) -> int:
        return self.id("<pad>")

    @property
    def sos_id(self) -> int:
        return self.id("<sos>")

    @property
    def eos_id(self) -> int:
        return self.id("<eos>")

    @property
    def eou_id(self) -> int:
        return self.id("<eou>")

    @property
    def num_streams(self) -> int:
        return 1 + self.num_codebooks

    @property
    def tasks(self) -> list[str]:
        start, end = self.ranges["special"]
        return [t[1:-6] for t in self.tokens[start:end] if t.endswith("_task>")]

    def stream_range(self, stream: int) -> tuple[int, int]:
        """The ids stream `stream` may hold: the whole vocabulary for stream 0, its codebook else.

        Pad is also allowed in every stream (it fills the delayed positions).
        """
        if stream == 0:
            return 0, len(self.tokens)
        if not 1 <= stream <= self.num_codebooks:
            raise VocabError(f"stream {stream} out of range [0, {self.num_streams})")
        start = self.ranges["acoustic"][0] + (stream - 1) * self.codebook_size
        return start, start + self.codebook_size

    def modality_ids(self) -> np.ndarray:
        """int64 [V]: the index into MODALITIES of every id."""
        out = np.empty(len(self.tokens), dtype=np.int64)
        for i, name in enumerate(MODALITIES):
            start, end = self.ranges[name]
            out[start:end] = i
        return out

    # ------------------------------------------------------------------ encode / decode
    def _shift(self, values, modality: str, limit: int, what: str) -> np.ndarray:
        values = np.asarray(values)
        if values.size and (values.min() < 0 or values.max() >= limit):
            raise VocabError(f"{what} {values.min()}..{values.max()} outside [0, {limit})")
        return values.astype(np.int64) + self.ranges[modality][0]

    def _unshift(self, ids, start: int, end: int, what: str) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < start or ids.max() >= end):
            raise VocabError(f"ids {ids.min()}..{ids.max()} are not {what} ids [{start}, {end})")
        return ids - start

    def encode_text(self, text_ids) -> np.ndarray:
        """Base-tokenizer ids -> joint ids (identical numbers, range-checked)."""
        return self._shift(text_ids, "text", self.size("text"), "text ids")

    def decode_text(self, ids) -> np.ndarray:
        return self._unshift(ids, *self.ranges["text"], "text")

    def encode_semantic(self, units) -> np.ndarray:
        """Semantic units [T] in [0, K) -> joint ids [T]."""
        return self._shift(units, "semantic", self.size("semantic"), "semantic units")

    def decode_semantic(self, ids) -> np.ndarray:
        return self._unshift(ids, *self.ranges["semantic"], "semantic")

    def encode_acoustic(self, codes) -> np.ndarray:
        """Codec codes [T, n_q] in [0, C) -> joint ids [T, n_q] (codebook q offset by q*C)."""
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] != self.num_codebooks:
            raise VocabError(f"acoustic codes must be [T, {self.num_codebooks}], got {codes.shape}")
        ids = self._shift(codes, "acoustic", self.codebook_size, "acoustic codes")
        return ids + np.arange(self.num_codebooks, dtype=np.int64) * self.codebook_size

    def decode_acoustic(self, ids) -> np.ndarray:
        """Joint ids [T, n_q] -> codec codes [T, n_q]."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim != 2 or ids.shape[1] != self.num_codebooks:
            raise VocabError(f"acoustic ids must be [T, {self.num_codebooks}], got {ids.shape}")
        offsets = self.ranges["acoustic"][0] + np.arange(self.num_codebooks) * self.codebook_size
        codes = ids - offsets
        if codes.size and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise VocabError("ids are not acoustic ids of their own codebook")
        return codes

    def encode_frames(self, frames) -> np.ndarray:
        """Token dump rows [T, S] (col 0 semantic unit, cols 1.. codec codes) -> ids [T, S]."""
        frames = np.asarray(frames)
        if frames.ndim != 2 or frames.shape[1] != self.num_streams:
            raise VocabError(f"audio frames must be [T, {self.num_streams}], got {frames.shape}")
        out = np.empty(frames.shape, dtype=np.int64)
        out[:, 0] = self.encode_semantic(frames[:, 0])
        out[:, 1:] = self.encode_acoustic(frames[:, 1:])
        return out

    def decode_frames(self, ids) -> np.ndarray:
        """Joint ids [T, S] of audio frames -> token dump rows [T, S]."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.empty(ids.shape, dtype=np.int64)
        out[:, 0] = self.decode_semantic(ids[:, 0])
        out[:, 1:] = self.decode_acoustic(ids[:, 1:])
        return out
