"""Guided attention: a diagonal prior on the attention between a transcript and its speech.

An optional training loss beside the decoder-only one (issue 8). The decoder-only LM has to find
out by itself that the k-th character of an ASR transcript is spoken around the k/N-th part of
the audio (and, for TTS, that speech frame t speaks the t/T-th part of the text); on the mini
recipe that discovery (the "reading onset") comes late and by chance. Following the guided
attention loss of DC-TTS (Tachibana et al., 2018), the first `heads` heads of the chosen `layers`
pay, for every query row, the attention mass they put on key positions far from the diagonal:

    penalty(n) = sum_t A[n, t] * (1 - exp(-(n / N - t / T)^2 / (2 sigma^2)))

with A the head's attention of query row n over the K keys of the other modality only (the
softmax is taken over those keys, so a head cannot dodge the prior by looking elsewhere; whether
it looks at them at all stays the LM's choice). That is `keys: condition`, the default.

With `keys: all` the head is also told to look: A is its real attention over every key row the
query sees, and mass anywhere but the other modality's band counts as far,

    penalty(n) = 1 - sum_t A[n, t] * exp(-(n / N - t / T)^2 / (2 sigma^2)),

so the head becomes a pointer into the condition that the layers above can read (the TTS, left
to itself, learns to predict speech from the speech before it and ignores its transcript;
EXPERIMENTS.md, "Does the TTS use its text?"). `tasks` picks the directions that are guided.

Pairs, found from the frames alone (no task names), per example:
  - ASR-shaped: queries = the rows predicting target text frames, keys = condition speech frames;
  - TTS-shaped: queries = the rows predicting target speech frames, keys = condition text frames.
Text-only examples have no pair and pay nothing.

The body's attention is reached through the transformers attention interface: while a guided
forward runs, the body's `_attn_implementation` names a wrapper that records the (rotated) query
and key states of the guided layers and then calls the body's own implementation, so the output
is exactly the unguided one.
"""

from __future__ import annotations

import contextvars
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
import transformers
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from opuslm.model.positions import compact_positions

WRAPPER_PREFIX = "opuslm_guided_"
GUIDED_TASKS = ("asr", "tts")
GUIDED_KEYS = ("condition", "all")


@dataclass(frozen=True)
class GuidedAttention:
    """Settings of the guided attention loss (MultiStreamLM.guided_attention)."""

    weight: float  # loss per query row, added to the example's loss sum (like ctc_weight)
    sigma: float = 0.2  # width of the diagonal band, in fractions of the sequences
    layers: tuple[int, ...] = (1,)  # decoder layers (0-based) whose heads are guided
    heads: int = 1  # the first `heads` query heads of each guided layer
    tasks: tuple[str, ...] = ("asr", "tts")  # the directions guided (see guide_pairs)
    keys: str = "condition"  # softmax over the condition's keys only, or "all" the row sees

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(layer) for layer in self.layers))
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if not self.tasks or not set(self.tasks) <= set(GUIDED_TASKS):
            raise ValueError(
                f"guided attention tasks must be a non-empty subset of {list(GUIDED_TASKS)}, "
                f"got {list(self.tasks)}"
            )
        if self.keys not in GUIDED_KEYS:
            raise ValueError(
                f"guided attention keys must be one of {GUIDED_KEYS}, got {self.keys!r}"
            )
        if not self.weight > 0:
            raise ValueError(f"guided attention weight must be > 0, got {self.weight}")
        if not self.sigma > 0:
            raise ValueError(f"guided attention sigma must be > 0, got {self.sigma}")
        if not self.layers:
            raise ValueError("guided attention needs at least one layer")
        if self.heads < 1:
            raise ValueError(f"guided attention heads must be >= 1, got {self.heads}")

    def check_body(self, config: transformers.PretrainedConfig) -> None:
        """Raise ValueError if the body has no such layers or heads."""
        layers, heads = config.num_hidden_layers, config.num_attention_heads
        outside = [layer for layer in self.layers if not 0 <= layer < layers]
        if outside:
            raise ValueError(
                f"guided attention layers {outside} outside the body's 0..{layers - 1}"
            )
        if self.heads > heads:
            raise ValueError(f"guided attention heads {self.heads} > the body's {heads} heads")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "layers": list(self.layers), "tasks": list(self.tasks)}


