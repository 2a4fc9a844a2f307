"""CTC prefix scoring against brute force: every alignment of a tiny posterior enumerated."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from opuslm.model.ctc_prefix import CTCPrefixScorer

NUM_LABELS = 3  # blank = 3


def collapse(path: tuple[int, ...], blank: int) -> tuple[int, ...]:
    merged = [label for i, label in enumerate(path) if i == 0 or label != path[i - 1]]
    return tuple(label for label in merged if label != blank)


def brute_force(log_probs: torch.Tensor) -> dict[tuple[int, ...], float]:
    """{labelling: probability} over all (C + 1)^T alignments of one posterior [T, C + 1]."""
    probs = log_probs.double().exp()
    num_frames, classes = probs.shape
    totals: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(classes), repeat=num_frames):
        p = math.prod(float(probs[t, c]) for t, c in enumerate(path))
        key = collapse(path, classes - 1)
        totals[key] = totals.get(key, 0.0) + p
    return totals


def prefix_probability(totals: dict[tuple[int, ...], float], prefix: tuple[int, ...]) -> float:
    return sum(p for seq, p in totals.items() if seq[: len(prefix)] == prefix)


def walk(scorer: CTCPrefixScorer, prefix: tuple[int, ...], batch: int):
    """Advance every example along `prefix`; returns (psi(prefix) [B], P(prefix whole) [B])."""
    for label in prefix:
        scorer.score(torch.arange(NUM_LABELS).expand(batch, -1))
        scorer.advance(torch.full((batch,), label))
    candidates = torch.arange(NUM_LABELS).expand(batch, -1)
    _, whole = scorer.score(candidates)
    return scorer.prefix_score.clone(), whole


def random_posteriors(batch: int, num_frames: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(batch, num_frames, NUM_LABELS + 1, generator=generator)
    return logits.double().log_softmax(-1)


def test_prefix_and_whole_scores_equal_brute_force():
    # Example 1 has 3 valid frames of 5: its last two frames must be ignored.
    log_probs = random_posteriors(2, 5)
    lengths = torch.tensor([5, 3])
    totals = [brute_force(log_probs[i, : int(n)]) for i, n in enumerate(lengths)]
    prefixes = [p for n in range(4) for p in itertools.product(range(NUM_LABELS), repeat=n)]
    assert len(prefixes) == 40
    for prefix in prefixes:
        psi, whole = walk(CTCPrefixScorer(log_probs, lengths), prefix, 2)
        for i in range(2):
            expected_psi = prefix_probability(totals[i], prefix)
            expected_whole = totals[i].get(prefix, 0.0)
            assert math.exp(psi[i]) == pytest.approx(expected_psi, rel=1e-9, abs=1e-300)
            assert math.exp(whole[i]) == pytest.approx(expected_whole, rel=1e-9, abs=1e-300)
            if prefix:  # the whole-sequence score is CTC's own likelihood
                ctc = F.ctc_loss(
                    log_probs[i, : int(lengths[i]), None],
                    torch.tensor([prefix]),
                    lengths[i : i + 1],
                    torch.tensor([len(prefix)]),
                    blank=NUM_LABELS,
                    reduction="sum",
                )
                assert float(whole[i]) == pytest.approx(-float(ctc), abs=1e-9)


def test_scores_of_all_candidates_match_their_own_walk():
    """score() of K candidates at once == psi after advancing by each, repeats included."""
    log_probs = random_posteriors(2, 5, seed=1)
    lengths = torch.tensor([5, 4])
    scorer = CTCPrefixScorer(log_probs, lengths)
    scorer.score(torch.tensor([[1, 2], [2, 0]]))
    scorer.advance(torch.tensor([1, 2]))
    candidates = torch.tensor([[1, 0, 2], [2, 1, 0]])  # the first column repeats g's last label
    prefix, _ = scorer.score(candidates)
    for k in range(3):
        alone = CTCPrefixScorer(log_probs, lengths)
        alone.score(torch.tensor([[1], [2]]))
        alone.advance(torch.tensor([1, 2]))
        alone.score(candidates[:, k : k + 1])
        alone.advance(candidates[:, k])
        assert torch.allclose(alone.prefix_score, prefix[:, k], atol=1e-12)


def test_edge_lengths():
    # One frame: at most one label; no frames at all: only the empty output.
    log_probs = random_posteriors(2, 1, seed=2)
    scorer = CTCPrefixScorer(log_probs, torch.tensor([1, 0]))
    prefix, whole = scorer.score(torch.tensor([[0, 1], [0, 1]]))
    assert torch.allclose(prefix[0], log_probs[0, 0, :2])
    assert torch.equal(prefix[1], torch.full((2,), float("-inf"), dtype=prefix.dtype))
    assert float(whole[0]) == pytest.approx(float(log_probs[0, 0, NUM_LABELS]))
    assert float(whole[1]) == 0.0
    scorer.advance(torch.tensor([1, -1]))  # -1: example 1 keeps its (empty) hypothesis
    prefix, whole = scorer.score(torch.tensor([[0, 1], [0, 1]]))
    assert (prefix[0] == float("-inf")).all()  # a second label needs a second frame
    assert float(whole[0]) == pytest.approx(float(log_probs[0, 0, 1]))
    assert int(scorer.last[1]) == -1 and float(whole[1]) == 0.0
    empty = CTCPrefixScorer(torch.zeros(1, 0, NUM_LABELS + 1), torch.tensor([0]))
    prefix, whole = empty.score(torch.tensor([[2]]))
    assert float(prefix[0, 0]) == float("-inf") and float(whole[0]) == 0.0


def test_bad_inputs_raise():
    log_probs = random_posteriors(1, 3)
    with pytest.raises(ValueError, match="lengths"):
        CTCPrefixScorer(log_probs, torch.tensor([4]))
    scorer = CTCPrefixScorer(log_probs, torch.tensor([3]))
    with pytest.raises(RuntimeError, match="score"):
        scorer.advance(torch.tensor([0]))
    with pytest.raises(ValueError, match="candidate labels"):
        scorer.score(torch.tensor([[NUM_LABELS]]))
    scorer.score(torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="not all among"):
        scorer.advance(torch.tensor([2]))
