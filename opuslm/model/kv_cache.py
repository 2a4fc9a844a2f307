"""A KV cache for decoding whose layers write each step's keys and values in place.

transformers' `DynamicLayer` concatenates a step's keys and values onto the whole cache, so every
step of every layer copies the cache: O(T^2) copying over a decode. In an ASR beam, where each of
a prompt's hypotheses holds the prompt's speech, those copies were a third of the decoding time
(BENCHMARKS.md, "Decoding: a KV cache written in place"). `GrowingLayer` keeps keys and values
in buffers with room to grow and exposes the filled part as views (`keys`, `values`), so code that
reads them, or writes into them in place (`opuslm.model.generate.reorder_generated_rows`), works
unchanged.
"""

from __future__ import annotations

import torch
import transformers
from transformers.cache_utils import DynamicLayer


class GrowingLayer(DynamicLayer):
    """A `DynamicLayer` over preallocated buffers [B, heads, capacity, head_dim].

    `capacity` is the most rows the decode is expected to feed; the buffers start at twice the
    first update (at most `capacity`) and grow the same way, so memory stays near what the decode
    uses. Methods inherited from `DynamicLayer` that replace `keys` / `values` with new tensors
    (`batch_repeat_interleave`, `reorder_cache`, `batch_select_indices`) stay correct: the next
    update sees that they are no longer views of the buffers and copies them in once.
    """

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.buffers: tuple[torch.Tensor, torch.Tensor] | None = None

    def _views_of_buffers(self) -> bool:
        """Whether `keys` / `values` are still the leading rows of the buffers."""
        if self.buffers is None:
            return False
        return all(
            view.data_ptr() == buffer.data_ptr() and view.shape[0] == buffer.shape[0]
            for view, buffer in zip((self.keys, self.values), self.buffers)
        )

    def _reallocate(self, needed: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Buffers for at least `needed` rows (twice that, up to `capacity`) holding the cache."""
        length = self.get_seq_length()
        size = max(needed, min(self.capacity, 2 * needed))
        batch, heads, _, key_dim = keys.shape
        new_keys = keys.new_empty((batch, heads, size, key_dim))
        new_values = values.new_empty((batch, heads, size, values.shape[-1]))
        if length:
            new_keys[:, :, :length] = self.keys
            new_values[:, :, :length] = self.values
        self.buffers = (new_keys, new_values)

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the step's keys / values [B, heads, n, D] after the cached rows; return views
        of all rows [B, heads, past + n, D], as `DynamicLayer.update` returns tensors."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length = self.get_seq_length()
        end = length + key_states.shape[-2]
        if not self._views_of_buffers() or end > self.buffers[0].shape[-2]:
            self._reallocate(end, key_states, value_states)
        keys, values = self.buffers
        keys[:, :, length:end] = key_states
        values[:, :, length:end] = value_states
        self.keys, self.values = keys[:, :, :end], values[:, :, :end]
        return self.keys, self.values


def growing_cache(
    config: transformers.PretrainedConfig, capacity: int
) -> transformers.DynamicCache:
    """A `DynamicCache` for `config`'s body whose full-attention layers are `GrowingLayer`s with
    room for `capacity` rows. A body with other layer kinds (sliding windows) keeps the layers
    transformers chose for it."""
    cache = transformers.DynamicCache(config=config)
    if cache.layers and all(type(layer) is DynamicLayer for layer in cache.layers):
        cache.layers = [GrowingLayer(capacity) for _ in cache.layers]
    return cache