class GuidePairs(NamedTuple):
    """Query and key rows of the guided examples of one batch (B' of them)."""

    examples: torch.Tensor  # [B'] indices into the batch
    query_rows: torch.Tensor  # [B', Q] hidden rows (padded with 0 beyond the example's count)
    key_rows: torch.Tensor  # [B', K]
    prior: torch.Tensor  # [B', Q, K] float: the penalty weights (0 on padded queries)
    key_valid: torch.Tensor  # [B', K] bool
    query_valid: torch.Tensor  # [B', Q] bool
    num_queries: torch.Tensor  # [B'] long


def guide_pairs(
    frames: torch.Tensor,
    target_frames: torch.Tensor,
    lengths: torch.Tensor,
    text_range: tuple[int, int],
    speech_range: tuple[int, int],
    sigma: float,
    tasks: tuple[str, ...] = GUIDED_TASKS,
) -> GuidePairs | None:
    """The guided query / key rows of a batch, or None when no example of the guided `tasks`
    pairs text with speech.

    frames [B, T, S] undelayed ids, target_frames [B, T] bool (valid target frames), lengths [B].
    Stream 0 of frame f enters the delayed sequence at row f, and hidden row f - 1 predicts it, so
    a target frame f is queried at row f - 1 and a condition frame t is keyed at row t.
    """
    stream0 = frames[..., 0]
    valid = torch.arange(frames.shape[1], device=frames.device) < lengths[:, None]
    text = valid & (stream0 >= text_range[0]) & (stream0 < text_range[1])
    speech = valid & (stream0 >= speech_range[0]) & (stream0 < speech_range[1])
    asr_queries, asr_keys = target_frames & text, ~target_frames & speech
    tts_queries, tts_keys = target_frames & speech, ~target_frames & text
    is_asr = asr_queries.any(1) & asr_keys.any(1)
    is_tts = tts_queries.any(1) & tts_keys.any(1) & ~is_asr
    is_asr &= "asr" in tasks
    is_tts &= "tts" in tasks
    examples = torch.nonzero(is_asr | is_tts).flatten()
    if len(examples) == 0:
        return None
    pick_asr = is_asr[examples, None]
    queries = torch.where(pick_asr, asr_queries[examples], tts_queries[examples])  # [B', T]
    keys = torch.where(pick_asr, asr_keys[examples], tts_keys[examples])
    query_rows, num_queries = compact_positions(queries)
    key_rows, num_keys = compact_positions(keys)
    query_rows = (query_rows - 1).clamp(min=0)

    q_index = torch.arange(query_rows.shape[1], device=frames.device)
    k_index = torch.arange(key_rows.shape[1], device=frames.device)
    q_pos = (q_index[None] + 0.5) / num_queries[:, None]  # [B', Q]
    k_pos = (k_index[None] + 0.5) / num_keys[:, None]  # [B', K]
    distance = q_pos[:, :, None] - k_pos[:, None, :]
    prior = 1.0 - torch.exp(-distance.square() / (2.0 * sigma * sigma))
    query_valid = q_index[None] < num_queries[:, None]
    prior = prior * query_valid[:, :, None]
    key_valid = k_index[None] < num_keys[:, None]
    return GuidePairs(examples, query_rows, key_rows, prior, key_valid, query_valid, num_queries)


