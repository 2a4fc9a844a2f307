"""Models that judge synthesised speech: ASR judges, a speaker embedder and a MOS predictor.

Every judge takes mono float32 waveforms `[N]` in [-1, 1] at any sample rate and resamples to the
rate its model expects. ASR judges share one interface, `transcribe(wav, sample_rate) -> str` and
`transcribe_batch(wavs, sample_rate) -> list[str]`:

- `PocketsphinxJudge`: the offline default; pocketsphinx 5 ships its US-English acoustic model,
  dictionary and language model inside the PyPI package.
- `WhisperJudge`: any Whisper checkpoint in a local Hugging Face directory.

`SpeakerEmbedder` (WavLM-style x-vector models, or mean-pooled hidden states of any audio encoder)
and `MOSPredictor` (an audio model with a one-output regression head) also load from local
Hugging Face directories; nothing here downloads anything.

`transcribe_all` runs an ASR judge over many utterances, in `nj` worker processes when asked
(pocketsphinx decodes on one core, so judging is the slow part of TTS scoring on a CPU).
"""

from __future__ import annotations

import functools
import multiprocessing
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import soxr
import torch
import transformers
from tqdm import tqdm

JUDGES = ("pocketsphinx", "whisper")
# A worker pool costs about 3 s to start (the forkserver imports torch, each worker builds its
# judge): about 8 pocketsphinx transcripts. Fewer items than this per worker run with fewer
# workers (one: no pool), so small sets (the smoke recipe, a few test utterances) stay fast.
MIN_ITEMS_PER_WORKER = 16


