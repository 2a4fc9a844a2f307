"""Bootstrap intervals of corpus error rates (opuslm.eval.bootstrap)."""

from __future__ import annotations

import numpy as np
import pytest

from opuslm.eval.bootstrap import difference_interval, error_rate_interval


def corpus(num_utts: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-utterance (errors, reference words) [U] of a system with a WER of about 30%."""
    rng = np.random.default_rng(seed)
    words = rng.integers(5, 20, num_utts)
    return rng.binomial(words, 0.3), words


def test_the_interval_holds_the_rate_and_narrows_with_more_utterances():
    errors, words = corpus(100, seed=1)
    rate = 100 * errors.sum() / words.sum()
    low, high = error_rate_interval(errors, words)
    assert low < rate < high
    # Four times the utterances: about half the width (the width falls as 1 / sqrt(U)).
    low4, high4 = error_rate_interval(np.tile(errors, 4), np.tile(words, 4))
    assert 0.4 < (high4 - low4) / (high - low) < 0.6
    # The same seed, the same interval.
    assert error_rate_interval(errors, words) == (low, high)


def test_a_rate_every_utterance_shares_has_no_spread():
    assert error_rate_interval([0, 0, 0], [3, 4, 5]) == (0.0, 0.0)
    assert error_rate_interval([2, 2], [4, 4]) == (50.0, 50.0)
    assert error_rate_interval([1], [4]) == (25.0, 25.0)


def test_paired_differences_cancel_what_the_utterances_share():
    errors, words = corpus(100, seed=2)
    assert difference_interval(errors, errors, words) == (0.0, 0.0)
    # One error fewer on every fourth utterance: better beyond doubt, although the two systems'
    # own intervals overlap.
    better = errors - (np.arange(len(errors)) % 4 == 0) * (errors > 0)
    low, high = difference_interval(better, errors, words)
    assert high < 0
    own_low, own_high = error_rate_interval(errors, words)
    better_low, better_high = error_rate_interval(better, words)
    assert better_high > own_low
    # A difference that is only the draw: the second system is the first, shuffled.
    shuffled = np.random.default_rng(3).permutation(errors)
    low, high = difference_interval(shuffled, errors, words)
    assert low < 0 < high


def test_bad_counts_are_refused():
    with pytest.raises(ValueError, match="references are empty"):
        error_rate_interval([0, 0], [0, 0])
    with pytest.raises(ValueError, match="expected two"):
        error_rate_interval([1, 2], [3])