class GuideRecorder:
    """Collects the penalty of the guided layers during one forward of the body."""

    def __init__(self, guide: GuidedAttention, pairs: GuidePairs, delegate: str) -> None:
        self.guide = guide
        self.pairs = pairs
        self.delegate = delegate
        self.per_layer: list[torch.Tensor] = []  # each [B'] penalty summed over queries

    def record(self, query: torch.Tensor, key: torch.Tensor, scaling: float) -> None:
        """query [B, H, L, D], key [B, H_kv, L, D] (after the rotary embedding)."""
        pairs = self.pairs
        heads = torch.arange(self.guide.heads, device=query.device)
        group = query.shape[1] // key.shape[1]  # grouped-query attention: H / H_kv
        examples = pairs.examples[:, None, None]
        # One advanced index each: only the pair rows of the guided heads are copied.
        q = query[examples, heads[None, :, None], pairs.query_rows[:, None, :]]  # [B', h, Q, D]
        if self.guide.keys == "all":
            penalty = self._penalty_over_all_keys(q, key, heads // group, scaling)
        else:
            k = key[examples, (heads // group)[None, :, None], pairs.key_rows[:, None, :]]
            scores = (q @ k.transpose(-1, -2)).float() * scaling  # [B', h, Q, K]
            scores = scores.masked_fill(~pairs.key_valid[:, None, None, :], float("-inf"))
            attention = scores.softmax(-1)
            penalty = (attention * pairs.prior[:, None]).sum(-1)  # [B', h, Q]
        self.per_layer.append(penalty.sum(-1).mean(1))

    def _penalty_over_all_keys(
        self, q: torch.Tensor, key: torch.Tensor, key_heads: torch.Tensor, scaling: float
    ) -> torch.Tensor:
        """[B', h, Q]: 1 - the real attention mass on the condition's diagonal band.

        q [B', h, Q, D] the guided query rows, key [B, H_kv, L, D], key_heads [h] the key head
        of each guided query head. Every query row is a target
        row, at or after the last condition row, so under a causal or prefix-LM mask alike it
        sees exactly the keys at or before it (right padding lies after it)."""
        pairs = self.pairs
        k = key[pairs.examples[:, None], key_heads[None]]  # [B', h, L, D]
        scores = (q @ k.transpose(-1, -2)).float() * scaling  # [B', h, Q, L]
        rows = torch.arange(k.shape[2], device=q.device)
        unseen = rows[None, None, :] > pairs.query_rows[:, :, None]  # [B', Q, L]
        attention = scores.masked_fill(unseen[:, None], float("-inf")).softmax(-1)
        index = pairs.key_rows[:, None, None, :].expand(-1, q.shape[1], q.shape[2], -1)
        near = (1.0 - pairs.prior) * pairs.key_valid[:, None, :]  # [B', Q, K]
        band = (attention.gather(-1, index) * near[:, None]).sum(-1)  # [B', h, Q]
        return (1.0 - band) * pairs.query_valid[:, None]

    def penalty(self) -> torch.Tensor:
        """[B'] the penalty of each guided example: summed over its query rows, averaged over
        the guided heads and layers."""
        if len(self.per_layer) != len(self.guide.layers):
            raise RuntimeError(
                f"guided attention recorded {len(self.per_layer)} of {len(self.guide.layers)} "
                "layers: the body does not call its attention through the transformers interface"
            )
        return torch.stack(self.per_layer).mean(0)


_ACTIVE: contextvars.ContextVar[GuideRecorder | None] = contextvars.ContextVar(
    "opuslm_guided_attention", default=None
)


def _delegate_function(name: str, module: torch.nn.Module) -> Callable:
    if name in ALL_ATTENTION_FUNCTIONS:
        return ALL_ATTENTION_FUNCTIONS[name]
    # "eager" lives in each model's own modeling file.
    return sys.modules[type(module).__module__].eager_attention_forward


def _guided_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    recorder = _ACTIVE.get()
    if recorder is None:
        raise RuntimeError("the guided attention wrapper ran outside MultiStreamLM's forward")
    if getattr(module, "layer_idx", None) in recorder.guide.layers:
        scaling = kwargs.get("scaling")
        scaling = 1.0 / math.sqrt(query.shape[-1]) if scaling is None else scaling
        recorder.record(query, key, scaling)
    forward = _delegate_function(recorder.delegate, module)
    return forward(module, query, key, value, attention_mask, **kwargs)


def _wrapper_name(delegate: str) -> str:
    """Register (once) the wrapper around `delegate`, with `delegate`'s mask builder."""
    name = WRAPPER_PREFIX + delegate
    if name not in ALL_ATTENTION_FUNCTIONS:
        ALL_ATTENTION_FUNCTIONS.register(name, _guided_attention_forward)
        if delegate in ALL_MASK_ATTENTION_FUNCTIONS:
            ALL_MASK_ATTENTION_FUNCTIONS.register(name, ALL_MASK_ATTENTION_FUNCTIONS[delegate])
    return name


@contextmanager
def guided(
    body: transformers.PreTrainedModel, guide: GuidedAttention, pairs: GuidePairs
) -> Iterator[GuideRecorder]:
    """Run the body's forwards inside with the guided layers recorded (see the module doc)."""
    delegate = body.config._attn_implementation or "eager"
    recorder = GuideRecorder(guide, pairs, delegate)
    token = _ACTIVE.set(recorder)
    body.config._attn_implementation = _wrapper_name(delegate)
    try:
        yield recorder
    finally:
        body.config._attn_implementation = delegate
        _ACTIVE.reset(token)
