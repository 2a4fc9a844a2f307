"""Text tokenizers: one interface, two backends.

    HFTextTokenizer         the base LM's own tokenizer from a local Hugging Face directory,
                            inherited unchanged (its ids are the text rows of the joint vocabulary)
    SentencePieceTokenizer  a BPE or character model trained here with sentencepiece, for recipes
                            that pre-train their own small base LM

A saved tokenizer directory holds `text_tokenizer.yaml` (`type: hf | sentencepiece`) next to the
backend's own files; `load_text_tokenizer` also accepts a plain Hugging Face model directory.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import sentencepiece as spm
import yaml

from opuslm.fileio import write_bytes_atomic, write_text_atomic

CONFIG_NAME = "text_tokenizer.yaml"
SENTENCEPIECE_MODEL = "sentencepiece.model"


class TextTokenizerError(ValueError):
    """A tokenizer directory that cannot be loaded, or text it cannot be trained on."""


@runtime_checkable
class TextTokenizer(Protocol):
    """Text <-> base-tokenizer ids. `bos_id` / `eos_id` / `unk_id` are None when absent."""

    bos_id: int | None
    eos_id: int | None
    unk_id: int | None

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Ids of `text`; add_special_tokens wraps them in the tokenizer's own bos / eos."""
        ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def tokens(self) -> list[str]:
        """Every token string in id order (the text block of the joint vocabulary)."""
        ...

    def surfaces(self) -> list[str]:
        """The text each id adds to a transcript, in id order: a word-initial piece starts
        with a space; special ids add nothing ("")."""
        ...

    def save(self, directory: str | os.PathLike) -> None: ...


def wrap_special(ids: list[int], bos_id: int | None, eos_id: int | None) -> list[int]:
    """bos + ids + eos, each only if the tokenizer has it (the same rule for every backend)."""
    return ([bos_id] if bos_id is not None else []) + ids + ([eos_id] if eos_id is not None else [])


def _write_config(directory: Path, config: dict) -> None:
    write_text_atomic(directory / CONFIG_NAME, yaml.safe_dump(config, sort_keys=False))


