"""The word n-gram LM of ASR decoding: Kneser-Ney estimates against a hand computation,
normalisation, the look-ahead scores per token, count files, beam search with it and the
make_lexicon command that writes it."""

import dataclasses
import math

import pytest
import torch
from test_generate import beam_search, ctc_model, prompts_for
from test_lexicon import ID, SURFACES, ids, transcript
from test_lm import NUM_TEXT

from opuslm.bin import make_lexicon
from opuslm.model.generate import GenerationConfig, _RowDecoder
from opuslm.model.lexicon import HypothesisStates, words_of
from opuslm.model.word_lm import EOS, WordLMError, WordLMScorer, WordNgramLM

SENTENCES = ["a b", "a c", "b c"]


def tiny_lm(order: int = 2) -> WordNgramLM:
    return WordNgramLM.from_sentences([s.split() for s in SENTENCES], order)


def test_bigram_probabilities_match_a_hand_computation():
    lm = tiny_lm()
    # Padded: <s> a b </s> / <s> a c </s> / <s> b c </s>. Unigram continuation counts (distinct
    # left words): a 1, b 2, c 2, </s> 2 (total 7); count-of-counts 1 once, 3 twice: D1 = 1/7.
    # Bigram counts: <s>a 2, ab 1, ac 1, b</s> 1, bc 1, c</s> 2, <s>b 1: D2 = 5 / (5 + 4).
    d1, d2, uniform = 1 / 7, 5 / 9, 1 / 4  # uniform over a, b, c and </s>
    unigram = {
        w: max(n - d1, 0) / 7 + (4 * d1 / 7) * uniform
        for w, n in {"a": 1, "b": 2, "c": 2, EOS: 2}.items()
    }
    assert sum(unigram.values()) == pytest.approx(1.0)
    # after "a": b 1, c 1 (total 2, two types): gamma = 2 * d2 / 2
    for word in ("a", "b", "c", EOS):
        seen = {"b": 1, "c": 1}.get(word, 0)
        expected = max(seen - d2, 0) / 2 + d2 * unigram[word]
        assert math.exp(lm.logprob(word, ["a"])) == pytest.approx(expected)
    # after <s>: a 2, b 1 (total 3)
    expected = (2 - d2) / 3 + (2 * d2 / 3) * unigram["a"]
    assert math.exp(lm.logprob("a")) == pytest.approx(expected)
    # an unseen history backs off to the unigrams; an unknown word gets the uniform floor
    assert math.exp(lm.logprob("c", ["zebra"])) == pytest.approx(unigram["c"])
    assert lm.logprob("zebra", ["a"]) == pytest.approx(math.log(uniform))


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_every_history_is_a_distribution(order):
    text = ["the cat sat on the mat", "the dog sat", "a cat and a dog", "on the mat the cat"]
    lm = WordNgramLM.from_sentences([words_of(t) for t in text], order)
    vocabulary = [*lm.words, EOS]
    for history in [[], ["the"], ["the", "cat"], ["sat", "on"], ["zebra", "the"], ["a", "zebra"]]:
        total = sum(math.exp(lm.logprob(w, history)) for w in vocabulary)
        assert total == pytest.approx(1.0)
        ids_ = lm.history_ids(history)
        assert lm.mass(ids_, 0, len(vocabulary)) == pytest.approx(1.0)
        # a prefix's mass is the sum of its words'
        lo, hi = lm.word_range("ca")
        assert [lm.words[i] for i in range(lo, hi)] == ["cat"]
        lo, hi = lm.word_range("t")
        assert lm.mass(ids_, lo, hi) == pytest.approx(
            sum(math.exp(lm.logprob(w, history)) for w in lm.words if w.startswith("t"))
        )


def walk(scorer: WordLMScorer, text_ids: list[int]) -> tuple[float, list[float]]:
    """(total log-prob of a hypothesis and its end, the score of each id)."""
    state, steps = scorer.start, []
    for i in text_ids:
        state, score = scorer.move(state, i)
        steps.append(score)
    return sum(steps) + scorer.end(state), steps


def sentence_logprob(lm: WordNgramLM, text: str) -> float:
    words = [*words_of(text), EOS]
    return sum(lm.logprob(w, words[:i]) for i, w in enumerate(words))


