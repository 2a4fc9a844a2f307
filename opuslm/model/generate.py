"""KV-cached, modality-constrained decoding of a MultiStreamLM.

Decoding runs over delayed rows: one body forward per row, so a target of N frames (then eos)
costs one prompt forward and N + S - 2 row forwards. At generated row k (row P + k of an example
whose prompt has P frames) stream 0 holds frame k and stream s >= 1 holds frame k - s:

- stream 0 samples only its target modality (text, or semantic for speech) and eos; eos is banned
  before `min_frames` and forced at `max_frames`; after eos it is pad. With `ctc_weight` > 0 (text
  targets) it picks from joint CTC / LM scores instead of the LM's alone (`_joint_scores`).
- stream s >= 1 takes the prompt's own token while its frame is still inside the prompt
  (teacher forcing, k < s); otherwise it samples inside codebook s-1 if its frame's stream-0 token
  is semantic, and is pad if not.

An example stops once the streams of its last frame before eos are decoded (S - 1 rows after the
last frame's stream 0). Batches of different prompt lengths are left-padded, so every example
reaches generated row k in the same forward.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import transformers

from opuslm.model.ctc_prefix import CTCPrefixScorer
from opuslm.model.delay import delay, undelay
from opuslm.model.kv_cache import GrowingLayer, growing_cache
from opuslm.model.lexicon import HypothesisStates, Lexicon
from opuslm.model.lm import MultiStreamLM, StepOutput, prefix_attention_mask
from opuslm.model.word_lm import WordLMScorer
from opuslm.tasks import num_condition_frames

logger = logging.getLogger(__name__)

TARGETS = {"text": "text", "speech": "semantic"}  # target -> modality of its stream-0 tokens


@dataclass
class SamplingConfig:
    """How one modality picks its token: argmax, or sampling with temperature / top-k / top-p."""

    temperature: float = 1.0
    top_k: int = 0  # 0: no top-k filter
    top_p: float = 1.0  # 1.0: no nucleus filter
    greedy: bool = True

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass
class GenerationConfig:
    target: str  # "text" (ASR / textlm) or "speech" (TTS / audiolm)
    text: SamplingConfig = field(default_factory=SamplingConfig)
    semantic: SamplingConfig = field(default_factory=SamplingConfig)
    acoustic: SamplingConfig = field(default_factory=SamplingConfig)
    min_frames: int = 0
    max_frames: int = 512
    # Stream-0 ids that end the output like eos (e.g. a text LM's own eos for textlm, which is a
    # text id); they are not part of the returned frames.
    stop_ids: tuple[int, ...] = ()
    # > 0: each output has at most ceil(ratio * the prompt's speech frames) frames (and at most
    # max_frames), like ESPnet's maxlenratio: an ASR transcript cannot be much longer than its
    # audio, so a model caught in a repetition loop stops there instead of at max_frames.
    max_len_ratio: float = 0.0
    # > 0 (text targets of a model with a CTC head): joint CTC / LM decoding as ESPnet's, each
    # stream-0 id scored (1 - ctc_weight) log p_LM + ctc_weight (CTC prefix score delta) from the
    # prompt's speech frames (`opuslm.model.ctc_prefix`), which rules out transcripts the audio
    # does not support. Only the ctc_pre_beam best LM ids per step are CTC-scored (0: all text
    # ids; ctc_weight 1 scores all of them too, as the LM then ranks nothing).
    ctc_weight: float = 0.0
    ctc_pre_beam: int = 20
    # > 1 (text targets): beam search over stream 0 (ESPnet's beam_size) instead of picking one
    # id per step: the beam_size best hypotheses by summed log-score (joint CTC / LM scores with
    # ctc_weight > 0) are kept each step, and the best ended one is returned. The text sampling
    # settings are then unused.
    beam_size: int = 1
    # > 0 (text targets, with `lexicon`): each word of a hypothesis that is not in the lexicon
    # costs this much score (`opuslm.model.lexicon`), so near-miss spellings of known words
    # lose to the known ones; an unknown word still wins where the scores agree on it.
    lexicon_penalty: float = 0.0
    lexicon: Lexicon | None = field(default=None, repr=False)
    # > 0 (text targets, with `word_lm`): shallow fusion with a word n-gram LM, each text id
    # scored this much times the word LM's look-ahead log-prob (`opuslm.model.word_lm`), so
    # word sequences the small LM's characters do not know well still get a word-level prior.
    word_lm_weight: float = 0.0
    word_lm: WordLMScorer | None = field(default=None, repr=False)
    # Speech targets of a model trained on aligned TTS (`opuslm.tasks.interleave_rows`): the
    # output interleaves the prompt's transcript with the speech, as training did. At each row
    # stream 0 takes a semantic unit or the transcript's next token, the latter with the model's
    # mass on all text ids (it says when a token starts, the transcript which one), and eos only
    # once every token has been said.
    interleave_text: bool = False
    # With interleave_text: nats taken off the log-odds of moving on to the transcript's next
    # token at every row, so each token is spoken longer (> 0) or shorter (< 0): a speaking-rate
    # knob. Where the model is unsure (a constant chance of advancing), the mean number of units
    # per token scales by exp(penalty); rows where it is sure hardly move.
    advance_penalty: float = 0.0

    def __post_init__(self) -> None:
        if self.max_len_ratio < 0:
            raise ValueError(f"max_len_ratio must be >= 0, got {self.max_len_ratio}")
        if not 0 <= self.ctc_weight <= 1:
            raise ValueError(f"ctc_weight must be in [0, 1], got {self.ctc_weight}")
        if self.ctc_pre_beam < 0:
            raise ValueError(f"ctc_pre_beam must be >= 0, got {self.ctc_pre_beam}")
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {sorted(TARGETS)}, got {self.target!r}")
        if not 0 <= self.min_frames <= self.max_frames:
            raise ValueError(
                f"need 0 <= min_frames <= max_frames, got {self.min_frames} and {self.max_frames}"
            )
        if self.ctc_weight > 0 and self.target != "text":
            raise ValueError(f"ctc_weight needs target 'text', got {self.target!r}")
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {self.beam_size}")
        if self.beam_size > 1 and self.target != "text":
            raise ValueError(f"beam_size > 1 needs target 'text', got {self.target!r}")
        if self.lexicon_penalty < 0:
            raise ValueError(f"lexicon_penalty must be >= 0, got {self.lexicon_penalty}")
        if self.lexicon_penalty > 0 and self.target != "text":
            raise ValueError(f"lexicon_penalty needs target 'text', got {self.target!r}")
        if self.word_lm_weight < 0:
            raise ValueError(f"word_lm_weight must be >= 0, got {self.word_lm_weight}")
        if self.word_lm_weight > 0 and self.target != "text":
            raise ValueError(f"word_lm_weight needs target 'text', got {self.target!r}")
        if self.interleave_text and self.target != "speech":
            raise ValueError(f"interleave_text needs target 'speech', got {self.target!r}")
        if self.advance_penalty != 0 and not self.interleave_text:
            raise ValueError("advance_penalty needs interleave_text")
        if not math.isfinite(self.advance_penalty):
            raise ValueError(f"advance_penalty must be finite, got {self.advance_penalty}")


def sample(
    logits: torch.Tensor, config: SamplingConfig, generator: torch.Generator | None
) -> torch.Tensor:
    """Pick one id per row: logits [..., V] (-inf = banned) -> LongTensor [...]."""
    if config.greedy:
        return logits.argmax(-1)
    logits = logits.float() / config.temperature
    if 0 < config.top_k < logits.shape[-1]:
        kth_best = logits.topk(config.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if config.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token once the tokens ranked above it already hold top_p of the mass.
        drop = probs.cumsum(-1) - probs >= config.top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    probs = logits.softmax(-1)
    flat = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator)
    return flat.view(probs.shape[:-1])


class _RowDecoder:
    """Decodes the delayed rows of a batch of prompts; iterate for rows [B, S], k = 0, 1, ..."""

    def __init__(
        self,
        model: MultiStreamLM,
        prompts: list[torch.Tensor],
        config: GenerationConfig,
        seed: int | None,
    ) -> None:
        token_list = model.token_list
        self.model, self.config = model, config
        self.num_streams = streams = token_list.num_streams
        self.pad, self.eos = token_list.pad_id, token_list.eos_id
        self.device = device = model.device
        if not prompts:
            raise ValueError("generate needs at least one prompt")
        for i, prompt in enumerate(prompts):
            if prompt.dim() != 2 or prompt.shape[1] != streams or prompt.shape[0] == 0:
                raise ValueError(
                    f"prompt {i} must be a non-empty [T, {streams}] frame matrix, "
                    f"got shape {tuple(prompt.shape)}"
                )
        self.prompt_lengths = torch.tensor([len(p) for p in prompts], device=device)
        width = int(self.prompt_lengths.max())
        frames = torch.full((len(prompts), width, streams), self.pad, device=device)
        for i, prompt in enumerate(prompts):
            frames[i, width - len(prompt) :] = prompt.to(device)
        self.delayed_prompt = delay(frames, self.pad)  # [B, P + S - 1, S]
        self.width = width
        self.left_padded = bool((self.prompt_lengths < width).any())
        self.mask, self.positions = self._attention_inputs(width + config.max_frames + streams)
        self.limits = self._output_limits(frames, token_list.ranges["semantic"])  # [B]
        # Prefix LM: the condition rows of each prompt (in padded positions) attend both ways.
        self.condition_rows = None
        if model.prefix_lm:
            self.condition_rows = (width - self.prompt_lengths) + torch.tensor(
                [num_condition_frames(p[:, 0].cpu().numpy(), token_list) for p in prompts],
                device=device,
            )

        self.generator = None
        if seed is not None:
            self.generator = torch.Generator(device=device).manual_seed(seed)
        self.stream0_sampling = getattr(config, TARGETS[config.target])
        # Stream 0 only needs logits over one id window holding its modality and eos; the
        # constraint inside the window is a bias built once, not a mask per step.
        start, end = token_list.ranges[TARGETS[config.target]]
        self.window = min(start, self.eos), max(end, self.eos + 1)
        self.transcripts = None
        if config.interleave_text:
            self.transcripts, self.spoken = self._transcripts(prompts)
            text_lo, text_hi = token_list.ranges["text"]
            self.window = min(self.window[0], text_lo), max(self.window[1], text_hi)
        allowed = torch.full((self.window[1] - self.window[0],), float("-inf"), device=device)
        allowed[start - self.window[0] : end - self.window[0]] = 0.0
        self.bias_without_eos = allowed.clone()
        allowed[self.eos - self.window[0]] = 0.0
        self.bias_with_eos = allowed
        self.stop_ids = torch.tensor(sorted(set(config.stop_ids)), dtype=torch.long, device=device)
        self.semantic_range = token_list.ranges["semantic"]
        self.codebook_offsets = token_list.ranges["acoustic"][0] + token_list.codebook_size * (
            torch.arange(streams - 1, device=device)
        )
        self.ctc = self._ctc_scorer(prompts) if config.ctc_weight > 0 else None
        # Word-level scorers with the weight of their values in the stream-0 scores.
        self.word_scorers: list[tuple[HypothesisStates, float]] = []
        if config.lexicon_penalty > 0:
            if config.lexicon is None:
                raise ValueError("lexicon_penalty > 0 needs a lexicon (GenerationConfig.lexicon)")
            lexicon = HypothesisStates(config.lexicon, len(prompts))
            self.word_scorers.append((lexicon, -config.lexicon_penalty))  # words charged
        if config.word_lm_weight > 0:
            if config.word_lm is None:
                raise ValueError("word_lm_weight > 0 needs a word LM (GenerationConfig.word_lm)")
            word_lm = HypothesisStates(config.word_lm, len(prompts))
            self.word_scorers.append((word_lm, config.word_lm_weight))  # log-probs

    def _transcripts(self, prompts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Each prompt's transcript as joint ids [B, L_max + 1], right-padded with eos (what
        comes after its last token), and how many of them are spoken so far [B] (zeros)."""
        text_lo, text_hi = self.model.token_list.ranges["text"]
        texts = []
        for i, prompt in enumerate(prompts):
            stream0 = prompt[:, 0].to(self.device)
            texts.append(stream0[(stream0 >= text_lo) & (stream0 < text_hi)])
            if len(texts[-1]) == 0:
                raise ValueError(f"interleave_text: prompt {i} holds no transcript (text ids)")
            if num_condition_frames(stream0.cpu().numpy(), self.model.token_list) < len(prompt):
                raise ValueError(
                    f"interleave_text: prompt {i} ends in speech after its start token (an "
                    "own-prefix prompt), which has no alignment; use a speaker prompt"
                )
        width = max(len(t) for t in texts) + 1
        out = torch.full((len(texts), width), self.eos, device=self.device)
        for i, text in enumerate(texts):
            out[i, : len(text)] = text
        return out, torch.zeros(len(texts), dtype=torch.long, device=self.device)

    def _choose_interleaved(self, logits: torch.Tensor, eos_allowed: bool) -> torch.Tensor:
        """Stream-0 logits over the window [B, W] -> ids [B]: the transcript's next token (eos
        once all are spoken, if `eos_allowed`) or a semantic unit.

        Whether to advance follows the model's own probability of it: its mass on every text id
        (when a token starts is the model's to say, which token it is the transcript's; a model
        unsure which text id comes would otherwise seldom advance), and after the last token on
        every text id and eos (a model that expects one more token is done speaking). The sampling
        settings shape only the choice among the units, so a temperature or top-k does not change
        how long each token is spoken; `advance_penalty` does (nats off the advance's log-odds).
        Greedy: advance where that probability beats every unit's."""
        lo = self.window[0]
        text_lo, text_hi = self.model.token_list.ranges["text"]
        logits = logits.float()
        following = self.transcripts.gather(1, self.spoken[:, None])[:, 0]  # [B]
        at_end = following == self.eos
        text_mass = logits[:, text_lo - lo : text_hi - lo].logsumexp(-1)  # [B]
        advance = (
            torch.where(at_end, torch.logaddexp(text_mass, logits[:, self.eos - lo]), text_mass)
            - self.config.advance_penalty
        )
        if not eos_allowed:
            advance = advance.masked_fill(at_end, float("-inf"))
        units = logits + self.bias_without_eos  # semantic units only
        unit = sample(units, self.stream0_sampling, self.generator) + lo
        if self.stream0_sampling.greedy:
            take = advance > units.max(-1).values
        else:
            chance = torch.sigmoid(advance - units.logsumexp(-1))
            take = torch.rand(len(chance), generator=self.generator, device=self.device) < chance
        return torch.where(take, following, unit)

    @torch.no_grad()
    def _ctc_scorer(self, prompts: list[torch.Tensor]) -> CTCPrefixScorer:
        """The CTC prefix scorer of the prompts' speech frames (one forward of the prompts)."""
        if self.model.ctc_head is None:
            raise ValueError(
                "ctc_weight > 0 needs a model with a CTC head (trained with model.ctc_weight > 0)"
            )
        # Right-padded, not left-padded like the decoding batch: ctc_log_probs reads the rows
        # as training does, where padding only ever follows an example.
        frames = torch.full_like(self.delayed_prompt[:, : self.width], self.pad)
        for i, prompt in enumerate(prompts):
            frames[i, : len(prompt)] = prompt.to(self.device)
        log_probs, speech_lengths = self.model.ctc_log_probs(frames, self.prompt_lengths)
        no_speech = (speech_lengths == 0).nonzero().flatten().tolist()
        if no_speech:
            raise ValueError(
                f"ctc_weight > 0 scores the prompt's speech, but prompt {no_speech[0]} has no "
                "speech frames (an ASR prompt is needed)"
            )
        return CTCPrefixScorer(log_probs, speech_lengths)

    def _output_limits(self, frames: torch.Tensor, semantic: tuple[int, int]) -> torch.Tensor:
        """Most frames each output may have [B]: max_frames, the max_len_ratio bound, and what
        the model's context leaves after the prompt (its rows, then the output and its S-row
        delay tail)."""
        config = self.config
        limits = torch.full((len(frames),), config.max_frames, device=self.device)
        if config.max_len_ratio > 0:
            stream0 = frames[..., 0]
            speech = ((stream0 >= semantic[0]) & (stream0 < semantic[1])).sum(-1)  # [B]
            bound = torch.ceil(speech * config.max_len_ratio).long()
            limits = torch.where(speech > 0, torch.minimum(limits, bound.clamp(min=1)), limits)
        room = self.model.output_room(self.prompt_lengths)  # [B]
        if room is not None:
            context = self.model.context_length
            if int(room.min()) < 1:
                i = int(room.argmin())
                raise ValueError(
                    f"prompt {i} has {int(self.prompt_lengths[i])} rows: with the output's "
                    f"{self.num_streams}-row delay tail it leaves no room in the model's context "
                    f"of {context} positions (max_position_embeddings); shorten the input"
                )
            cut = (room < limits).nonzero().flatten().tolist()
            if cut:
                i = cut[0]
                logger.warning(
                    "%d outputs cut short by the model's context of %d positions (prompt %d: "
                    "at most %d frames instead of %d)",
                    len(cut),
                    context,
                    i,
                    int(room[i]),
                    int(limits[i]),
                )
                limits = torch.minimum(limits, room)
        return limits

    def _attention_inputs(self, num_rows: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Attention mask and position ids [B, num_rows] of left-padded rows (None if no pad)."""
        if not self.left_padded:
            return None, None  # the cache counts positions itself
        padding = self.width - self.prompt_lengths
        mask = (torch.arange(num_rows, device=self.device) >= padding[:, None]).long()
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return mask, positions

    @torch.no_grad()
    def _feed(self, rows: torch.Tensor, first: int, cache) -> StepOutput:
        """Feed delayed rows [B, n, S] that sit at padded positions first .. first + n - 1."""
        last = first + rows.shape[1]
        mask = None if self.mask is None else self.mask[:, :last]
        if first == 0 and self.condition_rows is not None:
            # The prompt's condition rows attend to each other in both directions; rows after
            # its target start token (own-prefix TTS, continuations) stay causal, as in training.
            padding = self.width - self.prompt_lengths
            mask = prefix_attention_mask(self.condition_rows, last, padding)
        return self.model.forward_step(
            rows,
            mask,
            cache,
            None if self.positions is None else self.positions[:, first:last],
        )

    def __iter__(self) -> Iterator[torch.Tensor]:
        # No grad context may span a yield: it would leak into the caller's code between rows.
        batch, streams, width = len(self.prompt_lengths), self.num_streams, self.width
        max_rows = self.config.max_frames + streams
        cache = growing_cache(self.model.body.config, width + max_rows)
        step = self._feed(self.delayed_prompt[:, :width], 0, cache)
        stream0_history = torch.full(
            (batch, self.config.max_frames + 1), self.pad, device=self.device
        )
        eos_frame = torch.full((batch,), -1, device=self.device)
        for k in range(max_rows):
            row = self._choose_row(k, step, stream0_history, eos_frame)
            yield row
            ended = eos_frame >= 0
            if bool((ended & (k >= eos_frame + max(streams - 2, 0))).all()):
                return
            step = self._feed(row[:, None], width + k, step.cache)

    def _choose_row(
        self, k: int, step: StepOutput, stream0_history: torch.Tensor, eos_frame: torch.Tensor
    ) -> torch.Tensor:
        """Generated row k [B, S]; records frame k's stream-0 token and eos position in place."""
        streams = self.num_streams
        row = torch.full((len(eos_frame), streams), self.pad, device=self.device)
        if k <= self.config.max_frames:
            bias = self.bias_with_eos if k >= self.config.min_frames else self.bias_without_eos
            logits = self.model.head_logits(step.hidden, *self.window)
            if self.transcripts is not None:
                token0 = self._choose_interleaved(logits, k >= self.config.min_frames)
            else:
                logits = logits + bias
                if self.ctc is not None:
                    logits = self._joint_scores(logits)
                logits = self._with_word_scores(logits)
                token0 = sample(logits, self.stream0_sampling, self.generator) + self.window[0]
            token0 = self._stop_as_eos(token0.masked_fill(k >= self.limits, self.eos))
            ended = eos_frame >= 0
            token0 = token0.masked_fill(ended, self.pad)
            eos_frame.masked_fill_(~ended & (token0 == self.eos), k)
            if self.transcripts is not None:
                text_lo, text_hi = self.model.token_list.ranges["text"]
                self.spoken += ((token0 >= text_lo) & (token0 < text_hi)).long()
            self._advance(token0)
            stream0_history[:, k] = token0
            row[:, 0] = token0
        if streams == 1:
            return row
        frame_of_stream = k - torch.arange(1, streams, device=self.device)  # [S-1]
        if self.config.target == "speech":  # text targets leave streams >= 1 pad
            codebook_logits = self.model.codebook_logits(step.hidden)
            codes = sample(codebook_logits, self.config.acoustic, self.generator)
            # Frames past max_frames come after eos: their owner reads as eos, so they get pad.
            owner = stream0_history[:, frame_of_stream.clamp(0, self.config.max_frames)]
            is_speech = (owner >= self.semantic_range[0]) & (owner < self.semantic_range[1])
            row[:, 1:] = torch.where(is_speech, codes + self.codebook_offsets, self.pad)
        return self._keep_prompt_streams(row, k)

    def _stop_as_eos(self, token0: torch.Tensor) -> torch.Tensor:
        """Stream-0 ids [B] with the config's stop ids replaced by eos."""
        if len(self.stop_ids):
            token0 = token0.masked_fill(torch.isin(token0, self.stop_ids), self.eos)
        return token0

    def _advance(self, token0: torch.Tensor) -> None:
        """Extend the CTC prefix and the word-scorer states of each hypothesis by its chosen
        stream-0 id [B] (where they are used); eos, pad and other non-text ids leave them."""
        if self.ctc is None and not self.word_scorers:
            return
        text_lo, text_hi = self.model.token_list.ranges["text"]
        is_text = (token0 >= text_lo) & (token0 < text_hi)
        text_ids = torch.where(is_text, token0 - text_lo, -1)
        if self.ctc is not None:
            self.ctc.advance(text_ids)
        for states, _ in self.word_scorers:
            states.advance(text_ids.tolist())

    def _with_word_scores(self, scores: torch.Tensor) -> torch.Tensor:
        """Stream-0 scores over the window [B, W] less lexicon_penalty per word each id would
        charge and plus word_lm_weight times its word-LM look-ahead log-prob (text ids, and eos
        for the last word and the sentence end); -inf stays."""
        if not self.word_scorers:
            return scores
        lo = self.window[0]
        text_lo, text_hi = self.model.token_list.ranges["text"]
        text = slice(text_lo - lo, text_hi - lo)
        scored = scores[:, text] > float("-inf")
        added = torch.zeros_like(scores, dtype=torch.float32)
        for states, weight in self.word_scorers:
            added[:, text] += weight * states.scores(scored)
            added[:, self.eos - lo] += weight * states.end_scores().to(scores.device)
        # -inf + a finite score stays -inf, so banned ids stay banned.
        return scores + added.to(scores.dtype)

    def _keep_prompt_streams(self, row: torch.Tensor, k: int) -> torch.Tensor:
        """Generated row k [B, S] with the streams whose frame is still a prompt frame (s > k)
        set to the prompt's own tokens (in place)."""
        if k < self.num_streams - 1:
            from_prompt = k - torch.arange(1, self.num_streams, device=self.device) < 0
            row[:, 1:][:, from_prompt] = self.delayed_prompt[:, self.width + k, 1:][:, from_prompt]
        return row

    def _repeat_prompts(self, beam: int) -> None:
        """Lay each prompt's state out beam times (prompt i at rows i * beam .. i * beam +
        beam - 1): the per-prompt tensors and the CTC scorer; the cache is repeated by the
        caller, after the prompts' one prefill."""
        index = torch.arange(len(self.prompt_lengths), device=self.device).repeat_interleave(beam)
        self.prompt_lengths, self.limits = self.prompt_lengths[index], self.limits[index]
        self.delayed_prompt = self.delayed_prompt[index]
        if self.mask is not None:
            self.mask, self.positions = self.mask[index], self.positions[index]
        if self.condition_rows is not None:
            self.condition_rows = self.condition_rows[index]
        if self.ctc is not None:
            self.ctc.select(index)
        for states, _ in self.word_scorers:
            states.select(index)

    @torch.no_grad()
    def beam_search(self, beam: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Beam search of a text target -> (the best hypothesis per prompt, undelayed frames
        [N_i, S] without eos (streams >= 1 pad, as `generate` returns text); its score [P]).

        A hypothesis' score is the sum of its ids' stream-0 scores (LM log-probs, or the joint
        CTC / LM scores of `_joint_scores`); an ended hypothesis keeps its score and competes
        with the open ones. Every step's score is <= 0, so the search stops once each prompt's
        best hypothesis has ended: no open one can overtake it. The prompts are run once, then
        their cache is copied to the beam's hypotheses.
        """
        config, streams, width = self.config, self.num_streams, self.width
        prompts = len(self.prompt_lengths)
        num_hyps = prompts * beam
        lo, hi = self.window
        eos_column = self.eos - lo
        cache = growing_cache(self.model.body.config, width + config.max_frames + 1)
        step = self._feed(self.delayed_prompt[:, :width], 0, cache)
        if beam > 1:
            step.cache.batch_repeat_interleave(beam)
            step = StepOutput(step.hidden.repeat_interleave(beam, dim=0), step.cache)
            self._repeat_prompts(beam)
        # Only the first copy of each prompt is live at first, so the beam starts from one
        # hypothesis rather than beam identical ones.
        scores = torch.zeros(prompts, beam, device=self.device)
        scores[:, 1:] = float("-inf")
        scores = scores.flatten()  # [H]
        history = torch.full((num_hyps, config.max_frames + 1), self.pad, device=self.device)
        ended = torch.zeros(num_hyps, dtype=torch.bool, device=self.device)
        first_hyp = (torch.arange(prompts, device=self.device) * beam)[:, None]  # [P, 1]
        in_place = torch.arange(num_hyps, device=self.device)
        # At its length limit a hypothesis can only end; an ended one only stays as it is (one
        # candidate at its own score).
        only_eos = torch.full((hi - lo,), float("-inf"), device=self.device)
        only_eos[eos_column] = 0.0
        for k in range(config.max_frames + 1):
            bias = self.bias_with_eos if k >= config.min_frames else self.bias_without_eos
            logits = self.model.head_logits(step.hidden, lo, hi) + bias
            step_scores = (
                self._joint_scores(logits)
                if self.ctc is not None
                else logits.float().log_softmax(-1)
            )  # [H, W]
            step_scores = torch.where((k >= self.limits)[:, None], only_eos, step_scores)
            # After the forced ends, so that one still pays for a last word that is only a prefix.
            step_scores = self._with_word_scores(step_scores)
            step_scores = torch.where(ended[:, None], only_eos, step_scores)
            candidates = (scores[:, None] + step_scores).view(prompts, -1)  # [P, beam * W]
            best, flat = candidates.topk(beam, dim=-1)  # [P, beam], best first
            parent = (first_hyp + flat // step_scores.shape[1]).flatten()  # [H]
            token0 = self._stop_as_eos((flat % step_scores.shape[1]).flatten() + lo)
            # Fewer live candidates than the beam (a CTC pre-beam narrower than the beam, or
            # every hypothesis at its length limit): the -inf ones picked to fill it are dead
            # hypotheses; they end at once and never advance a scorer with an unscored id.
            was_ended = ended[parent] | torch.isneginf(best).flatten()
            token0 = token0.masked_fill(was_ended, self.pad)
            scores, ended = best.flatten(), was_ended | (token0 == self.eos)
            history = history[parent]
            history[:, k] = token0
            if self.ctc is not None:
                self.ctc.select(parent)
            for states, _ in self.word_scorers:
                states.select(parent)
            self._advance(token0)
            if bool(ended.view(prompts, beam)[:, 0].all()):
                break
            if not torch.equal(parent, in_place):
                reorder_generated_rows(step.cache, parent, width)
            row = torch.full((num_hyps, streams), self.pad, device=self.device)
            row[:, 0] = token0
            step = self._feed(self._keep_prompt_streams(row, k)[:, None], width + k, step.cache)
        best_tokens = history[first_hyp[:, 0]]  # [P, max_frames + 1]
        outputs = []
        for tokens, length in zip(best_tokens, frames_before_eos(best_tokens, self.eos).tolist()):
            frames = torch.full((length, streams), self.pad, dtype=tokens.dtype)
            frames[:, 0] = tokens[:length].cpu()
            outputs.append(frames)
        return outputs, scores.view(prompts, beam)[:, 0].cpu()

    def _joint_scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Stream-0 logits over the window [B, W] (banned ids -inf) -> joint CTC / LM scores
        [B, W]: text candidates get (1 - w) log p_LM + w (log psi(g + c) - log psi(g)), eos
        (1 - w) log p_LM(eos) + w (log P_ctc(g) - log psi(g)); every other id is -inf."""
        weight = self.config.ctc_weight
        lm = logits.float().log_softmax(-1)
        text_lo, text_hi = self.model.token_list.ranges["text"]
        text = lm[:, text_lo - self.window[0] : text_hi - self.window[0]]  # [B, C]
        pre_beam = self.config.ctc_pre_beam
        if weight < 1 and 0 < pre_beam < text.shape[1]:
            labels = text.topk(pre_beam, dim=-1).indices  # [B, K] ESPnet's pre-beam
        else:
            labels = torch.arange(text.shape[1], device=self.device).expand(len(text), -1)
        prefix, whole = self.ctc.score(labels)
        # A hypothesis the CTC scores rule out (psi = 0) only arises when nothing else was left
        # (see below); from then on the LM decides alone.
        alive = (self.ctc.prefix_score > float("-inf"))[:, None]
        delta = torch.where(alive, prefix - self.ctc.prefix_score[:, None], 0.0)
        eos_delta = torch.where(alive[:, 0], whole - self.ctc.prefix_score, 0.0)

        def joint(lm_scores: torch.Tensor, ctc_delta: torch.Tensor) -> torch.Tensor:
            # A banned id stays banned at ctc_weight 1 too (0 * -inf would be nan).
            mixed = (1 - weight) * lm_scores + weight * ctc_delta
            return torch.where(lm_scores > float("-inf"), mixed, float("-inf"))

        columns = labels + text_lo - self.window[0]
        scores = torch.full_like(lm, float("-inf"))
        scores.scatter_(1, columns, joint(lm.gather(1, columns), delta))
        eos = self.eos - self.window[0]
        scores[:, eos] = joint(lm[:, eos], eos_delta)
        # Every candidate ruled out and eos banned (min_frames): the LM picks among candidates.
        stuck = (scores == float("-inf")).all(-1, keepdim=True)
        fallback = torch.full_like(lm, float("-inf")).scatter_(1, columns, lm.gather(1, columns))
        return torch.where(stuck, fallback, scores)


def reorder_generated_rows(
    cache: transformers.DynamicCache, parent: torch.Tensor, start: int
) -> None:
    """Give hypothesis h the cached rows of hypothesis parent[h] [H], where every parent is a
    hypothesis of the same prompt.

    The rows before `start` (the prompt's prefill, copied to each of its hypotheses) are the same
    for all of a prompt's hypotheses, so only the generated rows are moved, in place: at a step
    of an ASR beam the prompt's speech is most of the cache, and `reorder_cache` copied it all
    (BENCHMARKS.md, "Beam search: reorder the generated rows only")."""
    for layer in cache.layers:
        if type(layer) not in (transformers.cache_utils.DynamicLayer, GrowingLayer):
            cache.reorder_cache(parent)  # a sliding-window or other layer: keep its own logic
            return
    for layer in cache.layers:
        if layer.keys.shape[-2] > start:
            layer.keys[:, :, start:] = layer.keys[parent, :, start:]
            layer.values[:, :, start:] = layer.values[parent, :, start:]


def frames_before_eos(stream0: torch.Tensor, eos: int) -> torch.Tensor:
    """Stream-0 ids [B, K] -> frames before each row's first eos [B] (K if it has none)."""
    is_eos = stream0 == eos
    return torch.where(is_eos.any(-1), is_eos.int().argmax(-1), stream0.shape[1])


def generate(
    model: MultiStreamLM,
    prompts: list[torch.Tensor],
    config: GenerationConfig,
    seed: int | None = None,
) -> list[torch.Tensor]:
    """Decode a batch: prompts [T_i, S] (undelayed joint ids ending with the target's start
    token) -> generated undelayed frames [N_i, S] without eos, one per prompt."""
    if config.beam_size > 1:
        return _RowDecoder(model, prompts, config, seed).beam_search(config.beam_size)[0]
    decoder = _RowDecoder(model, prompts, config, seed)
    rows = torch.stack(list(decoder), dim=1)  # [B, K, S]
    outputs = []
    for i, n in enumerate(frames_before_eos(rows[..., 0], decoder.eos).tolist()):
        outputs.append(undelay(rows[i : i + 1, : n + decoder.num_streams - 1])[0].cpu())
    return outputs


def generate_stream(
    model: MultiStreamLM,
    prompt: torch.Tensor,
    config: GenerationConfig,
    seed: int | None = None,
) -> Iterator[torch.Tensor]:
    """Decode one prompt [T, S], yielding each frame [S] as soon as all its streams are decoded
    (S - 1 rows after its stream 0); the same frames as `generate`."""
    if config.beam_size > 1:
        raise ValueError("generate_stream picks one id per step: beam_size > 1 needs `generate`")
    decoder = _RowDecoder(model, [prompt], config, seed)
    rows: list[torch.Tensor] = []
    lag = decoder.num_streams - 1
    for row in decoder:
        rows.append(row[0])
        frame_index = len(rows) - 1 - lag
        if frame_index < 0:
            continue
        if int(rows[frame_index][0]) == decoder.eos:
            return
        frame = torch.stack([rows[frame_index + s][s] for s in range(decoder.num_streams)])
        yield frame.cpu()
