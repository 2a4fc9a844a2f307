"""Text normalisers applied to both references and hypotheses before WER/CER.

The English normaliser is Whisper's (numbers to digits, contractions expanded, British to American
spelling, fillers and punctuation removed), taken from the `whisper-normalizer` package: it ships
the spelling table that transformers' copy of the same code only gets from the Hugging Face hub,
so it works offline. "basic" is Whisper's language-independent normaliser (lower case, symbols
and diacritics removed), "none" leaves the text unchanged apart from whitespace.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from whisper_normalizer.basic import BasicTextNormalizer
from whisper_normalizer.english import EnglishTextNormalizer

NORMALIZERS = ("whisper_english", "basic", "none")
DEFAULT_NORMALIZER = "whisper_english"


@cache
def _english() -> EnglishTextNormalizer:
    # Building it parses the ~1,700-entry spelling table: do it once per process.
    return EnglishTextNormalizer()


@cache
def _basic() -> BasicTextNormalizer:
    return BasicTextNormalizer()


def _collapse_spaces(text: str) -> str:
    return " ".join(text.split())


def normalize_english(text: str) -> str:
    """Whisper's English normalisation, e.g. "The colour, 25 Dollars!" -> "the color $25"."""
    return _collapse_spaces(_english()(text))


def normalize_basic(text: str) -> str:
    """Whisper's basic normalisation: lower case, symbols and diacritics replaced by spaces."""
    return _collapse_spaces(_basic()(text))


def normalize_none(text: str) -> str:
    """Whitespace-only normalisation: the text as given, runs of spaces collapsed."""
    return _collapse_spaces(text)


def get_normalizer(name: str) -> Callable[[str], str]:
    """The normaliser called `name` (one of NORMALIZERS)."""
    normalizers = {
        "whisper_english": normalize_english,
        "basic": normalize_basic,
        "none": normalize_none,
    }
    if name not in normalizers:
        raise ValueError(f"unknown normalizer {name!r}; choose one of {', '.join(NORMALIZERS)}")
    return normalizers[name]