def test_look_ahead_scores_add_up_to_the_sentence_log_prob():
    lm = WordNgramLM.from_sentences(
        [words_of(t) for t in ["the cat sat", "the cats sat", "a bad cab", "the cab's bad"]], 3
    )
    scorer = WordLMScorer(lm, SURFACES)
    for pieces in [
        ("t", "h", "e", " ", "c", "a", "t", " ", "s", "a", "t"),
        (" th", "e ", "c", "a", "b", "'s", " ", "b", "a", "d", "."),  # multi-character pieces
        ("a", " ", "d", "o", "g", "!"),  # "dog" is not in the vocabulary
        ("b", "a"),  # ends inside a word: "ba" is a prefix only, so an unknown word
    ]:
        total, steps = walk(scorer, ids(*pieces))
        text = "".join(pieces)
        assert total == pytest.approx(sentence_logprob(lm, text)), text
        assert all(s <= 1e-9 for s in steps), (text, steps)
    # Characters inside a word share its probability: "c" after "the " pays for cat, cats and
    # cab at once; the rest of "cat" then costs only what sets it apart from those.
    _, steps = walk(scorer, ids("t", "h", "e", " ", "c", "a", "t", " "))
    after_the = lm.history_ids(["the"])
    assert steps[4] == pytest.approx(math.log(lm.mass(after_the, *lm.word_range("c"))))
    assert sum(steps[4:]) == pytest.approx(lm.logprob("cat", ["the"]))
    # An unknown word pays unk_logprob once, where it leaves the vocabulary, and then nothing.
    _, steps = walk(scorer, ids("d", "o", "g", "g", "y", " "))
    assert sum(steps[:2]) == pytest.approx(lm.unk_logprob)
    assert steps[2:] == [0.0, 0.0, 0.0, 0.0]
    assert scorer.move(scorer.start, NUM_TEXT + 3) == (scorer.start, 0.0)  # no text: no change


def test_the_bounded_memories_give_the_same_scores(monkeypatch):
    import opuslm.model.lexicon as lexicon_module
    import opuslm.model.word_lm as word_lm_module

    text = ("t", "h", "e", " ", "c", "a", "t", " ", "d", "o", "g", "!")
    sentences = [words_of(t) for t in ["the cat sat", "the dog", "a cat"]]
    unbounded = walk(WordLMScorer(WordNgramLM.from_sentences(sentences), SURFACES), ids(*text))
    for module in (lexicon_module, word_lm_module):
        monkeypatch.setattr(module, "CACHE_LIMIT", 3)
    scorer = WordLMScorer(WordNgramLM.from_sentences(sentences), SURFACES)
    total, steps = walk(scorer, ids(*text))
    assert total == pytest.approx(unbounded[0]) and steps == pytest.approx(unbounded[1])
    assert len(scorer._moves) <= 3 and len(scorer.lm._masses) <= 3


def test_count_files_round_trip_and_bad_lines_are_named(tmp_path):
    lm = tiny_lm(order=3)
    path = tmp_path / "word_lm.counts"
    lm.save(path)
    loaded = WordNgramLM.load(path)
    assert loaded.order == 3 and loaded.counts == lm.counts
    for history in ([], ["a"], ["a", "b"]):
        assert loaded.logprob("c", history) == pytest.approx(lm.logprob("c", history))
    bad = tmp_path / "bad.counts"
    bad.write_text("<s> <s> a\t2\na b\t1\n")
    with pytest.raises(WordLMError, match=r"bad.counts:2: expected 3 words, a tab and a count"):
        WordNgramLM.load(bad)
    bad.write_text("<s> a\tmany\n")
    with pytest.raises(WordLMError, match=r"bad.counts:1: expected 2 words"):
        WordNgramLM.load(bad)
    bad.write_text("\n")
    with pytest.raises(WordLMError, match="bad.counts: the word LM has no counts"):
        WordNgramLM.load(bad)
    with pytest.raises(WordLMError, match="missing.counts: cannot read the word LM"):
        WordNgramLM.load(tmp_path / "missing.counts")


