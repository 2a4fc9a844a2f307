"""The word lexicon of ASR decoding: word splitting, charges per token, loading, beam search
with it, the make_lexicon command and packing a lexicon with a model."""

import dataclasses

import pytest
import torch
from test_generate import beam_search, ctc_model, prompts_for
from test_lm import NUM_TEXT

from opuslm.bin import make_lexicon
from opuslm.model.generate import GenerationConfig, _RowDecoder, generate
from opuslm.model.lexicon import OUT, ROOT, HypothesisStates, Lexicon, LexiconError, words_of

# Surfaces of the tiny token list's 40 text ids: a space, the letters, and a few pieces of the
# kinds real tokenizers have (punctuation, word-initial and word-final pieces, a contraction).
SURFACES = [" ", *"abcdefghijklmnopqrstuvwxyz", ".", ",", " th", "e ", "'s", "x1", "-"]
SURFACES += ["0", "9", "ing", "Q", "Z", "!"]
assert len(SURFACES) == NUM_TEXT
ID = {s: i for i, s in enumerate(SURFACES)}


def ids(*pieces: str) -> list[int]:
    return [ID[p] for p in pieces]


def charges_of(lexicon: Lexicon, text_ids: list[int], end: bool = True) -> int:
    """Words charged along a hypothesis, walked one id at a time (and its end)."""
    node, total = ROOT, 0
    for i in text_ids:
        node, charged = lexicon.move(node, i)
        total += charged
    return total + (lexicon.end(node) if end else 0)


def test_words_are_lower_cased_runs_of_letters_digits_and_apostrophes():
    assert words_of("It's a Well-known fact, 42 times.") == [
        "it's",
        "a",
        "well",
        "known",
        "fact",
        "42",
        "times",
    ]
    assert words_of(" -- ") == []


def test_each_unknown_word_is_charged_once():
    lexicon = Lexicon(["the", "cat", "cats", "the's", "Bad"], SURFACES)
    assert len(lexicon) == 5
    assert charges_of(lexicon, ids("t", "h", "e", " ", "c", "a", "t", ".")) == 0
    assert charges_of(lexicon, ids(" th", "e ", "b", "a", "d", "!")) == 0  # case-insensitive
    assert charges_of(lexicon, ids(" th", "e", "'s", " ", "c", "a", "t", "s")) == 0
    # "teh": charged at the "e" that leaves the lexicon, not again at the "h" or the space
    node, charged = lexicon.move(lexicon.move(ROOT, ID["t"])[0], ID["e"])
    assert (node, charged) == (OUT, 1)
    assert lexicon.move(node, ID["h"]) == (OUT, 0)
    assert lexicon.move(OUT, ID[" "]) == (ROOT, 0)
    assert lexicon.move(node, NUM_TEXT + 5) == (OUT, 0)  # a row past the tokenizer: no text
    assert charges_of(lexicon, ids("t", "e", "h", " ", "c", "a", "t")) == 1
    # a prefix that is not a word pays where it ends: at a boundary, or at the end
    assert charges_of(lexicon, ids("c", "a", ".")) == 1
    assert charges_of(lexicon, ids("c", "a"), end=False) == 0
    assert charges_of(lexicon, ids("c", "a")) == 1
    # a piece with a boundary inside ends one word and starts the next
    assert charges_of(lexicon, ids("c", "a", "e ", "c", "a", "t")) == 1  # "cae"
    assert charges_of(lexicon, ids("x1", "-", "c", "a", "t", "ing")) == 2  # "x1", "cating"


def test_lexicon_files_are_checked(tmp_path):
    good = tmp_path / "lexicon.txt"
    good.write_text("the 12\n\ncat 3\nCats\n")
    assert len(Lexicon.load(good, SURFACES)) == 3
    bad = tmp_path / "bad.txt"
    bad.write_text("the 12\nwell-known 2\n")
    with pytest.raises(LexiconError, match=r"bad.txt:2: 'well-known' is not one word"):
        Lexicon.load(bad, SURFACES)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(LexiconError, match="empty.txt: the lexicon has no words"):
        Lexicon.load(empty, SURFACES)
    with pytest.raises(LexiconError, match="missing.txt: cannot read the lexicon"):
        Lexicon.load(tmp_path / "missing.txt", SURFACES)


