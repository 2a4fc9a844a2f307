"""ASR scoring: normalisers, WER/CER, score_asr end to end, RESULTS.md gathering."""

from __future__ import annotations

import pytest

from opuslm.eval.normalizer import NORMALIZERS, get_normalizer, normalize_english


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello,   WORLD! It's OK.", "hello world it is ok"),
        ("The colour of the theatre", "the color of the theater"),
        ("Mr. Smith analysed twenty-five apples.", "mister smith analyzed 25 apples"),
        ("Um, I think so.", "i think so"),
        ("one hundred and two", "102"),
        ("café naïve", "cafe naive"),
    ],
)
def test_english_normalizer(text, expected):
    assert normalize_english(text) == expected


def test_basic_and_none_normalizers():
    text = "Mr. Smith's  colour, twenty-five!"
    assert get_normalizer("basic")(text) == "mr smith s colour twenty five"
    assert get_normalizer("none")(text) == "Mr. Smith's colour, twenty-five!"
    assert set(NORMALIZERS) == {"whisper_english", "basic", "none"}


def test_unknown_normalizer_lists_choices():
    with pytest.raises(ValueError, match="whisper_english, basic, none"):
        get_normalizer("kaldi")