class HFTextTokenizer:
    """A Hugging Face tokenizer loaded from a local directory (no network, no changes)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.bos_id = tokenizer.bos_token_id
        self.eos_id = tokenizer.eos_token_id
        self.unk_id = tokenizer.unk_token_id

    @classmethod
    def load(cls, directory: str | os.PathLike) -> HFTextTokenizer:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        except (OSError, ValueError) as e:
            raise TextTokenizerError(
                f"{directory}: cannot load a Hugging Face tokenizer: {e}"
            ) from None
        return cls(tokenizer)

    @property
    def vocab_size(self) -> int:
        # Largest id + 1: len(tokenizer) counts tokens, which is less when the ids have gaps.
        return max(self.tokenizer.get_vocab().values()) + 1

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return wrap_special(ids, self.bos_id, self.eos_id) if add_special_tokens else ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def tokens(self) -> list[str]:
        tokens = self.tokenizer.convert_ids_to_tokens(list(range(self.vocab_size)))
        # Some tokenizers leave id gaps below their added tokens; name them as the joint
        # vocabulary names unused text rows, so every entry stays a unique string.
        return [f"<unused_text_{i}>" if t is None else t for i, t in enumerate(tokens)]

    def surfaces(self) -> list[str]:
        special = set(self.tokenizer.all_special_ids)
        out = []
        for i, token in enumerate(self.tokenizer.convert_ids_to_tokens(range(self.vocab_size))):
            if token is None or i in special:
                out.append("")
                continue
            text = self.tokenizer.convert_tokens_to_string([token])
            # Byte-level BPE keeps its "Ġ" as a leading space; sentencepiece-based ones may
            # strip the "▁" of a lone piece, so it is put back here.
            if token.startswith("\u2581") and not text.startswith(" "):
                text = " " + text
            out.append(text)
        return out

    def save(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        self.tokenizer.save_pretrained(str(directory))
        _write_config(directory, {"type": "hf"})


class SentencePieceTokenizer:
    """A sentencepiece model (BPE, unigram or char) stored as `sentencepiece.model`."""

    def __init__(self, model_proto: bytes) -> None:
        self.model_proto = model_proto
        self.processor = spm.SentencePieceProcessor(model_proto=model_proto)
        self.bos_id = self._optional_id(self.processor.bos_id())
        self.eos_id = self._optional_id(self.processor.eos_id())
        self.unk_id = self._optional_id(self.processor.unk_id())

    @staticmethod
    def _optional_id(i: int) -> int | None:
        return None if i < 0 else i  # sentencepiece says -1 for a disabled special piece

    @classmethod
    def load(cls, directory: str | os.PathLike) -> SentencePieceTokenizer:
        path = Path(directory) / SENTENCEPIECE_MODEL
        if not path.is_file():
            raise TextTokenizerError(f"{path}: sentencepiece model not found")
        return cls(path.read_bytes())

    @property
    def vocab_size(self) -> int:
        return self.processor.get_piece_size()

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        ids = self.processor.encode(text)
        return wrap_special(ids, self.bos_id, self.eos_id) if add_special_tokens else ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.processor.decode(list(ids))

    def tokens(self) -> list[str]:
        return [self.processor.id_to_piece(i) for i in range(self.vocab_size)]

    def surfaces(self) -> list[str]:
        processor = self.processor
        return [
            ""
            if processor.is_control(i) or processor.is_unknown(i)
            else processor.id_to_piece(i).replace("\u2581", " ")
            for i in range(self.vocab_size)
        ]

    def save(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(directory / SENTENCEPIECE_MODEL, self.model_proto)
        _write_config(directory, {"type": "sentencepiece", "model": SENTENCEPIECE_MODEL})


def train_sentencepiece(
    corpus_lines: Iterable[str],
    vocab_size: int,
    model_type: str = "bpe",
    out_dir: str | os.PathLike | None = None,
    character_coverage: float = 1.0,
) -> SentencePieceTokenizer:
    """Train a sentencepiece model on text lines (no uttids); save it to out_dir if given.

    model_type "char": vocab_size is an upper bound, the model has as many pieces as the corpus
    has characters (plus unk, bos, eos). Ids: unk 0, bos 1, eos 2, no pad (the joint vocabulary
    has its own).
    """
    if model_type not in ("bpe", "char", "unigram"):
        raise TextTokenizerError(f"model_type must be bpe, char or unigram, got {model_type!r}")
    lines = [line.strip() for line in corpus_lines if line.strip()]
    if not lines:
        raise TextTokenizerError("cannot train a text tokenizer on an empty corpus")
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=model,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            unk_id=0,
            bos_id=1,
            eos_id=2,
            pad_id=-1,
            # A char model's size is fixed by the corpus; BPE may stop short on tiny corpora.
            hard_vocab_limit=False,
            minloglevel=2,
        )
    except RuntimeError as e:
        raise TextTokenizerError(f"sentencepiece training failed: {e}") from None
    tokenizer = SentencePieceTokenizer(model.getvalue())
    if out_dir is not None:
        tokenizer.save(out_dir)
    return tokenizer


def load_text_tokenizer(directory: str | os.PathLike) -> TextTokenizer:
    """Load a directory saved by either backend, or a plain Hugging Face model directory."""
    directory = Path(directory)
    config_path = directory / CONFIG_NAME
    if config_path.is_file():
        config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
        kind = config.get("type") if isinstance(config, dict) else None
    elif (directory / SENTENCEPIECE_MODEL).is_file():
        kind = "sentencepiece"
    else:
        kind = "hf"  # a base LM directory as downloaded: tokenizer.json / tokenizer_config.json
    if kind == "hf":
        return HFTextTokenizer.load(directory)
    if kind == "sentencepiece":
        return SentencePieceTokenizer.load(directory)
    raise TextTokenizerError(f"{config_path}: unknown text tokenizer type {kind!r}")