def test_state_scores_only_scored_entries_and_follows_the_beam():
    lm = tiny_lm()
    scorer = WordLMScorer(lm, SURFACES)
    state = HypothesisStates(scorer, 2)
    state.advance(ids("a", "a"))
    state.advance([-1, ID[" "]])  # hyp 0 spells "a", hyp 1 has ended the word "a"
    scored = torch.zeros(2, NUM_TEXT, dtype=torch.bool)
    scored[:, ids("b", " ")] = True
    scores = state.scores(scored)
    a, after_a = lm.history_ids([]), lm.history_ids(["a"])
    assert scores[1, ID["b"]] == pytest.approx(math.log(lm.mass(after_a, *lm.word_range("b"))))
    # "ab" leaves the vocabulary from "a": the unknown word's cost less what "a" has paid
    paid = math.log(lm.mass(a, *lm.word_range("a")))
    assert scores[0, ID["b"]] == pytest.approx(lm.unk_logprob - paid)
    assert scores[0, ID[" "]] == pytest.approx(lm.logprob("a") - paid)  # "a" is a whole word
    assert float(scores[:, ID["c"]].abs().sum()) == 0  # not scored: left 0
    assert state.end_scores()[1] == pytest.approx(lm.logprob(EOS, ["a"]))
    state.select(torch.tensor([1, 1]))
    state.advance([ID["c"], -1])  # -1 (eos, pad): no change
    # "c" is the only word starting with c, so its first letter paid for all of it
    assert state.end_scores().tolist() == pytest.approx(
        [lm.logprob(EOS, ["a", "c"]), lm.logprob(EOS, ["a"])]
    )


def test_beam_search_adds_the_weighted_word_lm_and_a_heavy_one_decides():
    # "bad" alone is by far the likeliest sentence; 30 other words make an unknown one cost more.
    others = [[f"w{i}"] for i in range(30)]
    lm = WordNgramLM.from_sentences([["bad"]] * 20 + [["cab", "dab"], ["ace"]] + others, 2)
    scorer = WordLMScorer(lm, SURFACES)
    model = ctc_model(seed=5)
    prompts = prompts_for(model.token_list, seed=5)
    text_lo = model.token_list.ranges["text"][0]
    # Letters only (and eos): spaces cost a word LM nothing, so a heavy one would pick them.
    only = [text_lo + i for i in ids("a", "b", "c", "d", "e")]

    def decode(config):
        frames, scores = beam_search(model, prompts, config, beam=4, only=only)
        return [transcript(f) for f in frames], scores

    plain = GenerationConfig(target="text", min_frames=3, max_frames=9)
    free, free_scores = decode(plain)
    fused = GenerationConfig(
        target="text", min_frames=3, max_frames=9, word_lm=scorer, word_lm_weight=0.01
    )
    outputs, scores = decode(fused)
    same = 0
    for text, score, free_text, free_score in zip(outputs, scores, free, free_scores):
        if text == free_text:  # the same transcript: the score differs by its word LM term
            expected = float(free_score) + 0.01 * walk(scorer, [ID[c] for c in text])[0]
            assert float(score) == pytest.approx(expected, abs=1e-4)
            same += 1
    assert same > 0, (outputs, free)
    # A heavy word LM decides: each transcript is its likeliest sentence.
    strong, _ = decode(dataclasses.replace(fused, word_lm_weight=100.0))
    assert strong == ["bad"] * len(prompts), (strong, free)


def test_word_lm_settings_are_checked():
    with pytest.raises(ValueError, match="word_lm_weight must be >= 0"):
        GenerationConfig(target="text", word_lm_weight=-1.0)
    with pytest.raises(ValueError, match="word_lm_weight needs target 'text'"):
        GenerationConfig(target="speech", word_lm_weight=1.0)
    model = ctc_model()
    config = GenerationConfig(target="text", max_frames=2, word_lm_weight=1.0)
    with pytest.raises(ValueError, match="word_lm_weight > 0 needs a word LM"):
        _RowDecoder(model, prompts_for(model.token_list), config, seed=None)
    with pytest.raises(ValueError, match="order must be >= 1"):
        WordNgramLM.from_counts({("a",): 1}, 0)


