"""Token-to-frame alignments (opuslm.alignment) and the aligned TTS layout (opuslm.tasks)."""

import itertools

import numpy as np
import pytest
from test_tasks import token_list  # noqa: F401  (the tiny vocabulary fixture)

from opuslm.alignment import AlignmentError, check_alignment, ctc_forced_align, uniform_starts
from opuslm.data.manifest import sequence_length
from opuslm.tasks import Example, build_sequence, generation_prompt, interleave_rows

BLANK = 3


def brute_force_starts(log_probs: np.ndarray, targets: list[int]) -> np.ndarray:
    """The starts of the best of every frame labelling that CTC-collapses to `targets`."""
    best, best_starts = -np.inf, None
    for path in itertools.product(range(log_probs.shape[1]), repeat=len(log_probs)):
        collapsed, starts, previous = [], [], None
        for t, label in enumerate(path):
            if label != BLANK and label != previous:
                collapsed.append(label)
                starts.append(t)
            previous = label
        score = log_probs[np.arange(len(path)), list(path)].sum()
        if collapsed == targets and score > best:
            best, best_starts = score, starts
    return np.array(best_starts)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("targets", [[0, 1], [1, 1], [2, 0, 2], [0]])
def test_forced_alignment_is_the_best_ctc_path(seed, targets):
    rng = np.random.default_rng(seed)
    log_probs = np.log(rng.dirichlet(np.ones(4), size=6))  # [T=6, 3 labels + blank]
    starts = ctc_forced_align(log_probs, np.array(targets), BLANK)
    np.testing.assert_array_equal(starts, brute_force_starts(log_probs, targets))
    check_alignment(starts, len(targets), 6, "test")


def test_forced_alignment_follows_peaked_posteriors():
    frames = [BLANK, 0, 0, BLANK, 1, 2, 2, BLANK]
    log_probs = np.full((len(frames), 4), np.log(0.01))
    log_probs[np.arange(len(frames)), frames] = np.log(0.97)
    np.testing.assert_array_equal(
        ctc_forced_align(log_probs, np.array([0, 1, 2]), BLANK), [1, 4, 5]
    )


def test_a_repeated_label_needs_a_blank_frame_between():
    log_probs = np.log(np.full((2, 4), 0.25))
    np.testing.assert_array_equal(ctc_forced_align(log_probs, np.array([0, 1]), BLANK), [0, 1])
    with pytest.raises(AlignmentError, match="no CTC path of 2 labels through 2 frames"):
        ctc_forced_align(log_probs, np.array([1, 1]), BLANK)
    with pytest.raises(AlignmentError, match="other than blank"):
        ctc_forced_align(log_probs, np.array([BLANK]), BLANK)


def test_uniform_starts_and_checks():
    np.testing.assert_array_equal(uniform_starts(3, 6), [0, 2, 4])
    np.testing.assert_array_equal(uniform_starts(4, 2), [0, 0, 1, 1])
    with pytest.raises(AlignmentError, match="non-decreasing"):
        check_alignment(np.array([1, 0]), 2, 3, "utt")
    with pytest.raises(AlignmentError, match="non-decreasing frames in \\[0, 3\\)"):
        check_alignment(np.array([0, 3]), 2, 3, "utt")
    with pytest.raises(AlignmentError, match="utt: the alignment has"):
        check_alignment(np.array([0]), 2, 3, "utt")


def test_interleave_puts_each_token_before_its_start_frame():
    text = np.array([[1, 0], [2, 0], [3, 0]])
    speech = np.array([[10, 11], [20, 21], [30, 31]])
    out = interleave_rows(text, speech, np.array([0, 0, 2]))
    assert out[:, 0].tolist() == [1, 2, 10, 20, 3, 30]
    assert out[:, 1].tolist() == [0, 0, 11, 21, 0, 31]


def test_aligned_tts_sequence(token_list):  # noqa: F811  (the imported fixture)
    speech = np.array([[0, 1, 2], [3, 0, 1], [2, 2, 2]])
    plain = Example("u", text=np.array([4, 5]), speech=speech, prompt=speech[:1])
    aligned = Example(
        "u", text=plain.text, speech=speech, prompt=speech[:1], align=np.array([0, 2])
    )
    before, after = (
        build_sequence("tts", plain, token_list),
        build_sequence("tts", aligned, token_list),
    )
    assert len(after.frames) == sequence_length("tts", 3, speech=3, text=2, prompt=1, align=2)
    assert len(after.frames) == len(before.frames) + 2
    # The prompt is the plain one; the target speech holds the transcript at its starts.
    prompt = generation_prompt("tts", aligned, token_list)
    np.testing.assert_array_equal(prompt, generation_prompt("tts", plain, token_list))
    target = after.frames[len(prompt) : -1]
    text_ids = token_list.encode_text(np.array([4, 5])).tolist()
    assert target[:, 0].tolist()[0] == text_ids[0] and target[:, 0].tolist()[3] == text_ids[1]
    assert (target[[0, 3], 1:] == token_list.pad_id).all()
    np.testing.assert_array_equal(token_list.decode_frames(target[[1, 2, 4]]), speech)
    assert after.loss_mask[len(prompt) :].all() and not after.loss_mask[: len(prompt)].any()


def test_a_bad_alignment_names_the_utterance(token_list):  # noqa: F811
    example = Example(
        "spk_u7", text=np.array([4, 5]), speech=np.zeros((2, 3), int), prompt=np.zeros((1, 3), int)
    )
    example.align = np.array([0, 2])
    with pytest.raises(ValueError, match="spk_u7.*non-decreasing frames in \\[0, 2\\)"):
        build_sequence("tts", example, token_list)
