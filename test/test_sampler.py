"""Length-bucketed, mixed, sharded, resumable batch sampling."""

from __future__ import annotations

from itertools import islice

import numpy as np
import pytest

from opuslm.data.sampler import (
    BatchBudgetError,
    MixedBatchSampler,
    bucket_batches,
    validation_batches,
)


def make_sampler(weights=(3.0, 1.0), batch_bins=100, seed=0, rank=0, world_size=1):
    rng = np.random.default_rng(0)
    lengths = [rng.integers(5, 40, 50), rng.integers(5, 40, 30)]
    uttids = [[f"m{m}_u{i}" for i in range(len(n))] for m, n in enumerate(lengths)]
    sampler = MixedBatchSampler(
        lengths, uttids, ["a.json", "b.json"], weights, batch_bins, seed, rank, world_size
    )
    return sampler, lengths


def test_bucket_batches_respect_budget_and_cover_everything():
    lengths = np.array([10, 3, 7, 25, 8, 8, 2, 30])
    batches = bucket_batches(lengths, 32, [f"u{i}" for i in range(8)], "m.json")
    assert sorted(np.concatenate(batches).tolist()) == list(range(8))
    for batch in batches:
        assert len(batch) * lengths[batch].max() <= 32
    # Greedy in ascending length: [2,3,7,8] (4 x 8 = 32), [8,10] (2 x 10), [25], [30].
    assert [lengths[b].tolist() for b in batches] == [[2, 3, 7, 8], [8, 10], [25], [30]]


def test_too_long_utterance_is_an_error_naming_it():
    with pytest.raises(
        BatchBudgetError, match=r"m.json: utterance 'u1' has 50 rows.*batch_bins=40"
    ):
        bucket_batches(np.array([10, 50, 45]), 40, ["u0", "u1", "u2"], "m.json")


def test_empty_manifest_is_an_error_naming_it():
    with pytest.raises(ValueError, match="b.json: empty manifest"):
        MixedBatchSampler(
            [np.array([3]), np.array([], dtype=int)], [["a"], []], ["a.json", "b.json"], [1, 1], 10
        )


def test_mixing_weights_are_honoured():
    sampler, _ = make_sampler(weights=(3.0, 1.0))
    counts = np.zeros(2)
    for batch in islice(iter(sampler), 4000):
        counts[batch[0].manifest] += 1
    assert counts[0] / counts[1] == pytest.approx(3.0, rel=0.08)


def test_deterministic_and_resumable():
    sampler, _ = make_sampler()
    first = list(islice(iter(sampler), 300))
    again, _ = make_sampler()
    assert list(islice(iter(again), 300)) == first
    resumed, _ = make_sampler()
    resumed.load_state_dict({"position": 137, "seed": 0})
    assert list(islice(iter(resumed), 163)) == first[137:]
    other_seed, _ = make_sampler(seed=1)
    assert list(islice(iter(other_seed), 300)) != first


def test_every_utterance_once_per_epoch():
    sampler, lengths = make_sampler(weights=(1.0, 0.0))
    num_batches = len(sampler.batches[0])
    seen = [i.index for batch in islice(iter(sampler), num_batches) for i in batch]
    assert sorted(seen) == list(range(len(lengths[0])))


def test_ranks_get_disjoint_slices_of_the_same_global_batch():
    single, _ = make_sampler(batch_bins=200)
    ranks = [make_sampler(batch_bins=200, rank=r, world_size=3)[0] for r in range(3)]
    streams = [list(islice(iter(s), 50)) for s in ranks]
    for position, whole in enumerate(islice(iter(single), 50)):
        parts = [streams[r][position] for r in range(3)]
        counted = [i for part in parts for i in part if i.counted]
        assert sorted(counted) == sorted(whole)
        if len(whole) < 3:  # a rank without an item gets an uncounted filler
            assert any(not i.counted for part in parts for i in part)


def test_validation_batches_cover_the_manifest_once():
    lengths = np.arange(1, 21)
    uttids = [f"u{i}" for i in range(20)]
    slices = [validation_batches(lengths, uttids, "v.json", 0, 40, r, 2) for r in range(2)]
    assert len(slices[0]) == len(slices[1])
    counted = [i.index for rank in slices for batch in rank for i in batch if i.counted]
    assert sorted(counted) == list(range(20))
