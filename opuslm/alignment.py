"""Token-to-frame alignments for TTS: where in the speech each transcript token starts.

An aligned TTS example (`opuslm.tasks`, `Example.align`) interleaves its transcript's tokens with
its speech frames, each token just before the frame where it starts to be spoken (ELLA-V's
layout). The model then needs no long-range attention to know what to say next: the token being
spoken is a few rows back. The starts come from a CTC recogniser's forced alignment
(`ctc_forced_align`, `opuslm.bin.align_text`), or, where that has no path (more tokens than the
frames can hold), from spreading the tokens evenly (`uniform_starts`).

An alignment is int64 [L]: the start frame of each of the L tokens, non-decreasing, in [0, T).
"""

from __future__ import annotations

import numpy as np


class AlignmentError(ValueError):
    """No alignment exists (too few frames), or an alignment does not fit its utterance."""


def ctc_forced_align(log_probs: np.ndarray, targets: np.ndarray, blank: int) -> np.ndarray:
    """The best CTC path of `targets` through `log_probs` -> the start frame of each target.

    log_probs: float [T, C] per-frame log-probabilities (blank is class `blank`); targets: int [L]
    label ids (not blank). Viterbi over the 2L + 1 CTC states (blank, y1, blank, ..., yL, blank);
    a label's start is the first frame its state holds on the best path. Raises AlignmentError
    when no path exists: T is less than L plus the number of equal neighbours.
    """
    log_probs = np.asarray(log_probs, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if log_probs.ndim != 2 or targets.ndim != 1 or len(targets) == 0:
        raise AlignmentError(
            f"need log_probs [T, C] and non-empty targets [L], got {log_probs.shape} and "
            f"{targets.shape}"
        )
    if (targets == blank).any() or (targets < 0).any() or (targets >= log_probs.shape[1]).any():
        raise AlignmentError(
            f"targets must be labels in [0, {log_probs.shape[1]}) other than blank"
        )
    num_frames, num_labels = len(log_probs), len(targets)
    states = np.full(2 * num_labels + 1, blank, dtype=np.int64)
    states[1::2] = targets
    # A label state may be entered from two states back (skipping the blank between) unless that
    # state holds the same label: "aa" needs a blank between its two a's.
    skip = np.zeros(len(states), dtype=bool)
    skip[3::2] = targets[1:] != targets[:-1]
    score = np.full(len(states), -np.inf)
    score[:2] = log_probs[0, states[:2]]
    back = np.zeros((num_frames, len(states)), dtype=np.int8)  # 0 stay, 1 from s-1, 2 from s-2
    for t in range(1, num_frames):
        candidates = np.full((3, len(states)), -np.inf)
        candidates[0] = score
        candidates[1, 1:] = score[:-1]
        candidates[2, 2:] = np.where(skip[2:], score[:-2], -np.inf)
        back[t] = candidates.argmax(0)
        score = candidates[back[t], np.arange(len(states))] + log_probs[t, states]
    ends = [len(states) - 1, len(states) - 2]
    state = max(ends, key=lambda s: score[s])
    if not np.isfinite(score[state]):
        raise AlignmentError(
            f"no CTC path of {num_labels} labels through {num_frames} frames (a label repeated "
            "next to itself needs a blank frame between)"
        )
    starts = np.zeros(num_labels, dtype=np.int64)
    for t in range(num_frames - 1, -1, -1):
        if state % 2 == 1:
            starts[state // 2] = t  # walking back, the last write is the first frame
        state -= int(back[t, state])
    return starts


def uniform_starts(num_tokens: int, num_frames: int) -> np.ndarray:
    """Tokens spread evenly over the frames: int64 [num_tokens] starts (several tokens may share
    a frame when there are more tokens than frames)."""
    if num_tokens < 1 or num_frames < 1:
        raise AlignmentError(f"need tokens and frames, got {num_tokens} and {num_frames}")
    return (np.arange(num_tokens) * num_frames) // num_tokens


def check_alignment(starts: np.ndarray, num_tokens: int, num_frames: int, where: str) -> None:
    """Raise AlignmentError (naming `where`) unless `starts` is a valid alignment of
    `num_tokens` tokens to `num_frames` frames."""
    starts = np.asarray(starts)
    if starts.ndim != 1 or len(starts) != num_tokens:
        raise AlignmentError(
            f"{where}: the alignment has {starts.shape} starts for {num_tokens} tokens"
        )
    if len(starts) and (starts[0] < 0 or starts[-1] >= num_frames or (np.diff(starts) < 0).any()):
        raise AlignmentError(
            f"{where}: the starts must be non-decreasing frames in [0, {num_frames})"
        )
