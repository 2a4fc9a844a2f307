"""score_text: perplexity against hand computations, multiple choice with a forced-answer model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from tiny_model import TinyModel

from opuslm.bin import score_text
from opuslm.eval.text_scoring import TextScoringError, read_questions
from opuslm.packing import load_packed
from opuslm.tasks import Example, build_sequence
from opuslm.tokenizers.text import load_text_tokenizer

LINES = ["the cat sat on the mat", "", "we read good books in the park", "a dog"]


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("held_out") / "held_out.txt"
    path.write_text("\n".join(LINES) + "\n")
    return path


def save_hf_model(model: transformers.PreTrainedModel, directory: Path) -> Path:
    model.save_pretrained(directory)
    return directory


def tiny_llama(vocab_size: int, seed: int = 0) -> transformers.LlamaForCausalLM:
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    return transformers.LlamaForCausalLM(config).eval()


def run_score(output_dir: Path, *argv: str) -> dict:
    assert score_text.main([*argv, "--output_dir", str(output_dir), "--batch_size", "2"]) == 0
    return json.loads((output_dir / "score.json").read_text())


def test_hf_perplexity_is_exp_of_the_mean_nll_by_hand(tiny: TinyModel, held_out, tmp_path: Path):
    tokenizer = load_text_tokenizer(tiny.text_tokenizer_dir)
    model = tiny_llama(tokenizer.vocab_size)
    model_dir = save_hf_model(model, tmp_path / "hf")
    score = run_score(
        tmp_path / "score",
        *("--hf_model_dir", str(model_dir), "--text_tokenizer_dir", str(tiny.text_tokenizer_dir)),
        *("--text", str(held_out)),
    )
    nll_sum, num_tokens = 0.0, 0
    for line in filter(None, LINES):
        ids = torch.tensor([tokenizer.encode(line, add_special_tokens=True)])
        with torch.no_grad():
            mean_nll = model(input_ids=ids, labels=ids).loss.item()  # HF shifts the labels
        nll_sum += mean_nll * (ids.shape[1] - 1)
        num_tokens += ids.shape[1] - 1
    assert score["task"] == "text" and score["num_lines"] == 3
    assert score["num_tokens"] == num_tokens
    assert score["ppl"] == pytest.approx(math.exp(nll_sum / num_tokens), rel=1e-5)


def test_opuslm_perplexity_matches_the_textlm_training_loss(tiny: TinyModel, held_out, tmp_path):
    score = run_score(tmp_path, "--model_dir", str(tiny.packed_dir), "--text", str(held_out))
    packed = load_packed(tiny.packed_dir)
    nll_sum, count = 0.0, 0
    for line in filter(None, LINES):
        ids = np.array(packed.text_tokenizer.encode(line, add_special_tokens=True))
        sequence = build_sequence("textlm", Example("x", text=ids), packed.token_list)
        with torch.no_grad():
            out = packed.model(
                torch.from_numpy(sequence.frames)[None],
                torch.from_numpy(sequence.loss_mask)[None],
                torch.tensor([len(ids)]),
            )
        nll_sum += out.stats["loss_sum/stream0"]
        count += int(out.stats["count/stream0"])
    assert score["num_tokens"] == count
    assert score["ppl"] == pytest.approx(math.exp(nll_sum / count), rel=1e-5)


def forced_model(vocab_size: int, forced_id: int) -> transformers.LlamaForCausalLM:
    """A Llama that predicts `forced_id` with probability ~1 whatever the context: every token
    embeds to the same vector, the layers add nothing, and only the forced row of the head sees
    the (constant) final hidden state."""
    model = tiny_llama(vocab_size)
    with torch.no_grad():
        model.model.embed_tokens.weight.fill_(1.0)
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        model.lm_head.weight[forced_id] = 2.0
    return model


def test_multiple_choice_accuracy_with_a_forced_answer(tiny: TinyModel, tmp_path: Path):
    tokenizer = load_text_tokenizer(tiny.text_tokenizer_dir)
    (forced_id,) = tokenizer.encode("a")[-1:]
    model_dir = save_hf_model(forced_model(tokenizer.vocab_size, forced_id), tmp_path / "hf")
    # The model favours the choice with the most "a"s: right, right, then wrong.
    questions = [
        {"question": "which pet purrs", "choices": ["dog", "cat", "red"], "answer": 1},
        {"question": "what is on the floor", "choices": ["mat", "ink", "dog"], "answer": "A"},
        {"question": "what colour is ink", "choices": ["red", "bed", "lab"], "answer": "a"},
    ]
    mmlu = tmp_path / "mmlu.jsonl"
    mmlu.write_text("".join(json.dumps(q) + "\n" for q in questions))
    score = run_score(
        tmp_path / "score",
        *("--hf_model_dir", str(model_dir), "--text_tokenizer_dir", str(tiny.text_tokenizer_dir)),
        *("--mmlu", str(mmlu)),
    )
    assert score["mmlu_num_questions"] == 3
    assert score["mmlu_accuracy"] == pytest.approx(200 / 3)


def test_malformed_questions_are_named_by_line(tmp_path: Path):
    path = tmp_path / "mmlu.jsonl"
    path.write_text(
        json.dumps({"question": "q", "choices": ["a", "b"], "answer": 0})
        + "\n"
        + json.dumps({"question": "q", "choices": ["a", "b"], "answer": "C"})
        + "\n"
    )
    with pytest.raises(TextScoringError, match=r"mmlu.jsonl:2: answer 'C' is outside"):
        read_questions(path)


def test_base_lm_export_and_opuslm_score_the_same_tokens(tiny: TinyModel, held_out, tmp_path):
    """The recipe's stage 10 pair: the exported base LM (text rows only) and the packed OpusLM of
    the same weights count the same units; the export renormalises over the text ids, so its
    perplexity can only be lower. Kaldi text (uttid first) scores as its plain lines."""
    from opuslm.bin import export_hf

    kaldi = tmp_path / "text"
    kaldi.write_text("".join(f"utt{i} {line}\n" for i, line in enumerate(LINES)))
    assert (
        export_hf.main(
            ["--checkpoint", str(tiny.checkpoint_dir), "--output_dir", str(tmp_path / "hf")]
        )
        == 0
    )
    text = ("--text", str(kaldi), "--text_format", "kaldi", "--test_set", "held")
    base = run_score(
        tmp_path / "base",
        *(
            "--hf_model_dir",
            str(tmp_path / "hf"),
            "--text_tokenizer_dir",
            str(tiny.text_tokenizer_dir),
        ),
        *text,
    )
    opus = run_score(tmp_path / "opus", "--model_dir", str(tiny.packed_dir), *text)
    plain = run_score(
        tmp_path / "plain", "--model_dir", str(tiny.packed_dir), "--text", str(held_out)
    )
    assert opus["ppl"] == pytest.approx(plain["ppl"], rel=1e-9)
    assert base["test_set"] == opus["test_set"] == "held"
    assert base["tokenizer_md5"] == opus["tokenizer_md5"]
    assert base["num_tokens"] == opus["num_tokens"] == plain["num_tokens"]
    assert base["ppl"] < opus["ppl"]
