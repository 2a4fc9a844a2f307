"""The multi-stream LM: a Hugging Face causal-LM body over delay-interleaved frames.

One frame holds S streams (stream 0: text / special / semantic; stream s >= 1: codebook s-1).
The input embedding of a delayed row is the sum of its streams' joint embeddings; one hidden state
per row predicts the next row: stream 0 over the full joint vocabulary, stream s >= 1 only over the
C rows of its own codebook (MusicGen-style per-codebook heads, here slices of one output matrix).

The joint vocabulary extends the base LM's: text rows of the input embedding and of the output
head are the base model's own rows (tied or untied as the base model is); the new rows are drawn
from N(0, std) with std the standard deviation of the base rows of the same matrix.
"""

from __future__ import annotations

import functools
import inspect
import os
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
import transformers
from torch import nn

from opuslm.model.delay import delay
from opuslm.model.guided_attention import GuidedAttention, guide_pairs, guided
from opuslm.model.positions import compact_positions
from opuslm.vocab import MODALITIES, TokenList, VocabError

DEFAULT_LOSS_WEIGHTS = {"text": 1.0, "special": 10.0, "semantic": 0.5, "acoustic": 1.0 / 16}
CONFIG_FORMAT = 1
IGNORE_INDEX = -100  # cross-entropy target of codebook positions that are not targets


@dataclass
class LMOutput:
    """Loss of one batch; `stats` holds unweighted cross-entropy sums for logging."""

    loss: torch.Tensor  # scalar: loss_sum / num_target_frames
    loss_sum: torch.Tensor  # scalar: modality-weighted CE summed over all targets
    num_target_frames: torch.Tensor  # scalar long: (b, t) frames inside loss_mask and lengths
    example_loss_sum: torch.Tensor  # [B] weighted CE per example
    stats: dict[str, float] = field(default_factory=dict)


class StepOutput(NamedTuple):
    """The hidden state that predicts the row after the last input row, and the grown KV cache.

    Decoding takes only the logits it needs from it (`head_logits` over its allowed ids)."""

    hidden: torch.Tensor  # [B, H]
    cache: Any


