"""Length-bucketed batches by frame budget, mixed over several manifests, sharded over ranks.

Batches (ESPnet's `batch_bins`): utterances of one manifest sorted by sequence length are cut
greedily so that `batch_size x longest_length <= batch_bins`. Batches are built once; an epoch of
one manifest is a seeded permutation of its batches.

The training stream is a pure function of `(seed, position)`: the manifest of global batch
`position` is drawn with the mixing weights from a generator seeded by `(seed, position // BLOCK)`,
and the k-th draw of manifest m is batch `permutation(seed, m, k // n_m)[k % n_m]`. So the state is
one integer (`position`), resume is exact, and every rank computes the same global batch; rank r
takes the items `r::world_size` of it (sorted by length, so the slices are balanced). The global
batch therefore does not depend on the world size. A rank whose slice would be empty gets the
batch's first item with `counted=False` (its loss mask is cleared) so that DDP still sees a
forward/backward on every rank.

A curriculum makes the mixing weights piecewise constant in the position: `phases` lists
`(until_position, weights)`, and a position before `until_position` (and after the previous phase)
is drawn with that phase's weights, a position after the last phase with the base weights. Each
block draws one uniform per position and maps it through the cumulative weights of the phase that
position is in, which is what `Generator.choice(p=...)` does for the whole block: without phases
the stream is the one drawn with `choice` before curricula existed, so older checkpoints resume
into the same data order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch

BLOCK = 1024  # mixing draws per generator: resuming at position p costs p / BLOCK draws


class BatchBudgetError(ValueError):
    """An utterance alone exceeds the batch budget."""


class BatchItem(NamedTuple):
    """One example request: manifest index, utterance index in it, global batch position."""

    manifest: int
    index: int
    position: int
    counted: bool = True


def bucket_batches(
    lengths: np.ndarray, batch_bins: int, uttids: Sequence[str], source: str
) -> list[np.ndarray]:
    """Cut utterance indices (sorted by length) into batches with `B x T_max <= batch_bins`.

    lengths: int [N] sequence rows. Returns index arrays in ascending length order.
    Raises BatchBudgetError naming the longest offending utterance and `source`.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    too_long = np.flatnonzero(lengths > batch_bins)
    if too_long.size:
        worst = too_long[np.argmax(lengths[too_long])]
        raise BatchBudgetError(
            f"{source}: utterance {uttids[worst]!r} has {lengths[worst]} rows, more than "
            f"batch_bins={batch_bins} ({too_long.size} utterances are too long); raise batch_bins "
            "or drop long utterances"
        )
    order = np.lexsort((np.arange(len(lengths)), lengths))
    batches: list[np.ndarray] = []
    start = 0
    for end in range(1, len(order) + 1):
        if end < len(order) and (end + 1 - start) * lengths[order[end]] <= batch_bins:
            continue
        batches.append(order[start:end])
        start = end
    return batches


def shard(items: list[BatchItem], rank: int, world_size: int) -> list[BatchItem]:
    """This rank's slice of a global batch (never empty; see the module docstring)."""
    mine = items[rank::world_size]
    return mine if mine else [items[0]._replace(counted=False)]