def test_state_charges_only_scored_entries_and_follows_the_beam():
    lexicon = Lexicon(["ab", "ba"], SURFACES)
    state = HypothesisStates(lexicon, 2)
    state.advance(ids("a", "b"))  # hyp 0 at "a", hyp 1 at "b"
    scored = torch.zeros(2, NUM_TEXT, dtype=torch.bool)
    scored[:, ids("a", "b", " ")] = True
    charges = state.scores(scored)
    assert charges[0, ids("a", "b", " ")].tolist() == [1, 0, 1]  # "aa", "ab", "a "
    assert charges[1, ids("a", "b", " ")].tolist() == [0, 1, 1]
    assert float(charges[:, ID["c"]].abs().sum()) == 0  # not scored: left 0
    assert state.end_scores().tolist() == [1, 1]
    state.select(torch.tensor([1, 1]))
    state.advance([ID["a"], -1])  # -1 (eos, pad): no change
    assert state.end_scores().tolist() == [0, 1]


def transcript(frames: torch.Tensor) -> str:
    return "".join(SURFACES[i] for i in frames[:, 0].tolist())


def test_a_large_penalty_keeps_beam_search_inside_the_lexicon():
    words = {"bad", "cab", "dab", "ace"}
    lexicon = Lexicon(sorted(words), SURFACES)
    model = ctc_model(seed=5)
    prompts = prompts_for(model.token_list, seed=5)
    text_lo = model.token_list.ranges["text"][0]
    only = [text_lo + i for i in ids(" ", "a", "b", "c", "d", "e")]  # and eos

    def decode(config):
        return [transcript(f) for f in beam_search(model, prompts, config, beam=4, only=only)[0]]

    plain = GenerationConfig(target="text", min_frames=3, max_frames=9)
    assert any(not set(words_of(t)) <= words for t in decode(plain))  # the random LM alone
    constrained = GenerationConfig(
        target="text", min_frames=3, max_frames=9, lexicon=lexicon, lexicon_penalty=1e4
    )
    outputs = decode(constrained)
    assert all(set(words_of(t)) <= words for t in outputs), outputs
    assert sum(len(words_of(t)) for t in outputs) >= 3, outputs  # not just spaces
    batched = generate(model, prompts, dataclasses.replace(constrained, beam_size=4))
    for prompt, output in zip(prompts, batched):  # batching does not mix lexicon states
        assert torch.equal(
            generate(model, [prompt], dataclasses.replace(constrained, beam_size=4))[0], output
        )


def test_the_penalty_is_subtracted_per_charged_word_and_joins_the_beam_score():
    lexicon = Lexicon(["ab", "ba"], SURFACES)
    model = ctc_model(seed=2)
    prompts = prompts_for(model.token_list, seed=2)[:2]
    config = GenerationConfig(
        target="text", max_frames=4, ctc_weight=0.5, lexicon=lexicon, lexicon_penalty=2.5
    )
    decoder = _RowDecoder(model, prompts, config, seed=None)
    lo = decoder.window[0]
    text_lo = model.token_list.ranges["text"][0] - lo
    decoder.word_scorers[0][0].advance(ids("a", "b"))
    scores = torch.randn(2, decoder.window[1] - lo)
    scores[:, text_lo + ID["c"]] = float("-inf")  # a banned id stays banned
    penalised = decoder._with_word_scores(scores)
    assert penalised[0, text_lo + ID["b"]] == scores[0, text_lo + ID["b"]]  # "ab"
    assert penalised[0, text_lo + ID["a"]] == scores[0, text_lo + ID["a"]] - 2.5  # "aa"
    assert penalised[1, text_lo + ID["a"]] == scores[1, text_lo + ID["a"]]  # "ba"
    eos = model.token_list.eos_id - lo
    assert penalised[:, eos].tolist() == pytest.approx((scores[:, eos] - 2.5).tolist())
    assert penalised[0, text_lo + ID["c"]] == float("-inf")
    # The returned beam score is the joint score less the penalties of its transcript.
    frames, score = beam_search(model, prompts, config, beam=3)
    free, free_score = beam_search(
        model, prompts, GenerationConfig(target="text", max_frames=4, ctc_weight=0.5), beam=3
    )
    for i in range(2):
        if torch.equal(frames[i], free[i]):
            charged = charges_of(lexicon, frames[i][:, 0].tolist())
            assert float(score[i]) == pytest.approx(float(free_score[i]) - 2.5 * charged)


