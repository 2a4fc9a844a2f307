"""Length-bucketed, mixed, sharded, resumable batch sampling."""

from __future__ import annotations

from itertools import islice

import numpy as np
import pytest

from opuslm.data.sampler import (
    BLOCK,
    BatchBudgetError,
    MixedBatchSampler,
    bucket_batches,
    validation_batches,
)


def make_sampler(
    weights=(3.0, 1.0), batch_bins=100, seed=0, rank=0, world_size=1, phases=(), num_manifests=2
):
    rng = np.random.default_rng(0)
    lengths = [rng.integers(5, 40, 50 - 20 * (m % 2)) for m in range(num_manifests)]
    uttids = [[f"m{m}_u{i}" for i in range(len(n))] for m, n in enumerate(lengths)]
    sources = [f"m{m}.json" for m in range(num_manifests)]
    sampler = MixedBatchSampler(
        lengths, uttids, sources, weights, batch_bins, seed, rank, world_size, phases=phases
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


def manifests(sampler, start, stop):
    return [sampler.manifest_at(p) for p in range(start, stop)]


@pytest.mark.parametrize("weights", [(3.0, 1.0, 0.3), (0.0, 2.0, 1.0), (1.0, 1.0, 0.0)])
def test_without_curriculum_the_stream_is_the_one_drawn_before_curricula(weights):
    # Checkpoints saved before curricula existed must resume into the same data order.
    probabilities = np.asarray(weights) / sum(weights)
    for seed in (0, 1, 17):
        sampler, _ = make_sampler(weights, seed=seed, num_manifests=3)
        for block in (0, 1, 6):
            old = np.random.default_rng((seed, block)).choice(3, size=BLOCK, p=probabilities)
            assert manifests(sampler, block * BLOCK, (block + 1) * BLOCK) == old.tolist()


CURRICULUM = [(200, [1.0, 0.0, 0.0]), (1100, [0.0, 1.0, 1.0])]  # the second crosses a block


def test_curriculum_phases_are_honoured():
    base = (3.0, 1.0, 0.3)
    sampler, _ = make_sampler(base, phases=CURRICULUM, num_manifests=3)
    plain, _ = make_sampler(base, num_manifests=3)
    assert set(manifests(sampler, 0, 200)) == {0}
    second = manifests(sampler, 200, 1100)
    assert set(second) == {1, 2}
    assert second.count(1) / len(second) == pytest.approx(0.5, abs=0.05)
    # After the last phase: the base weights, and the very draws of the stream without phases.
    assert manifests(sampler, 1100, 2 * BLOCK + 100) == manifests(plain, 1100, 2 * BLOCK + 100)
    assert sampler.probabilities_at(1099).tolist() == [0.0, 0.5, 0.5]
    assert sampler.probabilities_at(1100) == pytest.approx(np.asarray(base) / sum(base))


def test_curriculum_resume_inside_and_across_phases_is_exact():
    sampler, _ = make_sampler((3.0, 1.0, 0.3), phases=CURRICULUM, num_manifests=3)
    first = list(islice(iter(sampler), 1300))
    for position in (150, 200, 700, 1100, 1250):
        resumed, _ = make_sampler((3.0, 1.0, 0.3), phases=CURRICULUM, num_manifests=3)
        used = np.bincount([b[0].manifest for b in first[:position]], minlength=3)
        assert resumed.draws_before(position).tolist() == used.tolist()
        resumed.load_state_dict({"position": position, "seed": 0})
        assert list(islice(iter(resumed), 1300 - position)) == first[position:]


@pytest.mark.parametrize(
    "phases, pattern",
    [
        ([(10, [1.0, 0.0]), (10, [0.0, 1.0])], r"phase ends \[10, 10\] must be positive and"),
        ([(0, [1.0, 0.0])], "phase ends .* must be positive"),
        ([(10, [1.0])], r"mixing weights \[1.0\] must be 2 numbers"),
        ([(10, [0.0, 0.0])], "positive sum"),
    ],
)
def test_bad_curriculum_phases(phases, pattern):
    with pytest.raises(ValueError, match=pattern):
        make_sampler(phases=phases)


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