CAT_TEXT = ["the cat sat on the mat", "the dog sat", "a cat and a dog", "on the mat the cat"]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_arpa_files_hold_the_estimate(tmp_path, order):
    """save_arpa writes the interpolated model as back-off n-grams; load reads it back to the
    same probabilities (to the file's 7 decimals), prefix masses included, with no counts."""
    lm = WordNgramLM.from_sentences([words_of(t) for t in CAT_TEXT], order)
    path = tmp_path / "lm.arpa"
    lm.save_arpa(path)
    text = path.read_text()
    assert text.startswith("\n\\data\\\nngram 1=") and text.endswith("\\end\\\n")
    loaded = WordNgramLM.load(path)
    assert loaded.order == order and loaded.words == lm.words and loaded.counts is None
    assert loaded.num_ngrams == lm.num_ngrams == len(lm.counts)
    assert loaded.unk_logprob == pytest.approx(lm.unk_logprob, abs=1e-6)
    for history in [[], ["the"], ["the", "cat"], ["sat", "on"], ["zebra", "the"], ["on", "the"]]:
        for word in [*lm.words, EOS, "zebra"]:
            assert loaded.logprob(word, history) == pytest.approx(
                lm.logprob(word, history), abs=1e-6
            ), (history, word)
        ids_ = lm.history_ids(history)
        for prefix in ["", "c", "ca", "t", "th", "d"]:
            lo, hi = lm.word_range(prefix)
            assert loaded.mass(ids_, lo, hi) == pytest.approx(lm.mass(ids_, lo, hi), rel=1e-5)
    with pytest.raises(ValueError, match="no counts: save_arpa"):
        loaded.save(tmp_path / "counts")


# A back-off bigram LM as SRILM or KenLM write one: upper case, <unk>, a word the decoder
# cannot spell as one word (WELL-KNOWN), a history with a back-off weight and none listed.
ARPA = """
\\data\\
ngram 1=7
ngram 2=4

\\1-grams:
-1.0\t<unk>
-99\t<s>\t-0.30103
-0.5\t</s>
-0.60206\tTHE\t-0.1
-0.69897\tCAT
-1.0\tDOG\t-0.2
-2.0\tWELL-KNOWN

\\2-grams:
-0.1\t<s> THE
-0.2\tTHE CAT
-0.3\tTHE WELL-KNOWN
-0.4\tCAT </s>

\\end\\
"""


def test_a_back_off_arpa_file_is_read_as_written(tmp_path, caplog):
    path = tmp_path / "lm.arpa"
    path.write_text(ARPA)
    with caplog.at_level("WARNING"):
        lm = WordNgramLM.load(path)
    assert "skipped 2 n-grams with <unk> or words the decoder cannot spell" in caplog.text
    assert lm.words == ["cat", "dog", "the"] and lm.order == 2
    assert lm.unk_logprob == pytest.approx(-math.log(10))
    p = {"the": 10**-0.60206, "cat": 10**-0.69897, "dog": 0.1, EOS: 10**-0.5}
    # listed: its own probability; not listed: the history's back-off weight times the unigram
    assert math.exp(lm.logprob("cat", ["the"])) == pytest.approx(10**-0.2)
    assert math.exp(lm.logprob("dog", ["the"])) == pytest.approx(10**-0.1 * p["dog"])
    assert math.exp(lm.logprob("the")) == pytest.approx(10**-0.1)  # after <s>
    assert math.exp(lm.logprob("cat")) == pytest.approx(10**-0.30103 * p["cat"])
    assert math.exp(lm.logprob(EOS, ["cat"])) == pytest.approx(10**-0.4)
    assert math.exp(lm.logprob("dog", ["cat"])) == pytest.approx(p["dog"])  # no weight: 1
    assert math.exp(lm.logprob("the", ["dog"])) == pytest.approx(10**-0.2 * p["the"])
    assert lm.logprob("mouse", ["the"]) == pytest.approx(-math.log(10))
    # a prefix's mass is its words' sum, listed and backed off alike ("": every word, no </s>)
    after_the = lm.history_ids(["the"])
    assert lm.mass(after_the, *lm.word_range("")) == pytest.approx(
        sum(math.exp(lm.logprob(w, ["the"])) for w in lm.words)
    )


@pytest.mark.parametrize(
    "edit, message",
    [
        (("ngram 2=4", "ngram 2=5"), "declares 5 2-grams, the file lists 4"),
        (("-0.2\tTHE CAT", "-0.2\tTHE"), r"lm.arpa:17: expected log10 p, 2 words"),
        (("-0.2\tTHE CAT", "x\tTHE CAT"), r"lm.arpa:17: expected log10 p"),
        (("\\2-grams:", "\\3-grams:"), r"lm.arpa:15: expected the \\2-grams: section"),
        (("ngram 1=7", "ngram one"), r"lm.arpa:3: expected 'ngram N=COUNT'"),
        (("-1.0\tDOG", "-1.0\tThe"), r"lm.arpa:12: 'the' is listed twice"),
    ],
)
def test_bad_arpa_files_are_named_by_line(tmp_path, edit, message):
    path = tmp_path / "lm.arpa"
    path.write_text(ARPA.replace(*edit))
    with pytest.raises(WordLMError, match=message):
        WordNgramLM.load(path)


