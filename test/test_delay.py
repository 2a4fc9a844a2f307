"""Delay interleaving: exact contract, round trip, pad pattern."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from opuslm.model.delay import delay, undelay

PAD = -7


@st.composite
def frame_tensors(draw):
    batch = draw(st.integers(1, 3))
    num_frames = draw(st.integers(0, 12))
    num_streams = draw(st.integers(1, 9))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 1000, (batch, num_frames, num_streams), generator=gen)


@settings(max_examples=200, deadline=None)
@given(frame_tensors())
def test_round_trip(frames):
    delayed = delay(frames, PAD)
    assert delayed.shape == (
        frames.shape[0],
        frames.shape[1] + frames.shape[2] - 1,
        frames.shape[2],
    )
    assert torch.equal(undelay(delayed), frames)


@settings(max_examples=200, deadline=None)
@given(frame_tensors())
def test_pad_pattern_matches_definition(frames):
    delayed = delay(frames, PAD)
    batch, num_frames, num_streams = frames.shape
    for t in range(num_frames + num_streams - 1):
        for s in range(num_streams):
            if 0 <= t - s < num_frames:
                assert torch.equal(delayed[:, t, s], frames[:, t - s, s])
            else:
                assert (delayed[:, t, s] == PAD).all()


def test_golden_small_case():
    frames = torch.tensor([[[1, 2, 3], [4, 5, 6]]])
    expected = torch.tensor([[[1, 0, 0], [4, 2, 0], [0, 5, 3], [0, 0, 6]]])
    assert torch.equal(delay(frames, 0), expected)
    assert torch.equal(undelay(expected), frames)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"\[B, T, S\]"):
        delay(torch.zeros(3, 4, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="at least 3 rows"):
        undelay(torch.zeros(1, 2, 4, dtype=torch.long))
