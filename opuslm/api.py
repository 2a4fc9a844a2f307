"""The Python API: `OpusLM.from_pretrained(packed_dir)` and one method per skill.

    m = OpusLM.from_pretrained("exp/x/packed")
    text = m.transcribe(wav, sample_rate)                     # ASR
    wav, sr = m.synthesize("hello", prompt=(prompt_wav, sr))  # TTS
    frames = m.encode_audio(wav, sample_rate)                 # LongTensor [T, S] joint ids
    wav, sr = m.decode_audio(frames)

Audio comes in as a mono float waveform [N] with its sample rate (resampled to the model's rate
when it differs) and goes out as float32 [N] at `m.sample_rate`. Batched methods decode all inputs
in one batch; with greedy settings they give exactly the one-by-one results.

TTS speaker prompts. The prompt audio is tokenized and cut (or looped) to the prompt length the
model was trained with. Without a prompt, the default prompt stored in the packed directory (one
training utterance, chosen at pack time) is used; a model packed without one raises an error
instead of inventing a speaker. `own_prefix=True` (the default for models trained with their own
utterance prefix as the prompt) treats the prompt audio as the beginning of the utterance: its
frames also start the target speech, `text` must then include the prompt's words, and only the
continuation is returned.

Streaming TTS decodes every chunk of `chunk_frames` frames through the codec on its own, as soon
as its frames are decoded; `synthesize` decodes the whole utterance at once (better for a
Griffin-Lim codec, whose phase estimate spans the utterance). So for greedy decoding the streamed
chunks are exactly `decode_audio` of consecutive chunks of the frames `synthesize` decodes, with
the same total length, but not the same samples at chunk joints.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from opuslm.audio import resample
from opuslm.model.generate import GenerationConfig, generate, generate_stream
from opuslm.packing import (
    PackedModel,
    check_decoding_model,
    generation_config,
    load_packed,
    merge_settings,
)
from opuslm.tasks import Example, crop_prompt, generation_prompt
from opuslm.tokenizers.frames import tokenize_waveforms

logger = logging.getLogger(__name__)

Audio = tuple[np.ndarray, int]  # (mono float waveform [N], sample rate)


def audio_names(audios: Sequence[Audio], names: Sequence[str] | None) -> Sequence[str]:
    """How errors refer to each input: the given names, else "audio <i>"."""
    return names or [f"audio {i}" for i in range(len(audios))]


class InputError(ValueError):
    """Input the model cannot take: empty audio or text, text the tokenizer cannot encode."""


class OpusLM:
    """A packed OpusLM model: the multi-stream LM with its text, semantic and codec tokenizers."""

    def __init__(self, packed: PackedModel) -> None:
        self.packed = packed
        self.model = packed.model
        self.token_list = packed.token_list
        self.text_tokenizer = packed.text_tokenizer
        self.semantic = packed.semantic
        self.codec = packed.codec
        self.sample_rate = int(packed.config.sample_rate)
        self.frame_rate = float(packed.config.frame_rate)
        self._logged_rates: set[int] = set()

    @classmethod
    def from_pretrained(
        cls, model_dir: str | os.PathLike, device: str | torch.device = "cpu"
    ) -> OpusLM:
        """Load a packed model directory (written by `python -m opuslm.bin.pack`)."""
        return cls(load_packed(model_dir, device))

    @property
    def device(self) -> torch.device:
        return self.model.device

    def decoding(self, task: str, overrides: dict | None = None) -> GenerationConfig:
        """The packed default decoding settings of `task`, with `overrides` merged in.

        overrides: e.g. {"semantic": {"greedy": True}, "max_frames": 200}, or for asr
        {"ctc_weight": 0.3} (joint CTC / LM decoding; needs a model trained with a CTC head)
        and {"beam_size": 4} (beam search instead of greedy), {"lexicon_penalty": 2.0} (a model
        packed with a lexicon: each word not in it costs that much score), {"word_lm_weight": 0.5}
        (a model packed with a word LM: shallow fusion with it).
        """
        settings = self.packed.config.decoding.get(task, {})
        merged = merge_settings(settings, overrides or {})
        where = f"decoding settings for {task}"
        config = generation_config(task, merged, where)
        packed = self.packed
        check_decoding_model(
            config, self.model, where, packed.lexicon is not None, packed.word_lm is not None
        )
        if config.lexicon_penalty > 0:
            config.lexicon = packed.lexicon
        if config.word_lm_weight > 0:
            config.word_lm = packed.word_lm
        eos = self.text_tokenizer.eos_id
        if task == "textlm" and eos is not None:
            # textlm sequences end with the tokenizer's own eos (a text id, not the joint eos).
            config.stop_ids = (int(self.token_list.encode_text([eos])[0]),)
        return config

    # ------------------------------------------------------------------ audio <-> frames
    def _waveform(self, wav: np.ndarray, sample_rate: int, what: str) -> np.ndarray:
        """Validate a mono float waveform and bring it to the model's sample rate."""
        wav = np.asarray(wav)
        if wav.ndim != 1:
            raise InputError(f"{what}: expected a mono waveform [N], got shape {list(wav.shape)}")
        if wav.size == 0:
            raise InputError(f"{what}: empty audio")
        if not np.issubdtype(wav.dtype, np.floating):
            raise InputError(
                f"{what}: expected float samples in [-1, 1], got dtype {wav.dtype} "
                "(convert 16-bit PCM with wav / 32768)"
            )
        if not np.isfinite(wav).all():
            raise InputError(f"{what}: audio contains NaN or inf samples")
        if int(sample_rate) != self.sample_rate and int(sample_rate) not in self._logged_rates:
            self._logged_rates.add(int(sample_rate))
            logger.info("resampling %d Hz -> %d Hz (%s)", sample_rate, self.sample_rate, what)
        return resample(wav.astype(np.float32), int(sample_rate), self.sample_rate)

    def encode_raw(self, wav: np.ndarray, sample_rate: int, what: str = "audio") -> np.ndarray:
        """Waveform -> raw token rows int32 [T, S]: semantic unit, then the codec codes."""
        return self.encode_raw_batch([(wav, sample_rate)], [what])[0]

    def encode_raw_batch(
        self, audios: Sequence[Audio], names: Sequence[str] | None = None
    ) -> list[np.ndarray]:
        """Several waveforms -> raw token rows [T_i, S], tokenized together (faster).

        names: how errors refer to each input (default "audio <i>").
        """
        names = audio_names(audios, names)
        wavs = [self._waveform(w, sr, name) for (w, sr), name in zip(audios, names)]
        return tokenize_waveforms(self.semantic, self.codec, wavs, names)

    def encode_audio(self, wav: np.ndarray, sample_rate: int) -> torch.Tensor:
        """Waveform [N] -> LongTensor [T, S] joint ids (stream 0 semantic, streams 1.. codec)."""
        return torch.from_numpy(self.token_list.encode_frames(self.encode_raw(wav, sample_rate)))

    def decode_audio(self, frames: torch.Tensor | np.ndarray) -> Audio:
        """Joint-id frames [T, S] -> (float32 waveform [T' * hop], sample rate) from the codec
        streams of the T' speech frames (rows whose stream 0 is a semantic unit; text rows of an
        interleaved output are dropped); no frames give an empty waveform."""
        frames = np.asarray(torch.as_tensor(frames).cpu(), dtype=np.int64)
        if frames.ndim != 2 or frames.shape[1] != self.token_list.num_streams:
            raise InputError(
                f"frames must be [T, {self.token_list.num_streams}], got {list(frames.shape)}"
            )
        # An interleaved TTS output (`interleave_text`) also holds its transcript's rows.
        semantic_lo, semantic_hi = self.token_list.ranges["semantic"]
        frames = frames[(frames[:, 0] >= semantic_lo) & (frames[:, 0] < semantic_hi)]
        if len(frames) == 0:
            return np.zeros(0, dtype=np.float32), self.sample_rate
        codes = self.token_list.decode_acoustic(frames[:, 1:])
        return np.asarray(self.codec.decode(codes), dtype=np.float32), self.sample_rate

    # ------------------------------------------------------------------ text
    def encode_text(self, text: str, what: str = "text") -> np.ndarray:
        """Text -> base-tokenizer ids [L]; empty text or characters it cannot encode raise."""
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"{what}: empty text")
        ids = list(self.text_tokenizer.encode(text))
        unk = self.text_tokenizer.unk_id
        if unk is not None and unk in ids:
            unknown = sorted(
                {c for c in text if not c.isspace() and unk in self.text_tokenizer.encode(c)}
            )
            raise InputError(
                f"{what}: the text tokenizer cannot encode {''.join(unknown) or 'part of'} {text!r}"
            )
        return np.asarray(ids, dtype=np.int64)

    def decode_text(self, frames: torch.Tensor) -> str:
        """Generated text frames [N, S] -> string (stream 0 holds text ids)."""
        ids = self.token_list.decode_text(np.asarray(frames[:, 0].cpu()))
        return self.text_tokenizer.decode(ids.tolist())

    # ------------------------------------------------------------------ prompts
    def _within_context(self, frames: np.ndarray, what: str) -> torch.Tensor:
        """Prompt rows [T, S] as a tensor, once the model's context is known to have room for
        them and an output (a longer input would run on positions the model never saw)."""
        room = self.model.output_room(len(frames))
        if room is not None and room < 1:
            raise InputError(
                f"{what}: its prompt has {len(frames)} rows, which leave no room for an output "
                f"in the model's context of {self.model.context_length} positions "
                "(max_position_embeddings); split the input into shorter pieces"
            )
        return torch.from_numpy(frames)

    def _speaker_prompt(self, prompt: Audio | None, what: str) -> np.ndarray:
        """Raw rows [P, S] of the speaker: the given audio, else the packed default prompt."""
        if prompt is not None:
            wav, sample_rate = prompt
            return self.encode_raw(wav, sample_rate, what)
        if self.packed.default_prompt is None:
            raise InputError(
                f"{what}: no speaker prompt given and {self.packed.directory} has no default "
                "prompt; pass prompt=(wav, sample_rate) or pack with --default_prompt_wav"
            )
        return self.packed.default_prompt

    def asr_prompts(
        self, audios: Sequence[Audio], names: Sequence[str] | None = None
    ) -> list[torch.Tensor]:
        """Decoding prompts [T_i, S] for transcribing waveforms."""
        names = audio_names(audios, names)
        return [
            self._within_context(
                generation_prompt("asr", Example(name, speech=rows), self.token_list), name
            )
            for rows, name in zip(self.encode_raw_batch(audios, names), names)
        ]

    def tts_prompt(
        self,
        text: str,
        prompt: Audio | None = None,
        own_prefix: bool | None = None,
        what: str = "text",
    ) -> torch.Tensor:
        """Decoding prompt [T, S] for synthesising `text` (see the module docstring)."""
        if own_prefix is None:
            own_prefix = self.packed.config.prompt_source == "self"
        speaker = self._speaker_prompt(prompt, f"{what} (speaker prompt)")
        example = Example(
            uttid=what,
            text=self.encode_text(text, what),
            prompt=crop_prompt(speaker, self.packed.config.prompt_frames, rng=None),
        )
        frames = generation_prompt("tts", example, self.token_list)
        if own_prefix:
            frames = np.concatenate([frames, self.token_list.encode_frames(speaker)])
        return self._within_context(frames, what)

    def continuation_prompts(
        self, audios: Sequence[Audio], names: Sequence[str] | None = None
    ) -> list[torch.Tensor]:
        """Decoding prompts [T_i, S] that continue the given audio (audiolm)."""
        names = audio_names(audios, names)
        start = generation_prompt("audiolm", Example(uttid="audiolm"), self.token_list)
        return [
            self._within_context(np.concatenate([start, self.token_list.encode_frames(rows)]), name)
            for rows, name in zip(self.encode_raw_batch(audios, names), names)
        ]

    def textlm_prompt(self, text: str, what: str = "text") -> torch.Tensor:
        """Decoding prompt [T, S]: the tokenizer's bos (if any) and the text, in stream 0."""
        bos = self.text_tokenizer.bos_id
        ids = np.concatenate([[bos] if bos is not None else [], self.encode_text(text, what)])
        example = Example(uttid=what, text=ids.astype(np.int64))
        return self._within_context(generation_prompt("textlm", example, self.token_list), what)

    # ------------------------------------------------------------------ decoding
    def generate(
        self,
        task: str,
        prompts: Sequence[torch.Tensor],
        decoding: dict | GenerationConfig | None = None,
        seed: int | None = None,
    ) -> list[torch.Tensor]:
        """Decode a batch of prompts [T_i, S] for `task` -> generated frames [N_i, S]."""
        config = (
            decoding if isinstance(decoding, GenerationConfig) else self.decoding(task, decoding)
        )
        return generate(self.model, list(prompts), config, seed=seed)

    def transcribe(
        self,
        wav: np.ndarray,
        sample_rate: int,
        decoding: dict | None = None,
        seed: int | None = None,
    ) -> str:
        """Speech recognition of one waveform [N] -> text."""
        return self.transcribe_batch([(wav, sample_rate)], decoding, seed)[0]

    def transcribe_batch(
        self, audios: Sequence[Audio], decoding: dict | None = None, seed: int | None = None
    ) -> list[str]:
        """Speech recognition of several (waveform, sample rate) pairs in one batch."""
        prompts = self.asr_prompts(audios)
        return [self.decode_text(f) for f in self.generate("asr", prompts, decoding, seed)]

    def synthesize(
        self,
        text: str,
        prompt: Audio | None = None,
        own_prefix: bool | None = None,
        decoding: dict | None = None,
        seed: int | None = None,
    ) -> Audio:
        """Speech synthesis of `text` in the prompt's voice -> (float32 waveform, sample rate)."""
        prompts = None if prompt is None else [prompt]
        return self.synthesize_batch([text], prompts, own_prefix, decoding, seed)[0]

    def synthesize_batch(
        self,
        texts: Sequence[str],
        prompts: Sequence[Audio | None] | None = None,
        own_prefix: bool | None = None,
        decoding: dict | None = None,
        seed: int | None = None,
    ) -> list[Audio]:
        """Speech synthesis of several texts in one batch; prompts[i] is text i's speaker."""
        if prompts is not None and len(prompts) != len(texts):
            raise InputError(f"{len(texts)} texts but {len(prompts)} prompts")
        speakers = prompts if prompts is not None else [None] * len(texts)
        batch = [
            self.tts_prompt(text, speaker, own_prefix, f"text {i}")
            for i, (text, speaker) in enumerate(zip(texts, speakers))
        ]
        return [self.decode_audio(f) for f in self.generate("tts", batch, decoding, seed)]

    def synthesize_stream(
        self,
        text: str,
        prompt: Audio | None = None,
        own_prefix: bool | None = None,
        decoding: dict | None = None,
        seed: int | None = None,
        chunk_frames: int = 25,
    ) -> Iterator[np.ndarray]:
        """Speech synthesis yielding float32 audio chunks of `chunk_frames` frames (the last may
        be shorter) as soon as they are decoded; see the module docstring for the codec."""
        if chunk_frames <= 0:
            raise InputError(f"chunk_frames must be positive, got {chunk_frames}")
        config = self.decoding("tts", decoding)
        frames = generate_stream(
            self.model, self.tts_prompt(text, prompt, own_prefix), config, seed
        )
        chunk: list[torch.Tensor] = []
        for frame in frames:
            chunk.append(frame)
            if len(chunk) == chunk_frames:
                yield self.decode_audio(torch.stack(chunk))[0]
                chunk = []
        if chunk:
            yield self.decode_audio(torch.stack(chunk))[0]

    def continue_audio(
        self,
        wav: np.ndarray,
        sample_rate: int,
        decoding: dict | None = None,
        seed: int | None = None,
    ) -> Audio:
        """Audio continuation (audiolm): the audio that follows `wav`, without `wav` itself."""
        prompts = self.continuation_prompts([(wav, sample_rate)])
        return self.decode_audio(self.generate("audiolm", prompts, decoding, seed)[0])

    def generate_text(
        self, prompt: str, decoding: dict | None = None, seed: int | None = None
    ) -> str:
        """Text continuation (textlm) of `prompt`, up to the tokenizer's eos (excluded)."""
        frames = self.generate("textlm", [self.textlm_prompt(prompt)], decoding, seed)[0]
        return self.decode_text(frames)
