"""How far a corpus error rate can be trusted: bootstrap intervals over utterances.

A test set of 100 utterances gives a WER whose 95% interval is several points wide, so a target
missed or met by one point, or two systems one point apart, may be the draw of the utterances,
not the models. Following Bisani and Ney (2004, "Bootstrap estimates for confidence intervals in
ASR performance evaluation"), the utterances are resampled with replacement and the corpus rate
(errors summed over reference words summed, not a mean of per-utterance rates) recomputed each
time; for two systems on the same utterances the resampling is paired, so what the utterances
share cancels out. The resampling itself is scipy's (`scipy.stats.bootstrap`, percentile
intervals).

Inputs are per-utterance counts `[U]`: errors and reference lengths (words or characters).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 2000


def _interval(statistic, samples: tuple[np.ndarray, ...], seed: int) -> tuple[float, float]:
    from scipy.stats import bootstrap  # scipy.stats costs a second to import: only when used

    if samples[0].size < 2:  # one utterance: nothing to resample (scipy refuses it)
        value = float(statistic(*samples, axis=-1))
        return value, value
    result = bootstrap(
        samples,
        statistic,
        paired=True,
        vectorized=True,
        n_resamples=RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _counts(errors: Sequence[int], num_ref: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    errors, num_ref = np.asarray(errors, dtype=float), np.asarray(num_ref, dtype=float)
    if errors.shape != num_ref.shape or errors.ndim != 1:
        raise ValueError(f"errors {errors.shape} and num_ref {num_ref.shape}: expected two [U]")
    if num_ref.sum() <= 0:
        raise ValueError("error rates are undefined: the references are empty")
    return errors, num_ref


def error_rate_interval(
    errors: Sequence[int], num_ref: Sequence[int], seed: int = 0
) -> tuple[float, float]:
    """95% interval (percent) of the corpus error rate sum(errors) / sum(num_ref), both [U]."""
    errors, num_ref = _counts(errors, num_ref)

    def rate(e, n, axis=-1):
        return 100.0 * e.sum(axis) / n.sum(axis)

    return _interval(rate, (errors, num_ref), seed)


def difference_interval(
    errors_a: Sequence[int], errors_b: Sequence[int], num_ref: Sequence[int], seed: int = 0
) -> tuple[float, float]:
    """95% interval (percentage points) of rate(a) - rate(b) on the same utterances [U].

    An interval that excludes 0 says the difference is more than the draw of the utterances.
    """
    errors_a, num_ref = _counts(errors_a, num_ref)
    errors_b, _ = _counts(errors_b, num_ref)

    def difference(a, b, n, axis=-1):
        return 100.0 * (a.sum(axis) - b.sum(axis)) / n.sum(axis)

    return _interval(difference, (errors_a, errors_b, num_ref), seed)