def test_make_lexicon_writes_the_word_lm_of_the_same_text(tmp_path):
    (tmp_path / "a").write_text("u1 The cat sat.\nu2 the dog's bone\n")
    (tmp_path / "b").write_text("t1 THE END, the cat\n")
    counts = tmp_path / "word_lm.counts"
    args = ["--text", str(tmp_path / "a"), str(tmp_path / "b"), "--output", str(tmp_path / "lex")]
    assert make_lexicon.main([*args, "--word_lm", str(counts), "--word_lm_order", "2"]) == 0
    lm = WordNgramLM.load(counts)
    assert lm.order == 2
    assert lm.words == sorted(
        line.split()[0] for line in (tmp_path / "lex").read_text().splitlines()
    )
    assert lm.counts[("the", "cat")] == 2 and lm.counts[("<s>", "the")] == 3
    # a .arpa name gets the estimate instead of the counts
    arpa = tmp_path / "word_lm.arpa"
    assert make_lexicon.main([*args, "--word_lm", str(arpa), "--word_lm_order", "2"]) == 0
    estimate = WordNgramLM.load(arpa)
    assert estimate.counts is None and estimate.words == lm.words
    assert estimate.logprob("cat", ["the"]) == pytest.approx(lm.logprob("cat", ["the"]), abs=1e-6)
    with pytest.raises(SystemExit):
        make_lexicon.main([*args, "--word_lm", str(counts), "--word_lm_order", "0"])


def test_a_packed_word_lm_serves_asr_decoding(tiny, tmp_path):
    import soundfile as sf

    from opuslm import OpusLM
    from opuslm.packing import PackError, pack

    audios = [sf.read(p, dtype="float32") for p in tiny.wavs.values()]
    plain = OpusLM.from_pretrained(tiny.packed_dir)
    with pytest.raises(PackError, match="word_lm_weight > 0 needs a word LM.*--word_lm"):
        plain.transcribe(*audios[0], {"word_lm_weight": 1.0})
    counts = tmp_path / "word_lm.counts"
    WordNgramLM.from_sentences([["the", "cat", "sat"], ["a", "dog"]], 2).save(counts)
    inputs = tiny.pack_inputs()
    with pytest.raises(PackError, match="asr: word_lm_weight > 0 needs a word LM"):
        pack(**inputs, output_dir=tmp_path / "none", decoding={"asr": {"word_lm_weight": 1.0}})
    decoding = {"asr": {"word_lm_weight": 0.5, "beam_size": 4, "max_frames": 12}}
    packed = pack(**inputs, output_dir=tmp_path / "packed", word_lm=counts, decoding=decoding)
    assert (packed / "word_lm.counts").read_text() == counts.read_text()
    model = OpusLM.from_pretrained(packed)
    assert model.packed.word_lm.lm.counts == WordNgramLM.load(counts).counts
    config = model.decoding("asr")
    assert config.word_lm is model.packed.word_lm and config.word_lm_weight == 0.5
    assert model.decoding("asr", {"word_lm_weight": 0.0}).word_lm is None
    assert all(isinstance(t, str) for t in model.transcribe_batch(audios))
    # An ARPA file is packed as it is, under its own name, and serves the same.
    arpa = tmp_path / "lm.arpa"
    WordNgramLM.load(counts).save_arpa(arpa)
    packed = pack(**inputs, output_dir=tmp_path / "arpa", word_lm=arpa, decoding=decoding)
    assert (packed / "word_lm.arpa").read_text() == arpa.read_text()
    from_arpa = OpusLM.from_pretrained(packed)
    assert from_arpa.packed.word_lm.lm.counts is None
    assert from_arpa.transcribe_batch(audios) == model.transcribe_batch(audios)
    bad = tmp_path / "bad.counts"
    bad.write_text("the cat\t1\nthe\t2\n")
    with pytest.raises(PackError, match=r"bad.counts:2: expected 2 words"):
        pack(**inputs, output_dir=tmp_path / "bad", word_lm=bad)