def resample(wav: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    """Mono float32 [N] at `sample_rate` -> float32 [M] at `target_rate`."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise ValueError(f"expected a mono waveform [N], got shape {wav.shape}")
    if sample_rate == target_rate:
        return wav
    return soxr.resample(wav, sample_rate, target_rate).astype(np.float32, copy=False)


class AsrJudge(ABC):
    """An ASR model that transcribes synthesised speech for judge-WER.

    A judge is sent to `transcribe_all`'s worker processes by pickling; judges that hold
    unpicklable models define `__reduce__` so that each worker builds its own copy.
    """

    name: str
    # How many waveforms `transcribe_all` hands to one `transcribe_batch` call.
    batch_size: int = 1

    @abstractmethod
    def transcribe(self, wav: np.ndarray, sample_rate: int) -> str:
        """The transcript of one mono float32 waveform [N]."""

    def transcribe_batch(self, wavs: Sequence[np.ndarray], sample_rate: int) -> list[str]:
        """Transcripts of several waveforms [N_i] (one at a time unless a judge batches)."""
        return [self.transcribe(wav, sample_rate) for wav in wavs]


class PocketsphinxJudge(AsrJudge):
    """CMU pocketsphinx with the English model bundled in its PyPI package.

    decoder_options: passed to `pocketsphinx.Decoder` (e.g. `hmm`, `dict`, `lm` paths of another
    model); by default its bundled US-English model is used, with logging silenced.
    """

    name = "pocketsphinx"

    def __init__(self, **decoder_options: object) -> None:
        from pocketsphinx import Decoder

        self.decoder_options = decoder_options
        self.decoder = Decoder(**{"loglevel": "FATAL", **decoder_options})
        self.sample_rate = int(self.decoder.config["samprate"])

    def __reduce__(self):
        # A pocketsphinx Decoder cannot be pickled: a worker process builds its own.
        return functools.partial(PocketsphinxJudge, **self.decoder_options), ()

    def transcribe(self, wav: np.ndarray, sample_rate: int) -> str:
        wav = resample(wav, sample_rate, self.sample_rate)
        pcm = (np.clip(wav, -1.0, 1.0) * 32767).astype(np.int16)
        # The feature extractor's noise-removal statistics carry over from one utterance to the
        # next, so without a fresh one the same audio gets other words depending on what was
        # judged before it (and on how utterances are split between processes).
        self.decoder.reinit_feat()
        self.decoder.start_utt()
        self.decoder.process_raw(pcm.tobytes(), full_utt=True)
        self.decoder.end_utt()
        hypothesis = self.decoder.hyp()
        return "" if hypothesis is None else hypothesis.hypstr


def _load_pretrained(model_class: type, model_dir: str | os.PathLike, what: str):
    """`model_class.from_pretrained(model_dir)` from local files only, with a clear error."""
    try:
        return model_class.from_pretrained(model_dir, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot load the {what} from local directory {model_dir}: {e}") from e


class WhisperJudge(AsrJudge):
    """A Whisper model (`WhisperForConditionalGeneration` + `WhisperProcessor`) from a local dir.

    language: forced for multilingual checkpoints (English-only ones have no language token).
    """

    name = "whisper"

    def __init__(
        self,
        model_dir: str | os.PathLike,
        device: str = "cpu",
        batch_size: int = 8,
        language: str = "en",
        max_new_tokens: int = 128,
    ) -> None:
        self.init_args = (model_dir, device, batch_size, language, max_new_tokens)
        self.processor = _load_pretrained(
            transformers.WhisperProcessor, model_dir, "Whisper processor"
        )
        self.model = _load_pretrained(
            transformers.WhisperForConditionalGeneration, model_dir, "Whisper model"
        )
        self.model.to(device).eval()
        self.device = device
        self.batch_size = batch_size
        # Whisper refuses prompt + new tokens beyond its decoder positions; the prompt is at most
        # 4 tokens (start, language, task, no-timestamps).
        self.max_new_tokens = min(max_new_tokens, self.model.config.max_target_positions - 4)
        self.sample_rate = self.processor.feature_extractor.sampling_rate
        multilingual = getattr(self.model.generation_config, "lang_to_id", None)
        self.generate_options = {"language": language, "task": "transcribe"} if multilingual else {}

    def __reduce__(self):
        # A worker process loads the model from its directory rather than unpickling weights.
        return WhisperJudge, self.init_args

    def transcribe(self, wav: np.ndarray, sample_rate: int) -> str:
        return self.transcribe_batch([wav], sample_rate)[0]

    @torch.inference_mode()
    def transcribe_batch(self, wavs: Sequence[np.ndarray], sample_rate: int) -> list[str]:
        transcripts = []
        for start in range(0, len(wavs), self.batch_size):
            chunk = [
                resample(w, sample_rate, self.sample_rate)
                for w in wavs[start : start + self.batch_size]
            ]
            # Whisper pads every input to 30 s, so batching does not change any transcript.
            features = self.processor.feature_extractor(
                chunk,
                sampling_rate=self.sample_rate,
                return_tensors="pt",
                return_attention_mask=True,
            )
            token_ids = self.model.generate(
                features.input_features.to(self.device),
                attention_mask=features.attention_mask.to(self.device),
                max_new_tokens=self.max_new_tokens,
                **self.generate_options,
            )
            decoded = self.processor.tokenizer.batch_decode(token_ids, skip_special_tokens=True)
            transcripts += [text.strip() for text in decoded]
        return transcripts


def load_judge(
    name: str, model_dir: str | os.PathLike | None = None, device: str = "cpu"
) -> AsrJudge:
    """The ASR judge called `name` (one of JUDGES); `whisper` needs `model_dir`."""
    if name == "pocketsphinx":
        return PocketsphinxJudge()
    if name == "whisper":
        if model_dir is None:
            raise ValueError("the whisper judge needs a local model directory (--judge_dir)")
        return WhisperJudge(model_dir, device=device)
    raise ValueError(f"unknown judge {name!r}; choose one of {', '.join(JUDGES)}")


class WaveformSource(Protocol):
    """Anything that reads an utterance's waveform by key (e.g. `opuslm.audio.AudioReader`)."""

    sample_rate: int

    def uttids(self) -> list[str]: ...

    def read(self, uttid: str) -> np.ndarray: ...


class JudgeError(RuntimeError):
    """A judge failed on an utterance; the message names the utterance and its audio."""


@dataclass(frozen=True)
class Transcript:
    """The judge's transcript of one waveform and the waveform's length in samples."""

    text: str
    num_samples: int


def transcribe_all(
    judge: AsrJudge,
    sources: Mapping[str, WaveformSource],
    items: Sequence[tuple[str, str]],
    nj: int = 1,
    desc: str = "judging",
) -> list[Transcript]:
    """The judge's transcripts of `items`, in the order of `items`.

    sources: {name: waveform reader}, all at one sample rate; the name appears in errors.
    items: (source name, uttid) pairs to transcribe.
    nj: at most this many worker processes (at least MIN_ITEMS_PER_WORKER items each). With
    more than one, each worker gets a pickled copy of `judge` and of the readers once, reads
    its own audio and runs with one torch thread. nj = 1 judges in this
    process without any pool; both give the same transcripts as long as a judge's transcript
    depends on the waveform alone (true of the judges here).
    """
    if nj < 1:
        raise ValueError(f"nj must be at least 1, got {nj}")
    rates = {name: source.sample_rate for name, source in sources.items()}
    if len(set(rates.values())) > 1:
        raise ValueError(f"audio sources at different sample rates: {rates}")
    unknown = sorted({name for name, _ in items} - set(sources))
    if unknown:
        raise ValueError(f"items name unknown audio sources {unknown}; known: {sorted(sources)}")
    step = max(1, judge.batch_size)
    chunks = [items[start : start + step] for start in range(0, len(items), step)]
    workers = min(nj, len(chunks), max(1, len(items) // MIN_ITEMS_PER_WORKER))
    transcripts: list[Transcript] = []
    with tqdm(
        total=len(items), desc=f"{desc} ({judge.name}, {workers} of nj={nj})", unit="utt"
    ) as progress:
        for chunk_transcripts in _map_chunks(judge, sources, chunks, workers):
            transcripts += chunk_transcripts
            progress.update(len(chunk_transcripts))
    return transcripts


def _map_chunks(
    judge: AsrJudge,
    sources: Mapping[str, WaveformSource],
    chunks: list[Sequence[tuple[str, str]]],
    nj: int,
) -> Iterator[list[Transcript]]:
    """Transcripts of each chunk, in order: here when nj <= 1, else in a pool of nj processes."""
    if nj <= 1:
        yield from (_transcribe_chunk(judge, sources, chunk) for chunk in chunks)
        return
    # forkserver, not fork, although fork starts fastest (to the first result of 2 workers on
    # 2 cores: fork 0.3 s, forkserver 2.8 s, spawn 6-9 s): the caller may have run torch (a
    # codec) with OpenMP threads or CUDA, neither of which survives a fork. Preloading this
    # module makes each worker a fork of a server that has imported torch once.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    with ProcessPoolExecutor(
        nj, context, initializer=_start_worker, initargs=(judge, dict(sources))
    ) as pool:
        try:
            yield from pool.map(_transcribe_in_worker, chunks)
        except BrokenProcessPool as e:
            raise JudgeError(
                f"a {judge.name} judge worker process died (out of memory, or its judge could "
                f"not be built: see the error above): {e}"
            ) from e
        finally:
            # On an error, do not judge the rest of the corpus before reporting it.
            pool.shutdown(wait=False, cancel_futures=True)


def _transcribe_chunk(
    judge: AsrJudge, sources: Mapping[str, WaveformSource], chunk: Sequence[tuple[str, str]]
) -> list[Transcript]:
    """Read and transcribe a few items with one `transcribe_batch` call."""
    wavs = [sources[name].read(uttid) for name, uttid in chunk]
    try:
        texts = judge.transcribe_batch(wavs, sources[chunk[0][0]].sample_rate)
    except Exception as e:
        where = ", ".join(f"utterance {uttid} of {name}" for name, uttid in chunk)
        raise JudgeError(
            f"the {judge.name} judge failed on {where}: {type(e).__name__}: {e}"
        ) from e
    return [Transcript(text, len(wav)) for text, wav in zip(texts, wavs, strict=True)]


# A worker process's judge and audio readers, set once by _start_worker.
_worker_state: dict[str, object] = {}


def _start_worker(judge: AsrJudge, sources: dict[str, WaveformSource]) -> None:
    # nj workers share the cores: more threads each would only oversubscribe them.
    torch.set_num_threads(1)
    _worker_state.update(judge=judge, sources=sources)


def _transcribe_in_worker(chunk: Sequence[tuple[str, str]]) -> list[Transcript]:
    return _transcribe_chunk(_worker_state["judge"], _worker_state["sources"], chunk)


class _AudioModel:
    """A Hugging Face audio model with its feature extractor, fed one waveform at a time.

    One at a time on purpose: encoders without attention masks (wav2vec2-base style) would see
    the zero padding of a batch and give different outputs.
    """

    def __init__(self, model_dir: str | os.PathLike, model_class: type, what: str, device: str):
        self.feature_extractor = _load_pretrained(
            transformers.AutoFeatureExtractor, model_dir, f"{what} feature extractor"
        )
        self.model = _load_pretrained(model_class, model_dir, what)
        self.model.to(device).eval()
        self.device = device
        self.sample_rate = self.feature_extractor.sampling_rate

    @torch.inference_mode()
    def forward(self, wav: np.ndarray, sample_rate: int):
        inputs = self.feature_extractor(
            resample(wav, sample_rate, self.sample_rate),
            sampling_rate=self.sample_rate,
            return_tensors="pt",
        )
        return self.model(**{k: v.to(self.device) for k, v in inputs.items()})


class SpeakerEmbedder:
    """Speaker embeddings from a local HF directory, compared by cosine similarity.

    An x-vector head (`WavLMForXVector`, `Wav2Vec2ForXVector`, ...) is used when the checkpoint
    has one; any other audio encoder is mean-pooled over time.
    """

    def __init__(self, model_dir: str | os.PathLike, device: str = "cpu") -> None:
        config = _load_pretrained(transformers.AutoConfig, model_dir, "speaker model config")
        self.has_xvector_head = any(
            arch.endswith("ForXVector") for arch in (config.architectures or [])
        )
        model_class = (
            transformers.AutoModelForAudioXVector
            if self.has_xvector_head
            else transformers.AutoModel
        )
        self.audio_model = _AudioModel(model_dir, model_class, "speaker model", device)

    def embed(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        """float32 [D] embedding of one waveform [N]."""
        outputs = self.audio_model.forward(wav, sample_rate)
        if self.has_xvector_head:
            embedding = outputs.embeddings[0]
        else:
            embedding = outputs.last_hidden_state[0].mean(dim=0)
        return embedding.float().cpu().numpy()

    def similarity(self, wav_a: np.ndarray, wav_b: np.ndarray, sample_rate: int) -> float:
        """Cosine similarity in [-1, 1] of the speaker embeddings of two waveforms."""
        return cosine_similarity(self.embed(wav_a, sample_rate), self.embed(wav_b, sample_rate))


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the angle between two vectors [D] (0 when either is all zeros)."""
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / norms) if norms > 0 else 0.0


class MOSPredictor:
    """A MOS predictor: a local HF audio model whose classification head has a single output.

    Any checkpoint loadable by `AutoModelForAudioClassification` with `num_labels=1` plugs in
    (e.g. a wav2vec2/WavLM encoder fine-tuned as a MOS regressor).
    """

    def __init__(self, model_dir: str | os.PathLike, device: str = "cpu") -> None:
        self.audio_model = _AudioModel(
            model_dir, transformers.AutoModelForAudioClassification, "MOS model", device
        )
        num_labels = self.audio_model.model.config.num_labels
        if num_labels != 1:
            raise ValueError(
                f"MOS model in {model_dir} has {num_labels} outputs; a MOS predictor needs a "
                f"regression head with exactly one (num_labels=1)"
            )

    def predict(self, wav: np.ndarray, sample_rate: int) -> float:
        """The predicted MOS of one waveform [N]."""
        return float(self.audio_model.forward(wav, sample_rate).logits[0, 0])
