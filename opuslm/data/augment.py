"""Time masks on the speech rows of ASR training examples: SpecAugment for discrete units.

SpecAugment (Park et al., 2019) hides spans of time in an ASR model's input features so that the
model cannot lean on any single stretch of one recording. Here the input is token-dump rows
[T, S] (column 0 a semantic unit in [0, K), columns 1..n_q codec codes in [0, C)), so a masked
frame gets random units, each stream's own from its own range: the joint vocabulary has no mask
entry, and random units keep every row a frame the model could have been given.

Why: in the issue-8 sweep (egs2/mini_flite/speechlm1/EXPERIMENTS.md) the CTC head's held-out
loss turned up while its training loss kept falling, the model memorising the 4,000 training
utterances' units. Training only: the validation and decoding inputs are never masked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from opuslm.vocab import TokenList


@dataclass(frozen=True)
class SpeechTimeMask:
    """`num_masks` spans per utterance, each `1..max_width` frames, of random units."""

    num_masks: int
    max_width: int
    stream_sizes: tuple[int, ...]  # units per stream: (K, C, C, ...)

    def __post_init__(self) -> None:
        if self.num_masks < 0 or self.max_width < 1:
            raise ValueError(
                f"num_masks must be >= 0 and max_width >= 1, got {self.num_masks}, {self.max_width}"
            )

    @classmethod
    def for_token_list(cls, num_masks: int, max_width: int, token_list: TokenList):
        codec = [token_list.codebook_size] * token_list.num_codebooks
        return cls(num_masks, max_width, (token_list.size("semantic"), *codec))

    def __call__(self, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A masked copy of `rows` [T, S] (raw dump rows); spans may overlap; `rows` is kept."""
        rows = np.asarray(rows)
        if rows.ndim != 2 or rows.shape[1] != len(self.stream_sizes):
            raise ValueError(
                f"speech rows must be [T, {len(self.stream_sizes)}], got {list(rows.shape)}"
            )
        out = rows.copy()
        length = len(rows)
        if length == 0:
            return out
        for _ in range(self.num_masks):
            width = int(rng.integers(1, min(self.max_width, length) + 1))
            start = int(rng.integers(0, length - width + 1))
            for stream, size in enumerate(self.stream_sizes):
                out[start : start + width, stream] = rng.integers(0, size, width)
        return out
