"""Text tokenizers: both backends round-trip, save/load, and list their tokens in id order."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opuslm.tokenizers.text import (
    CONFIG_NAME,
    HFTextTokenizer,
    SentencePieceTokenizer,
    TextTokenizerError,
    load_text_tokenizer,
    train_sentencepiece,
)

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "a stitch in time saves nine",
    "all that glitters is not gold",
    "the early bird catches the worm",
    "actions speak louder than words",
] * 4


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A tiny byte-level BPE tokenizer built offline and saved in Hugging Face format."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="<|endoftext|>"
    )
    directory = tmp_path_factory.mktemp("hf_tok")
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def sp_tokenizer():
    return train_sentencepiece(CORPUS, vocab_size=60, model_type="bpe")


def test_hf_backend_loads_plain_hf_dir_and_round_trips(hf_dir, tmp_path):
    tok = load_text_tokenizer(hf_dir)
    assert isinstance(tok, HFTextTokenizer)
    text = "the lazy fox saves gold"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.bos_id not in ids and tok.eos_id not in ids
    assert tok.encode(text, add_special_tokens=True) == [tok.bos_id, *ids, tok.eos_id]
    tokens = tok.tokens()
    assert len(tokens) == tok.vocab_size and tokens[tok.eos_id] == "<|endoftext|>"
    # Saving keeps the ids unchanged (the base LM's embedding rows depend on them).
    tok.save(tmp_path / "saved")
    assert (tmp_path / "saved" / CONFIG_NAME).is_file()
    again = load_text_tokenizer(tmp_path / "saved")
    assert again.encode(text) == ids and again.tokens() == tokens


def test_hf_ids_with_gaps_keep_their_ids(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"<unk>": 0, "a": 1, "b": 4}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>").save_pretrained(tmp_path)
    tok = load_text_tokenizer(tmp_path)
    assert tok.vocab_size == 5
    assert tok.tokens() == ["<unk>", "a", "<unused_text_2>", "<unused_text_3>", "b"]
    assert tok.encode("a b") == [1, 4]


def test_sentencepiece_bpe_round_trip_and_save_load(sp_tokenizer, tmp_path):
    text = "the early fox is not lazy"
    ids = sp_tokenizer.encode(text)
    assert sp_tokenizer.decode(ids) == text
    assert sp_tokenizer.vocab_size == 60
    assert (sp_tokenizer.unk_id, sp_tokenizer.bos_id, sp_tokenizer.eos_id) == (0, 1, 2)
    assert sp_tokenizer.tokens()[:3] == ["<unk>", "<s>", "</s>"]
    assert sp_tokenizer.encode(text, add_special_tokens=True) == [1, *ids, 2]
    sp_tokenizer.save(tmp_path)
    loaded = load_text_tokenizer(tmp_path)
    assert isinstance(loaded, SentencePieceTokenizer)
    assert loaded.encode(text) == ids and loaded.tokens() == sp_tokenizer.tokens()


def test_char_model_has_one_piece_per_character():
    tok = train_sentencepiece(["abc cab", "bca"], vocab_size=1000, model_type="char")
    # unk, bos, eos, the word-boundary marker and a, b, c.
    assert sorted(tok.tokens()[3:]) == sorted(["▁", "a", "b", "c"])
    assert tok.decode(tok.encode("cab abc")) == "cab abc"
    assert tok.unk_id in tok.encode("xyz")


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from(sorted({w for s in CORPUS for w in s.split()})), min_size=1))
def test_sentencepiece_round_trip_property(sp_tokenizer, words):
    text = " ".join(words)
    assert sp_tokenizer.decode(sp_tokenizer.encode(text)) == text


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(TextTokenizerError, match="empty corpus"):
        train_sentencepiece(["", "  "], vocab_size=10)
    with pytest.raises(TextTokenizerError, match="model_type"):
        train_sentencepiece(["abc"], vocab_size=10, model_type="word2vec")
    (tmp_path / CONFIG_NAME).write_text("type: magic\n")
    with pytest.raises(TextTokenizerError, match="unknown text tokenizer type 'magic'"):
        load_text_tokenizer(tmp_path)
    with pytest.raises(TextTokenizerError, match="cannot load a Hugging Face tokenizer"):
        load_text_tokenizer(tmp_path / "nowhere")


@pytest.mark.parametrize("backend", ["hf", "sentencepiece"])
def test_surfaces_join_to_the_text_with_its_spaces(backend, hf_dir, sp_tokenizer):
    """The lexicon of ASR decoding reads words off the surfaces of single ids: joined, they give
    the text back (sentencepiece adds the leading space of the first word), and special ids
    add nothing."""
    tok = load_text_tokenizer(hf_dir) if backend == "hf" else sp_tokenizer
    surfaces = tok.surfaces()
    assert len(surfaces) == tok.vocab_size
    text = "the lazy fox saves gold"
    joined = "".join(surfaces[i] for i in tok.encode(text))
    assert joined.strip() == text and joined.endswith("gold")
    assert " lazy" in joined
    specials = [i for i in (tok.bos_id, tok.eos_id, tok.unk_id) if i is not None]
    assert specials and all(surfaces[i] == "" for i in specials)
