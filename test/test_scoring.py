"""ASR scoring: normalisers, WER/CER, score_asr end to end, RESULTS.md gathering."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from opuslm.bin import results, score_asr
from opuslm.eval.asr_scoring import ScoringError, read_kaldi_text, score_texts
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


# --------------------------------------------------------------------------- WER / CER
def test_wer_cer_hand_checked():
    score = score_texts(
        ["a", "b"], ["the cat sat on the mat", "hello world"], ["the cat sit on mat", "hello world"]
    )
    # "sat" -> "sit" is one substitution, the second "the" one deletion: 2 errors / 8 words.
    assert (score.words.substitutions, score.words.deletions, score.words.insertions) == (1, 1, 0)
    assert score.words.error_rate == pytest.approx(100 * 2 / 8)
    # Characters (spaces count): "sat"->"sit" 1 sub, "the " 4 deletions, of 22 + 11 characters.
    assert score.chars.num_ref == 33
    assert score.chars.error_rate == pytest.approx(100 * 5 / 33)
    first = score.utterances[0]
    assert (first.words.hits, first.words.num_errors) == (4, 2)


def test_single_pair_golden_wer():
    score = score_texts(["u"], ["the cat sat on the mat"], ["the cat sit on mat"])
    assert score.to_json()["wer"] == pytest.approx(33.3333)


def test_normalizer_applies_to_both_sides():
    refs, hyps = ["The colour is Grey."], ["the color is gray"]
    assert score_texts(["u"], refs, hyps, "whisper_english").words.error_rate == 0.0
    assert score_texts(["u"], refs, hyps, "none").words.num_errors == 3


def test_empty_references_are_an_error():
    with pytest.raises(ScoringError, match="references are empty"):
        score_texts(["u"], ["Um, uh."], ["hello"])


def test_sclite_alignment_lines():
    score = score_texts(["u"], ["a big cat sat"], ["a cat sat down"], normalizer="none")
    utt = score.utterances[0]
    assert utt.ref_line == "a BIG cat sat ****"
    assert utt.hyp_line == "a *** cat sat DOWN"


# --------------------------------------------------------------------------- Kaldi text files
def test_read_kaldi_text(tmp_path):
    path = tmp_path / "text"
    path.write_text("u1 hello  there\n\nu2\nu3\tTab separated\n", encoding="utf-8")
    assert read_kaldi_text(path) == {"u1": "hello  there", "u2": "", "u3": "Tab separated"}


def test_read_kaldi_text_duplicate_names_file_and_line(tmp_path):
    path = tmp_path / "text"
    path.write_text("u1 a\nu2 b\nu1 c\n", encoding="utf-8")
    with pytest.raises(
        ScoringError, match=rf"{path}:3: duplicate utterance id 'u1' \(first on line 1\)"
    ):
        read_kaldi_text(path)


def test_read_kaldi_text_bad_utf8(tmp_path):
    path = tmp_path / "text"
    path.write_bytes(b"u1 ok\nu2 caf\xe9\n")
    with pytest.raises(ScoringError, match=rf"{path}:2: not valid UTF-8"):
        read_kaldi_text(path)


# --------------------------------------------------------------------------- score_asr CLI
def write_text(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def test_score_asr_end_to_end(tmp_path):
    ref = write_text(
        tmp_path / "ref",
        ["u1 The cat sat on the mat.", "u2 Hello world", "u3 Colour me surprised"],
    )
    hyp = write_text(tmp_path / "hyp", ["u1 the cat sit on mat", "u3 color me surprised really"])
    out = tmp_path / "score"
    assert score_asr.main(["--ref", str(ref), "--hyp", str(hyp), "--output_dir", str(out)]) == 0
    score = json.loads((out / "score.json").read_text())
    # u1: 1 sub + 1 del, u2 missing: 2 del, u3: 1 ins -> 5 errors / 11 words.
    assert score == {
        "task": "asr",
        "wer": pytest.approx(100 * 5 / 11, abs=1e-4),
        "cer": pytest.approx(score["cer"]),
        "num_utts": 3,
        "num_ref_words": 11,
        "sub": pytest.approx(100 / 11, abs=1e-4),
        "del": pytest.approx(300 / 11, abs=1e-4),
        "ins": pytest.approx(100 / 11, abs=1e-4),
        "num_missing_hyps": 1,
        "normalizer": "whisper_english",
        # Per utterance 2/6, 2/2 and 1/3 errors: each of the 27 resamples of 3 utterances has a
        # chance of 1/27 (> 2.5%), so the interval runs from all-u3 (1/3) to all-u2 (2/2).
        "wer_interval_95": [33.33, 100.0],
    }
    report = (out / "result.txt").read_text()
    assert "id: (u1)\nScores: (#C #S #D #I) 4 1 1 0\n" in report
    assert "REF:  the cat SAT on THE mat\nHYP:  the cat SIT on *** mat\n" in report
    assert "REF:  HELLO WORLD\nHYP:  ***** *****\n" in report
    assert "Missing hypotheses (scored as all deletions): 1\n  u2\n" in report
    assert re.search(r"Words\s+3\s+11\s+63\.64\s+9\.09\s+27\.27\s+9\.09\s+45\.45", report)


def test_score_asr_extra_hypothesis_is_an_error(tmp_path, caplog):
    ref = write_text(tmp_path / "ref", ["u1 a b", "u2 c"])
    hyp = write_text(tmp_path / "hyp", ["u1 a b", "u9 x", "u8 y"])
    out = tmp_path / "score"
    assert score_asr.main(["--ref", str(ref), "--hyp", str(hyp), "--output_dir", str(out)]) == 1
    assert f"{hyp}: 2 utterance ids are not in {ref}: u9, u8" in caplog.text
    assert not (out / "score.json").exists()


def test_score_asr_no_common_ids_is_an_error(tmp_path, caplog):
    ref = write_text(tmp_path / "ref", ["u1 a b"])
    hyp = write_text(tmp_path / "hyp", [])
    args = ["--ref", str(ref), "--hyp", str(hyp), "--output_dir", str(tmp_path / "s")]
    assert score_asr.main(args) == 1
    assert "no utterance id in common" in caplog.text


def test_score_asr_basic_normalizer_option(tmp_path):
    ref = write_text(tmp_path / "ref", ["u1 The colour."])
    hyp = write_text(tmp_path / "hyp", ["u1 the color"])
    out = tmp_path / "score"
    args = ["--ref", str(ref), "--hyp", str(hyp), "--output_dir", str(out)]
    assert score_asr.main([*args, "--normalizer", "basic"]) == 0
    score = json.loads((out / "score.json").read_text())
    assert (score["wer"], score["normalizer"]) == (50.0, "basic")


# --------------------------------------------------------------------------- RESULTS.md
def write_score(directory: Path, **fields) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "score.json").write_text(json.dumps(fields), encoding="utf-8")


GOLDEN_RESULTS = """\
# RESULTS: tiny