class MixedBatchSampler(torch.utils.data.Sampler):
    """Infinite stream of this rank's slices of global batches drawn from several manifests.

    lengths[m]: int [N_m] sequence rows of manifest m's utterances; weights[m]: mixing weight.
    phases: curriculum `[(until_position, weights [M]), ...]` with increasing positions; the
    positions before each `until_position` use its weights, those after the last the base `weights`.
    """

    def __init__(
        self,
        lengths: Sequence[np.ndarray],
        uttids: Sequence[Sequence[str]],
        sources: Sequence[str],
        weights: Sequence[float],
        batch_bins: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        phases: Sequence[tuple[int, Sequence[float]]] = (),
    ) -> None:
        if not lengths:
            raise ValueError("no training manifests given")
        ends = [int(until) for until, _ in phases]
        if any(end <= 0 for end in ends) or any(b <= a for a, b in zip(ends, ends[1:])):
            raise ValueError(f"curriculum phase ends {ends} must be positive and increasing")
        self.phase_ends = np.asarray(ends, dtype=np.int64)
        # float [M] per phase, the base weights last (the phase after the last `until_position`).
        self.phase_probabilities = [
            _probabilities(w, len(lengths)) for w in [*(w for _, w in phases), weights]
        ]
        self._cdfs = [_cdf(p) for p in self.phase_probabilities]
        for src, n in zip(sources, lengths):
            if len(n) == 0:
                raise ValueError(f"{src}: empty manifest")
        self.batches = [
            bucket_batches(n, batch_bins, u, s) for n, u, s in zip(lengths, uttids, sources)
        ]
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.position = 0

    # ---------------------------------------------------------------- pure functions of position
    @lru_cache(maxsize=4)  # noqa: B019 - a few blocks per sampler, the sampler lives all run
    def _block_choices(self, block: int) -> np.ndarray:
        uniforms = np.random.default_rng((self.seed, block)).random(BLOCK)
        phases = self.phase_at(block * BLOCK + np.arange(BLOCK))
        choices = np.empty(BLOCK, dtype=np.int64)
        for phase in np.unique(phases):
            here = phases == phase
            choices[here] = self._cdfs[phase].searchsorted(uniforms[here], side="right")
        return choices

    @lru_cache(maxsize=64)  # noqa: B019
    def _epoch_order(self, manifest: int, epoch: int) -> np.ndarray:
        return np.random.default_rng((self.seed, manifest, epoch)).permutation(
            len(self.batches[manifest])
        )

    def phase_at(self, position: int | np.ndarray) -> int | np.ndarray:
        """Curriculum phase of `position` (int or int [N]); `len(phases)` = after the last one."""
        return np.searchsorted(self.phase_ends, position, side="right")

    def probabilities_at(self, position: int) -> np.ndarray:
        """float [M]: the mixing probabilities the stream draws `position` with."""
        return self.phase_probabilities[int(self.phase_at(position))]

    def manifest_at(self, position: int) -> int:
        return int(self._block_choices(position // BLOCK)[position % BLOCK])

    def draws_before(self, position: int) -> np.ndarray:
        """int [M]: how many batches of each manifest the stream used before `position`."""
        counts = np.zeros(len(self.batches), dtype=np.int64)
        full, rest = divmod(position, BLOCK)
        for block in range(full):
            counts += np.bincount(self._block_choices(block), minlength=len(self.batches))
        counts += np.bincount(self._block_choices(full)[:rest], minlength=len(self.batches))
        return counts

    def global_batch(self, position: int, draw: int) -> list[BatchItem]:
        """The global batch at `position`, being draw number `draw` of its manifest."""
        manifest = self.manifest_at(position)
        num = len(self.batches[manifest])
        batch = self.batches[manifest][self._epoch_order(manifest, draw // num)[draw % num]]
        return [BatchItem(manifest, int(i), position) for i in batch]

    # ---------------------------------------------------------------- iteration and state
    def __iter__(self) -> Iterator[list[BatchItem]]:
        draws = self.draws_before(self.position)
        while True:
            position = self.position
            manifest = self.manifest_at(position)
            items = self.global_batch(position, int(draws[manifest]))
            draws[manifest] += 1
            self.position += 1
            yield shard(items, self.rank, self.world_size)

    def state_dict(self) -> dict[str, int]:
        """Position of the next batch this sampler yields (the trainer saves what it CONSUMED)."""
        return {"position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if int(state["seed"]) != self.seed:
            raise ValueError(f"sampler state has seed {state['seed']}, this run uses {self.seed}")
        self.position = int(state["position"])


def _probabilities(weights: Sequence[float], num_manifests: int) -> np.ndarray:
    """float [M]: mixing weights normalised to sum to one (ValueError if they cannot be)."""
    weights = np.asarray(weights, dtype=np.float64)
    if len(weights) != num_manifests or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(
            f"mixing weights {weights.tolist()} must be {num_manifests} numbers >= 0 with a "
            "positive sum"
        )
    return weights / weights.sum()


def _cdf(probabilities: np.ndarray) -> np.ndarray:
    """float [M]: cumulative probabilities, bit for bit as `Generator.choice(p=...)` builds them."""
    cdf = probabilities.cumsum()
    cdf /= cdf[-1]
    return cdf


def validation_batches(
    lengths: np.ndarray,
    uttids: Sequence[str],
    source: str,
    manifest: int,
    batch_bins: int,
    rank: int = 0,
    world_size: int = 1,
) -> list[list[BatchItem]]:
    """One pass over a manifest in length order: this rank's slice of each batch (`shard`)."""
    return [
        shard([BatchItem(manifest, int(i), 0) for i in batch], rank, world_size)
        for batch in bucket_batches(lengths, batch_bins, uttids, source)
    ]