def test_lexicon_settings_are_checked():
    with pytest.raises(ValueError, match="lexicon_penalty must be >= 0"):
        GenerationConfig(target="text", lexicon_penalty=-1.0)
    with pytest.raises(ValueError, match="lexicon_penalty needs target 'text'"):
        GenerationConfig(target="speech", lexicon_penalty=1.0)
    model = ctc_model()
    config = GenerationConfig(target="text", max_frames=2, lexicon_penalty=1.0)
    with pytest.raises(ValueError, match="lexicon_penalty > 0 needs a lexicon"):
        generate(model, prompts_for(model.token_list), config)


def test_make_lexicon_counts_the_words_of_text_tables(tmp_path, caplog):
    (tmp_path / "a").write_text("u1 The cat sat.\nu2 the dog's bone\nu3\n")
    (tmp_path / "b").write_text("t1 THE END, the cat\n")
    output = tmp_path / "lexicon.txt"
    args = ["--text", str(tmp_path / "a"), str(tmp_path / "b"), "--output", str(output)]
    assert make_lexicon.main(args) == 0
    assert output.read_text().splitlines() == [
        "the 4",
        "cat 2",
        "bone 1",
        "dog's 1",
        "end 1",
        "sat 1",
    ]
    assert make_lexicon.main([*args, "--min_count", "2"]) == 0
    assert output.read_text() == "the 4\ncat 2\n"
    assert len(Lexicon.load(output, SURFACES)) == 2
    assert make_lexicon.main([*args, "--min_count", "5"]) == 1
    (tmp_path / "c").write_text("u1 fine\nu1 twice\n")
    caplog.clear()
    assert make_lexicon.main(["--text", str(tmp_path / "c"), "--output", str(output)]) == 1
    assert "duplicate id 'u1'" in caplog.text


def test_a_packed_lexicon_serves_asr_decoding(tiny, tmp_path):
    import soundfile as sf

    from opuslm import OpusLM
    from opuslm.packing import PackError, pack

    audios = [sf.read(p, dtype="float32") for p in tiny.wavs.values()]
    plain = OpusLM.from_pretrained(tiny.packed_dir)
    with pytest.raises(PackError, match="lexicon_penalty > 0 needs a lexicon.*--lexicon"):
        plain.transcribe(*audios[0], {"lexicon_penalty": 1.0})
    words = {"the", "cat", "sat", "on", "mat", "a", "dog"}
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text("".join(f"{w} 1\n" for w in sorted(words)))
    inputs = tiny.pack_inputs()
    with pytest.raises(PackError, match="asr: lexicon_penalty > 0 needs a lexicon"):
        pack(**inputs, output_dir=tmp_path / "none", decoding={"asr": {"lexicon_penalty": 1.0}})
    decoding = {"asr": {"lexicon_penalty": 1e4, "beam_size": 8, "max_frames": 12}}
    packed = pack(**inputs, output_dir=tmp_path / "packed", lexicon=lexicon, decoding=decoding)
    assert (packed / "lexicon.txt").read_text() == lexicon.read_text()
    model = OpusLM.from_pretrained(packed)
    assert len(model.packed.lexicon) == len(words)
    constrained = model.transcribe_batch(audios)
    free = model.transcribe_batch(audios, {"lexicon_penalty": 0.0})
    assert model.decoding("asr").lexicon is model.packed.lexicon
    # The random LM spells non-words; with the packed lexicon's penalty (a beam of 8 finds a
    # transcript that pays none) every word is known. This random model prefers its control
    # pieces, which add no text, so words are few here; test_a_large_penalty_keeps_beam_search_
    # inside_the_lexicon checks the words chosen.
    assert any(not set(words_of(t)) <= words for t in free), free
    assert all(set(words_of(t)) <= words for t in constrained), constrained
    bad = tmp_path / "bad.txt"
    bad.write_text("two words\nfine-ish\n")
    with pytest.raises(PackError, match=r"bad.txt:2: 'fine-ish' is not one word"):
        pack(**inputs, output_dir=tmp_path / "bad", lexicon=bad)
