"""Text skills: perplexity on held-out text and MMLU-style multiple choice by log-likelihood.

Both go through a scorer that gives log p(token_i | tokens before it) for token sequences:

    HFTokenScorer      a plain Hugging Face causal LM (e.g. the base LM before speech training)
    OpusLMTokenScorer  a MultiStreamLM, the text scored as the `textlm` task: text ids in stream 0,
                       pad in the other streams, predicted over the full joint vocabulary

Sequences are the tokenizer's ids wrapped in its own bos / eos (as the textlm training data), so
a base LM and the OpusLM built from it, which share the tokenizer, score the same tokens. The first
token of a sequence has no context and is not scored: perplexity is
exp(sum of NLL / number of scored tokens) over all lines.

Multiple choice: the context is `"{question}\\nAnswer:"` after bos, each choice is scored as the
sum of the log-probabilities of the tokens of `" {choice}"` given the context, and the highest
sum is the prediction (lm-evaluation-harness' `acc`).
"""

from __future__ import annotations

import json
import math
import os
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from opuslm.model.delay import delay
from opuslm.model.lm import MultiStreamLM


class TextScoringError(ValueError):
    """Bad input: a malformed multiple-choice file, nothing to score."""


class TokenScorer(Protocol):
    def token_logprobs(self, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Per sequence of L ids: float64 [L-1], log p(ids[i] | ids[:i]) for i = 1..L-1."""
        ...


def _gather(logits: torch.Tensor, ids: torch.Tensor, lengths: list[int]) -> list[np.ndarray]:
    """logits [B, L-1, V] predicting ids[:, 1:] -> log-probabilities [L_i - 1] per sequence."""
    logprobs = F.log_softmax(logits.double(), dim=-1)
    picked = logprobs.gather(-1, ids[:, 1:, None])[..., 0].cpu().numpy()
    return [picked[i, : n - 1] for i, n in enumerate(lengths)]


def _right_padded(sequences: Sequence[Sequence[int]], pad: int, device) -> torch.Tensor:
    """LongTensor [B, max L]; causal models never look at the padding after a sequence."""
    width = max(len(s) for s in sequences)
    batch = torch.full((len(sequences), width), pad, dtype=torch.long)
    for i, ids in enumerate(sequences):
        batch[i, : len(ids)] = torch.as_tensor(list(ids), dtype=torch.long)
    return batch.to(device)


class HFTokenScorer:
    """A Hugging Face causal LM (`AutoModelForCausalLM`)."""

    def __init__(self, model) -> None:
        self.model = model.eval()

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str = "cpu") -> HFTokenScorer:
        import transformers

        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(directory), local_files_only=True, dtype=torch.float32
        )
        return cls(model.to(device))

    def token_logprobs(self, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
        ids = _right_padded(sequences, 0, self.model.device)
        with torch.no_grad():
            logits = self.model(input_ids=ids).logits[:, :-1]
        return _gather(logits, ids, [len(s) for s in sequences])


class OpusLMTokenScorer:
    """A MultiStreamLM scoring text as the textlm task (stream 0 only)."""

    def __init__(self, model: MultiStreamLM) -> None:
        self.model = model.eval()
        self.token_list = model.token_list

    def token_logprobs(self, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
        pad = self.token_list.pad_id
        text = _right_padded(
            [self.token_list.encode_text(s) for s in sequences], pad, self.model.device
        )
        frames = torch.full((*text.shape, self.token_list.num_streams), pad, device=text.device)
        frames[..., 0] = text
        # Stream 0 is not delayed, so delayed row t holds text token t (the other streams: pad).
        delayed = delay(frames, pad)[:, : text.shape[1]]
        with torch.no_grad():
            hidden, _ = self.model.hidden_states(delayed[:, :-1])
            logits = self.model.stream0_logits(hidden)
        return _gather(logits, text, [len(s) for s in sequences])


def _batched_logprobs(
    scorer: TokenScorer, sequences: list[list[int]], batch_size: int
) -> list[np.ndarray]:
    """token_logprobs over batches of similar length (less padding); results in input order."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    results: list[np.ndarray] = [np.empty(0)] * len(sequences)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        for i, logprobs in zip(chunk, scorer.token_logprobs([sequences[i] for i in chunk])):
            results[i] = logprobs
    return results


def _with_bos(tokenizer, ids: list[int]) -> list[int]:
    return ([tokenizer.bos_id] if tokenizer.bos_id is not None else []) + ids


# ------------------------------------------------------------------------------ perplexity
@dataclass
class PerplexityResult:
    nll_sum: float
    num_tokens: int
    num_lines: int

    @property
    def nll_per_token(self) -> float:
        return self.nll_sum / self.num_tokens

    @property
    def ppl(self) -> float:
        return math.exp(self.nll_per_token)


def perplexity(
    scorer: TokenScorer, tokenizer, lines: Sequence[str], batch_size: int = 8
) -> PerplexityResult:
    """Perplexity per token of plain text lines (empty lines are skipped)."""
    sequences = [tokenizer.encode(line, add_special_tokens=True) for line in lines if line.strip()]
    sequences = [s for s in sequences if len(s) >= 2]
    if not sequences:
        raise TextScoringError("no line with at least two tokens to score")
    logprobs = _batched_logprobs(scorer, sequences, batch_size)
    return PerplexityResult(
        nll_sum=float(-sum(lp.sum() for lp in logprobs)),
        num_tokens=sum(len(lp) for lp in logprobs),
        num_lines=len(sequences),
    )


# ------------------------------------------------------------------------------ multiple choice
@dataclass
class Question:
    question: str
    choices: list[str]
    answer: int  # index into choices


def _answer_index(answer: object, num_choices: int, where: str) -> int:
    if isinstance(answer, str) and len(answer.strip()) == 1 and answer.strip().isalpha():
        index = string.ascii_uppercase.index(answer.strip().upper())
    elif isinstance(answer, int) and not isinstance(answer, bool):
        index = answer
    else:
        raise TextScoringError(f"{where}: answer must be a choice index or letter, got {answer!r}")
    if not 0 <= index < num_choices:
        raise TextScoringError(f"{where}: answer {answer!r} is outside the {num_choices} choices")
    return index


def read_questions(path: str | os.PathLike) -> list[Question]:
    """JSON lines `{"question": str, "choices": [str, ...], "answer": index or letter}`."""
    questions = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise TextScoringError(f"{where}: not valid JSON ({e})") from None
            if not isinstance(record, dict) or not {"question", "choices", "answer"} <= set(record):
                raise TextScoringError(f"{where}: needs the keys question, choices and answer")
            choices = record["choices"]
            if not isinstance(choices, list) or len(choices) < 2:
                raise TextScoringError(f"{where}: choices must be a list of at least 2 strings")
            answer = _answer_index(record["answer"], len(choices), where)
            questions.append(Question(str(record["question"]), [str(c) for c in choices], answer))
    if not questions:
        raise TextScoringError(f"{path}: no questions")
    return questions


@dataclass
class MultipleChoiceResult:
    predictions: list[int]
    answers: list[int]

    @property
    def accuracy(self) -> float:
        hits = sum(p == a for p, a in zip(self.predictions, self.answers))
        return hits / len(self.answers)


def multiple_choice(
    scorer: TokenScorer, tokenizer, questions: Sequence[Question], batch_size: int = 8
) -> MultipleChoiceResult:
    """Pick, per question, the choice with the highest log-likelihood given the question."""
    sequences, spans = [], []  # spans: (question index, number of choice tokens)
    for q_index, question in enumerate(questions):
        context = _with_bos(tokenizer, tokenizer.encode(f"{question.question}\nAnswer:"))
        for choice in question.choices:
            continuation = tokenizer.encode(f" {choice}")
            if not continuation:
                raise TextScoringError(f"question {q_index + 1}: choice {choice!r} has no tokens")
            sequences.append(context + continuation)
            spans.append((q_index, len(continuation)))
    logprobs = _batched_logprobs(scorer, sequences, batch_size)
    scores: list[list[float]] = [[] for _ in questions]
    for (q_index, length), lp in zip(spans, logprobs):
        scores[q_index].append(float(lp[-length:].sum()))
    return MultipleChoiceResult(
        predictions=[int(np.argmax(s)) for s in scores],
        answers=[q.answer for q in questions],
    )


def read_lines(path: str | os.PathLike) -> list[str]:
    return Path(path).read_text(encoding="utf-8").splitlines()