Error rates in percent. Written by `python -m opuslm.bin.results`.

## asr: dev

| decode dir | WER | CER | #utts | normalizer |
|---|---|---|---|---|
| decode_asr_dev | 5.00 | 2.50 | 10 | basic |

## asr: test

| decode dir | WER | CER | #utts | normalizer | settings |
|---|---|---|---|---|---|
| decode_asr_test | 12.35 | 4.50 | 200 | whisper_english | text.greedy=True, max_frames=256 |
| sweep/beam2/test | 11.00 | 4.00 | 200 | whisper_english | - |

## tts: test

| decode dir | judge | WER | ref WER | WER ratio | best_of_n | settings |
|---|---|---|---|---|---|---|
| decode_tts_test | pocketsphinx | 30.00 | 20.00 | 1.50 | - | top_k=30 |
| decode_tts_test_best10 | pocketsphinx | 10.00 | 20.00 | 0.50 | 10 | - |
"""


def test_results_golden_table(tmp_path, capsys):
    exp = tmp_path / "tiny"
    asr = {
        "task": "asr",
        "wer": 12.345,
        "cer": 4.5,
        "num_utts": 200,
        "normalizer": "whisper_english",
    }
    write_score(exp / "decode_asr_test", **asr)
    (exp / "decode_asr_test" / "decode_config.yaml").write_text(
        "asr:\n  text: {greedy: true}\n  max_frames: 256\ntts:\n  min_frames: 1\n"
    )
    write_score(
        exp / "decode_asr_dev", task="asr", wer=5.0, cer=2.5, num_utts=10, normalizer="basic"
    )
    write_score(exp / "sweep" / "beam2" / "test", **asr | {"wer": 11.0, "cer": 4.0})
    tts = {"task": "tts", "judge": "pocketsphinx", "wer": 30.0, "ref_wer": 20.0, "wer_ratio": 1.5}
    write_score(exp / "decode_tts_test", **tts)
    (exp / "decode_tts_test" / "config.yaml").write_text("top_k: 30\n")
    best = tts | {"wer": 10.0, "wer_ratio": 0.5, "best_of_n": 10, "test_set": "test"}
    write_score(exp / "decode_tts_test_best10", **best)
    assert results.main([str(exp)]) == 0
    assert (exp / "RESULTS.md").read_text() == GOLDEN_RESULTS
    assert capsys.readouterr().out == GOLDEN_RESULTS


def test_results_errors_name_the_file(tmp_path, caplog):
    assert results.main([str(tmp_path)]) == 1
    assert "no score.json found" in caplog.text
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "score.json").write_text("{not json")
    assert results.main([str(tmp_path)]) == 1
    assert f"{tmp_path / 'd' / 'score.json'}: not valid JSON" in caplog.text
    (tmp_path / "d" / "score.json").write_text('{"wer": 1.0}')
    assert results.main([str(tmp_path)]) == 1
    assert "expected a JSON object with a 'task' field" in caplog.text