def prefix_attention_mask(
    condition_rows: torch.Tensor,
    num_rows: int,
    padding: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Additive attention mask [B, 1, L, L] (0 = may attend, dtype's min = may not) of a prefix
    LM: rows below condition_rows [B] attend to each other in both directions, the rest causally.
    With left `padding` [B], keys before it are masked (a padded query row keeps itself, so no
    row is empty). Additive, not boolean: eager and SDPA attention both read it the same way."""
    rows = torch.arange(num_rows, device=condition_rows.device)
    query, key = rows[:, None], rows[None, :]
    condition = condition_rows[:, None, None]
    allowed = (key <= query) | ((query < condition) & (key < condition))  # [B, L, L]
    if padding is not None:
        allowed = (allowed & (key >= padding[:, None, None])) | (key == query)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


def cache_argument(base_model: nn.Module) -> str:
    """The KV-cache keyword of a Hugging Face base model's forward: transformers renamed
    `past_key_values` to `cache` during 5.x, and an unknown keyword would be silently ignored."""
    return _cache_argument(type(base_model))


@functools.cache
def _cache_argument(model_class: type) -> str:
    parameters = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


class MultiStreamLM(nn.Module):
    """Delay-interleaved multi-stream LM around a causal-LM `body` (e.g. LlamaForCausalLM).

    `body` either still has the base vocabulary (its embedding rows = the token list's text ids;
    the joint rows are added here) or already the joint one (rebuilt from `config_dict`).
    """

    def __init__(
        self,
        body: transformers.PreTrainedModel,
        token_list: TokenList,
        loss_weights: dict[str, float] | None = None,
        ctc_weight: float = 0.0,
        prefix_lm: bool = False,
        ctc_upsample: int = 1,
        guided_attention: GuidedAttention | dict | None = None,
        transcript_dropout: float = 0.0,
        tts_ctc_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if ctc_weight < 0:
            raise ValueError(f"ctc_weight must be >= 0, got {ctc_weight}")
        if tts_ctc_weight < 0:
            raise ValueError(f"tts_ctc_weight must be >= 0, got {tts_ctc_weight}")
        if not 0 <= transcript_dropout < 1:
            raise ValueError(f"transcript_dropout must be in [0, 1), got {transcript_dropout}")
        if int(ctc_upsample) != ctc_upsample or ctc_upsample < 1:
            raise ValueError(f"ctc_upsample must be an integer >= 1, got {ctc_upsample}")
        unknown = set(loss_weights or {}) - set(MODALITIES)
        if unknown:
            raise ValueError(f"unknown loss weight modalities {sorted(unknown)}, use {MODALITIES}")
        self.body = body
        self.token_list = token_list
        self.loss_weights = {**DEFAULT_LOSS_WEIGHTS, **(loss_weights or {})}
        self.num_streams = token_list.num_streams
        self.codebook_size = token_list.codebook_size
        self.acoustic_start = token_list.ranges["acoustic"][0]

        rows = body.get_input_embeddings().num_embeddings
        if rows == token_list.size("text"):
            self._extend_vocabulary()
        elif rows != len(token_list):
            raise VocabError(
                f"the body has {rows} embedding rows, but the token list has "
                f"{token_list.size('text')} text ids and {len(token_list)} ids in all"
            )
        modality_ids = torch.from_numpy(token_list.modality_ids())
        weights = torch.tensor([self.loss_weights[m] for m in MODALITIES])
        # Per-id lookups used by the loss; derived from the token list, so not saved.
        self.register_buffer("modality_ids", modality_ids, persistent=False)
        self.register_buffer("id_weights", weights[modality_ids], persistent=False)
        self.ctc_weight = float(ctc_weight)
        # The same CTC, read the other way: the transcript from the hidden states of the speech
        # a TTS example generates. Those rows are causal, so to emit frame t's character the
        # model must know, while it speaks, how far into the text it is: the alignment a TTS
        # decoder has to learn, given as a loss (as CTC alignment losses in LM-based TTS, e.g.
        # Koel-TTS). The rows also see the speech itself, though: in the mini recipe the loss
        # was met by recognising it, and the TTS still ignored its text (EXPERIMENTS.md).
        self.tts_ctc_weight = float(tts_ctc_weight)
        self.prefix_lm = bool(prefix_lm)
        # CTC outputs per speech frame: at 25 Hz a character transcript needs about 0.6 labels
        # per frame, which leaves CTC few blanks to place; U outputs per frame give it U times
        # the room (each frame's hidden state is projected to U label distributions).
        self.ctc_upsample = int(ctc_upsample)
        # Text ids + blank (the last class), per output; only built when used, so checkpoints
        # without it load.
        num_classes = token_list.size("text") + 1
        self.ctc_head = (
            nn.Linear(body.config.hidden_size, self.ctc_upsample * num_classes)
            if ctc_weight or tts_ctc_weight
            else None
        )
        # Optional diagonal prior on the text <-> speech attention (training loss only).
        if isinstance(guided_attention, dict):
            guided_attention = GuidedAttention(**guided_attention)
        if guided_attention is not None:
            guided_attention.check_body(body.config)
        self.guided_attention = guided_attention
        # Training only: the chance that an ASR transcript token is hidden from the rows after
        # it (its input row's text id becomes pad; it stays a target). A character LM that has
        # read a sentence prefix predicts the next character well without the audio, so the
        # gradient towards reading the audio is weak; hiding some of the prefix makes the audio
        # the better source of the next character (word dropout, Bowman et al. 2016).
        self.transcript_dropout = float(transcript_dropout)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_base(
        cls,
        base: str | os.PathLike | transformers.PretrainedConfig,
        token_list: TokenList,
        loss_weights: dict[str, float] | None = None,
        ctc_weight: float = 0.0,
        prefix_lm: bool = False,
        ctc_upsample: int = 1,
        guided_attention: GuidedAttention | dict | None = None,
        transcript_dropout: float = 0.0,
        tts_ctc_weight: float = 0.0,
        **from_pretrained_kwargs: Any,
    ) -> MultiStreamLM:
        """Extend a base causal LM: a local HF directory (no download) or a config (random init)."""
        if isinstance(base, transformers.PretrainedConfig):
            body = transformers.AutoModelForCausalLM.from_config(base)
        else:
            kwargs = {"dtype": torch.float32, **from_pretrained_kwargs}
            body = transformers.AutoModelForCausalLM.from_pretrained(
                os.fspath(base), local_files_only=True, **kwargs
            )
        return cls(
            body,
            token_list,
            loss_weights,
            ctc_weight,
            prefix_lm,
            ctc_upsample,
            guided_attention,
            transcript_dropout,
            tts_ctc_weight,
        )

    def config_dict(self) -> dict:
        """JSON/YAML-serialisable description; `from_config_dict` rebuilds the architecture."""
        body_config = self.body.config.to_dict()
        body_config["id2label"] = {str(k): v for k, v in body_config.get("id2label", {}).items()}
        return {
            "format": CONFIG_FORMAT,
            "body": body_config,
            "loss_weights": dict(self.loss_weights),
            "ctc_weight": self.ctc_weight,
            "prefix_lm": self.prefix_lm,
            "ctc_upsample": self.ctc_upsample,
            "guided_attention": (
                self.guided_attention.to_dict() if self.guided_attention is not None else None
            ),
            "transcript_dropout": self.transcript_dropout,
            "tts_ctc_weight": self.tts_ctc_weight,
        }

    @classmethod
    def from_config_dict(cls, config: dict, token_list: TokenList) -> MultiStreamLM:
        """Same architecture as the model that wrote `config`; load weights with load_state_dict."""
        if config.get("format") != CONFIG_FORMAT or "body" not in config:
            raise ValueError(
                f"not a MultiStreamLM config (format {config.get('format')!r}, "
                f"expected {CONFIG_FORMAT} with a 'body' entry)"
            )
        body_config = transformers.AutoConfig.for_model(**config["body"])
        body = transformers.AutoModelForCausalLM.from_config(body_config)
        return cls(
            body,
            token_list,
            config.get("loss_weights"),
            config.get("ctc_weight", 0.0),
            config.get("prefix_lm", False),
            config.get("ctc_upsample", 1),
            config.get("guided_attention"),
            config.get("transcript_dropout", 0.0),
            config.get("tts_ctc_weight", 0.0),
        )

    def _extend_vocabulary(self) -> None:
        """Grow embedding and head from the text rows to the joint vocabulary."""
        num_text = self.token_list.size("text")
        embedding = self.body.get_input_embeddings().weight
        head = self.body.get_output_embeddings().weight
        tied = head is embedding
        base_stds = [embedding.detach().float().std().item()]
        if not tied:
            base_stds.append(head.detach().float().std().item())
        self.body.resize_token_embeddings(len(self.token_list), mean_resizing=False)
        matrices = [self.body.get_input_embeddings().weight]
        if not tied:
            matrices.append(self.body.get_output_embeddings().weight)
        with torch.no_grad():
            for matrix, std in zip(matrices, base_stds):
                matrix[num_text:].normal_(0.0, std)
        head_module = self.body.get_output_embeddings()
        if getattr(head_module, "bias", None) is not None:
            with torch.no_grad():
                head_module.bias[num_text:].zero_()

    def check_token_list(self, other: TokenList) -> None:
        """Raise VocabError naming the first difference if `other` is not this model's list."""
        self.token_list.require_same(other, "token list of the data / checkpoint")

    def gradient_checkpointing_enable(self) -> None:
        """Activation checkpointing in the body's decoder layers (trades compute for memory)."""
        if self.guided_attention is not None:
            # The recomputation in backward would run the body's plain attention, not the
            # recording wrapper, and so save other tensors than the forward did.
            raise ValueError("guided attention does not work with gradient checkpointing")
        self.body.activation_checkpointing_enable({"use_reentrant": False})

    # ------------------------------------------------------------------ pieces
    @property
    def device(self) -> torch.device:
        return self.body.get_input_embeddings().weight.device

    @property
    def context_length(self) -> int | None:
        """Most rows a sequence may have: the body's max_position_embeddings (None if it has
        none). Rotary bodies run past it without an error, on positions they never saw."""
        value = getattr(self.body.config, "max_position_embeddings", None)
        return None if value is None else int(value)

    @property
    def frames_within_context(self) -> int | None:
        """Most frames a training example may have: `forward` runs T frames as T + S - 2
        delayed rows (all but the last), which must fit the context. None without a context."""
        context = self.context_length
        return None if context is None else context - (self.num_streams - 2)

    def output_room(self, prompt_rows):
        """Most output frames the context leaves after a prompt of `prompt_rows` rows (an int or
        a tensor [B]): the prompt, then the output with its eos and delay rows (S in all) must
        fit. None if the body has no context length; < 1 means the prompt is too long."""
        context = self.context_length
        return None if context is None else context - prompt_rows - self.num_streams

    def embed(self, delayed: torch.Tensor) -> torch.Tensor:
        """Delayed rows [B, L, S] -> row embeddings [B, L, H] (sum of the stream embeddings)."""
        module = self.body.get_input_embeddings()
        batch, length, streams = delayed.shape
        if type(module) is nn.Embedding:
            # embedding_bag sums the S lookups without materialising [B, L, S, H].
            summed = F.embedding_bag(
                delayed.reshape(-1, streams),
                module.weight,
                mode="sum",
                padding_idx=module.padding_idx,
            )
            return summed.view(batch, length, -1)
        # Embedding subclasses (e.g. scaled embeddings) keep their own forward.
        return module(delayed).sum(dim=2)

    def head_logits(
        self, hidden: torch.Tensor, start: int = 0, end: int | None = None
    ) -> torch.Tensor:
        """Hidden states [..., H] -> logits of the ids [start, end) only [..., end - start].

        A slice of the output matrix (no copy): nothing outside the range is computed.
        """
        module = self.body.get_output_embeddings()
        bias = getattr(module, "bias", None)
        return F.linear(hidden, module.weight[start:end], None if bias is None else bias[start:end])

    def stream0_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden states [..., H] -> logits over the joint vocabulary [..., V]."""
        return self.head_logits(hidden)

    def codebook_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden states [..., H] -> logits of every codebook over its own C ids [..., S-1, C].

        One matmul with the n_q * C acoustic rows; nothing outside the codebooks is computed.
        """
        logits = self.head_logits(hidden, *self.token_list.ranges["acoustic"])
        return logits.unflatten(-1, (self.num_streams - 1, self.codebook_size))

    def hidden_states(
        self,
        delayed: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Any = None,
        position_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Any]:
        """Delayed rows [B, L, S] -> last hidden states [B, L, H] and the (grown) KV cache."""
        base = self.body.base_model
        out = base(
            inputs_embeds=self.embed(delayed),
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=cache is not None,
            **{cache_argument(base): cache},
        )
        return out.last_hidden_state, out.cache if hasattr(out, "cache") else out.past_key_values

    def forward_step(
        self,
        delayed_rows: torch.Tensor,
        attention_mask: torch.Tensor | None,
        cache: Any,
        position_ids: torch.Tensor | None,
    ) -> StepOutput:
        """Decode step: feed delayed rows [B, n, S] (attention_mask [B, past + n]) and return the
        hidden state [B, H] that predicts the row after the last one, with the grown cache."""
        hidden, cache = self.hidden_states(delayed_rows, attention_mask, cache, position_ids)
        return StepOutput(hidden[:, -1], cache)

    # ------------------------------------------------------------------ training
    def forward(
        self, frames: torch.Tensor, loss_mask: torch.Tensor, lengths: torch.Tensor
    ) -> LMOutput:
        """Teacher-forced loss.

        frames: LongTensor [B, T, S] undelayed joint ids, right-padded with pad beyond `lengths`.
        loss_mask: BoolTensor [B, T], frames whose tokens are targets.
        lengths: LongTensor [B], valid frames per example.
        A (row, stream) target gets loss iff its frame is in loss_mask and its id is not pad.
        The optional CTC and guided-attention losses join each example's loss sum.
        """
        batch, num_frames, streams = frames.shape
        if streams != self.num_streams:
            raise ValueError(f"frames have {streams} streams, the model has {self.num_streams}")
        pad = self.token_list.pad_id
        positions = torch.arange(num_frames, device=frames.device)
        target_frames = loss_mask.bool() & (positions < lengths[:, None])  # [B, T]
        delayed = delay(frames, pad)  # [B, L, S], L = T + S - 1
        # Delaying the frame mask gives, per (row, stream), whether that token is a target.
        target_mask = delay(target_frames[..., None].expand(-1, -1, streams).long(), 0).bool()
        targets = delayed[:, 1:]
        target_mask = target_mask[:, 1:] & (targets != pad)  # [B, L-1, S]
        # Right padding under a causal mask: no valid row ever sees a padded one.
        mask = None
        if self.prefix_lm:
            has_target = target_frames.any(1)
            first_target = torch.where(has_target, target_frames.int().argmax(1), 0)  # [B]
            mask = prefix_attention_mask(first_target, delayed.shape[1] - 1)
        pairs = None
        if self.guided_attention is not None:
            ranges = self.token_list.ranges
            pairs = guide_pairs(
                frames,
                target_frames,
                lengths,
                ranges["text"],
                ranges["semantic"],
                self.guided_attention.sigma,
                self.guided_attention.tasks,
            )
        recording = (
            nullcontext() if pairs is None else guided(self.body, self.guided_attention, pairs)
        )
        inputs = delayed[:, :-1]  # [B, L-1, S]
        if self.training and self.transcript_dropout > 0:
            inputs = self._hide_transcript(inputs, frames, target_frames)
        with recording as recorder:
            hidden, _ = self.hidden_states(inputs, attention_mask=mask)  # [B, L-1, H]
        example_index = torch.arange(batch, device=frames.device)[:, None].expand_as(
            targets[..., 0]
        )

        # Stream 0: full-vocabulary logits on target rows only.
        rows0 = target_mask[..., 0]
        targets0 = targets[..., 0][rows0]  # [N0]
        logits0 = self.stream0_logits(hidden[rows0])  # [N0, V]
        ce0 = F.cross_entropy(logits0, targets0, reduction="none")
        weighted0 = ce0 * self.id_weights[targets0]
        correct0 = logits0.argmax(-1) == targets0

        # Streams >= 1: codebook logits on rows where any codebook stream is a target.
        rows_c = target_mask[..., 1:].any(-1)  # [B, L-1]
        ce_c, correct_c, mask_c = self._codebook_loss(
            hidden[rows_c], targets[..., 1:][rows_c], target_mask[..., 1:][rows_c]
        )
        weighted_c = ce_c * self.loss_weights["acoustic"]

        example_loss_sum = torch.zeros(batch, device=frames.device, dtype=ce0.dtype)
        example_loss_sum.index_add_(0, example_index[rows0], weighted0)
        example_loss_sum.index_add_(0, example_index[rows_c], weighted_c.sum(-1))
        num_target_frames = target_frames.sum()
        stats = self._stats(ce0, correct0, targets0, ce_c, correct_c, mask_c)
        for name, weight, speech, text in self._ctc_directions(frames, target_frames, lengths):
            ctc, ctc_examples, num_chars = self._ctc_loss(frames, hidden, speech, text)
            example_loss_sum.index_add_(0, ctc_examples, weight * ctc)
            stats[f"loss_sum/{name}"] = float(ctc.detach().sum())
            stats[f"count/{name}"] = float(num_chars)
        if self.guided_attention is not None:
            # Fixed stat names whether or not this batch has a pair (ranks reduce the same keys).
            penalty, rows = hidden.new_zeros(0), 0
            if pairs is not None:
                penalty, rows = recorder.penalty(), int(pairs.num_queries.sum())
                example_loss_sum.index_add_(
                    0, pairs.examples, self.guided_attention.weight * penalty.to(ce0.dtype)
                )
            stats["loss_sum/guided"] = float(penalty.detach().sum())
            stats["count/guided"] = float(rows)
        loss_sum = example_loss_sum.sum()
        return LMOutput(
            loss=loss_sum / num_target_frames.clamp(min=1),
            loss_sum=loss_sum,
            num_target_frames=num_target_frames,
            example_loss_sum=example_loss_sum,
            stats=stats,
        )

    def _hide_transcript(
        self, inputs: torch.Tensor, frames: torch.Tensor, target_frames: torch.Tensor
    ) -> torch.Tensor:
        """A copy of the input rows [B, L-1, S] in which each transcript token of an example
        with speech (the text targets of ASR) is pad with probability transcript_dropout.
        Stream 0 is not delayed, so input row i holds frame i's stream-0 token."""
        stream0 = frames[..., 0]  # [B, T]
        text_lo, text_hi = self.token_list.ranges["text"]
        speech_lo, speech_hi = self.token_list.ranges["semantic"]
        has_speech = ((stream0 >= speech_lo) & (stream0 < speech_hi)).any(1)  # [B]
        hide = (
            target_frames
            & (stream0 >= text_lo)
            & (stream0 < text_hi)
            & has_speech[:, None]
            & (torch.rand(stream0.shape, device=stream0.device) < self.transcript_dropout)
        )
        rows = min(hide.shape[1], inputs.shape[1])
        inputs = inputs.clone()
        inputs[:, :rows, 0] = inputs[:, :rows, 0].masked_fill(
            hide[:, :rows], self.token_list.pad_id
        )
        return inputs

    def _ctc_directions(
        self, frames: torch.Tensor, target_frames: torch.Tensor, lengths: torch.Tensor
    ) -> list[tuple[str, float, torch.Tensor, torch.Tensor]]:
        """The CTC losses this model trains, as (stat name, weight, speech [B, T], text [B, T]):
        "ctc" reads the target text from the condition speech (ASR-shaped examples), "ctc_tts"
        the condition text from the target speech (TTS-shaped). A zero weight is skipped."""
        if self.ctc_head is None:
            return []
        stream0 = frames[..., 0]
        positions = torch.arange(frames.shape[1], device=frames.device)
        txt_lo, txt_hi = self.token_list.ranges["text"]
        text = (positions < lengths[:, None]) & (stream0 >= txt_lo) & (stream0 < txt_hi)
        # Frame t is read at hidden row t + S - 1, and training's hidden states stop at row
        # T + S - 3, so a last frame has none. Templates end with eos or text after speech, so
        # this drops nothing, but a cropped sequence must not index past the end.
        speech = self._speech_frames(frames, lengths) & (positions < frames.shape[1] - 1)
        directions = [
            ("ctc", self.ctc_weight, speech & ~target_frames, text & target_frames),
            ("ctc_tts", self.tts_ctc_weight, speech & target_frames, text & ~target_frames),
        ]
        return [direction for direction in directions if direction[1] > 0]

    def _ctc_loss(
        self,
        frames: torch.Tensor,
        hidden: torch.Tensor,
        speech: torch.Tensor,
        text: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """CTC of the text frames from the speech frames of each example that has both.

        frames [B, T, S] undelayed ids, hidden [B, L-1, H] (delayed rows), speech and text
        [B, T] bool (`_ctc_directions`). Returns the CTC NLL per used example [B'], the indices
        of those examples [B'] and the number of their text tokens.
        """
        stream0 = frames[..., 0]
        txt_lo, txt_hi = self.token_list.ranges["text"]
        used = torch.nonzero(speech.any(1) & text.any(1)).flatten()  # [B']
        if len(used) == 0:
            return hidden.new_zeros(0), used, 0
        text, stream0 = text[used], stream0[used]
        log_probs, input_lengths = self._speech_log_probs(hidden[used], speech[used])
        text_positions, target_lengths = compact_positions(text)  # [B', N], [B']
        targets = stream0.gather(1, text_positions) - txt_lo
        targets = targets.clamp(0, txt_hi - txt_lo - 1)  # entries past a target's length: unused
        ctc = F.ctc_loss(
            log_probs.transpose(0, 1),
            targets,
            input_lengths,
            target_lengths,
            blank=txt_hi - txt_lo,
            reduction="none",
            zero_infinity=True,  # speech too short for its text: no gradient, not a NaN
        )
        return ctc, used, int(target_lengths.sum())

    def ctc_log_probs(
        self, frames: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """CTC posteriors of the speech frames of condition frames, read as training reads them.

        frames: LongTensor [B, T, S] undelayed ids (e.g. decoding prompts), right-padded beyond
        lengths [B]; every frame is a condition (with `prefix_lm`, rows below lengths attend in
        both directions, like training's condition rows). Returns float32 log-probabilities
        [B, N * U, C + 1] (text ids, then blank; N = the most speech frames, U =
        `ctc_upsample` outputs per frame) and the CTC outputs per example [B] (speech frames x U).

        Speech frame t is read at row t + S - 1, so the S - 1 delayed rows after the last frame
        are fed too, with stream 0 = pad: in training they hold the target's first stream-0
        tokens, which decoding does not know yet. Only speech among the last S - 1 frames reads
        such a row; an ASR prompt ends with S - 1 pad frames and the text start, so none does.
        """
        if self.ctc_head is None:
            raise ValueError("the model has no CTC head (it was trained with model.ctc_weight 0)")
        delayed = delay(frames, self.token_list.pad_id)  # [B, T + S - 1, S]
        mask = None
        if self.prefix_lm:
            mask = prefix_attention_mask(lengths.to(frames.device), delayed.shape[1])
        hidden, _ = self.hidden_states(delayed, attention_mask=mask)
        return self._speech_log_probs(hidden, self._speech_frames(frames, lengths))

    def _speech_frames(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """BoolTensor [B, T]: the valid frames of frames [B, T, S] whose stream 0 is semantic."""
        stream0 = frames[..., 0]
        positions = torch.arange(frames.shape[1], device=frames.device)
        sem_lo, sem_hi = self.token_list.ranges["semantic"]
        return (positions < lengths[:, None]) & (stream0 >= sem_lo) & (stream0 < sem_hi)

    def _speech_log_probs(
        self, hidden: torch.Tensor, speech: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """CTC log-posteriors [B, N * U, C + 1] of the speech frames speech [B, T] (bool) from
        the hidden states [B, L, H] of their delayed rows, and the CTC outputs per example [B]
        (U = `ctc_upsample` outputs per speech frame, in time order).

        Speech frame t is read at hidden row t + S - 1, the first row that has seen all of its
        streams (stream s is delayed by s).
        """
        speech_positions, input_lengths = compact_positions(speech)  # [B, N], [B]
        rows = speech_positions + self.num_streams - 1
        picked = hidden.gather(1, rows[..., None].expand(-1, -1, hidden.shape[-1]))
        logits = self.ctc_head(picked).float()  # [B, N, U * (C + 1)]
        # Frame n's U outputs become outputs nU .. nU + U - 1; padding frames stay at the end.
        logits = logits.view(logits.shape[0], -1, logits.shape[-1] // self.ctc_upsample)
        return F.log_softmax(logits, dim=-1), input_lengths * self.ctc_upsample

    def _codebook_loss(
        self, hidden: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-codebook CE of rows [N, H] with target ids [N, S-1] where mask [N, S-1] is set.

        Returns ce [N, S-1] (0 off-target), correct [N, S-1] (bool) and the mask.
        """
        if self.num_streams == 1:  # a text-only token list: no codebooks
            return hidden.new_zeros(mask.shape), torch.zeros_like(mask), mask
        offsets = self.acoustic_start + self.codebook_size * torch.arange(
            self.num_streams - 1, device=targets.device
        )
        codes = targets - offsets
        if (mask & ((codes < 0) | (codes >= self.codebook_size))).any():
            raise ValueError(
                "frames hold ids in streams >= 1 that are neither pad nor of the stream's codebook"
            )
        codes = codes.masked_fill(~mask, IGNORE_INDEX)
        logits = self.codebook_logits(hidden)  # [N, S-1, C]
        ce = F.cross_entropy(
            logits.flatten(0, 1), codes.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
        ).view_as(codes)
        return ce, logits.argmax(-1) == codes, mask

    def _stats(
        self,
        ce0: torch.Tensor,
        correct0: torch.Tensor,
        targets0: torch.Tensor,
        ce_c: torch.Tensor,
        correct_c: torch.Tensor,
        mask_c: torch.Tensor,
    ) -> dict[str, float]:
        """Unweighted CE sums, counts and correct counts per stream and per modality."""
        with torch.no_grad():
            per_stream = torch.stack(
                [
                    torch.cat([ce0.sum()[None], ce_c.sum(0)]),
                    torch.cat([ce0.new_tensor([len(ce0)]), mask_c.sum(0).to(ce0.dtype)]),
                    torch.cat([correct0.sum()[None].to(ce0.dtype), correct_c.sum(0).to(ce0.dtype)]),
                ]
            )  # [3, S]
            modality0 = self.modality_ids[targets0]
            per_modality = torch.stack(
                [
                    torch.zeros(len(MODALITIES), dtype=ce0.dtype, device=ce0.device).index_add_(
                        0, modality0, values.to(ce0.dtype)
                    )
                    for values in (ce0, torch.ones_like(ce0), correct0)
                ]
            )  # [3, M]
            acoustic = MODALITIES.index("acoustic")
            per_modality[:, acoustic] += per_stream[:, 1:].sum(-1)
            per_stream_list, per_modality_list = per_stream.tolist(), per_modality.tolist()
        stats = {}
        for kind, stream_values, modality_values in zip(
            ("loss_sum", "count", "correct"), per_stream_list, per_modality_list
        ):
            for s, value in enumerate(stream_values):
                stats[f"{kind}/stream{s}"] = value
            for name, value in zip(MODALITIES, modality_values):
                stats[f"{kind}/{name}"] = value
        return stats
