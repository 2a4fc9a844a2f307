"""ASR judges of synthesised speech, and running one over many utterances in parallel.

Every judge takes mono float32 waveforms `[N]` in [-1, 1] at any sample rate and resamples to the
rate its model expects. ASR judges share one interface, `transcribe(wav, sample_rate) -> str` and
`transcribe_batch(wavs, sample_rate) -> list[str]`:

- `PocketsphinxJudge`: the offline default; pocketsphinx 5 ships its US-English acoustic model,
  dictionary and language model inside the PyPI package.
- `WhisperJudge` (`opuslm.eval.hf_judges`): any Whisper checkpoint in a local Hugging Face
  directory.

The judges that are Hugging Face models, with the speaker embedder and the MOS predictor, live in
`opuslm.eval.hf_judges`, so that scoring with pocketsphinx never imports torch or transformers
(seconds of every scoring step's start-up).

`transcribe_all` runs an ASR judge over many utterances, in `nj` worker processes when asked
(pocketsphinx decodes on one core, so judging is the slow part of TTS scoring on a CPU).
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import soxr
from tqdm import tqdm

JUDGES = ("pocketsphinx", "whisper")
# A worker pool costs about 3 s to start (the forkserver imports the judge's module, each
# worker builds its judge): about 8 pocketsphinx transcripts. Fewer items than this per worker
# run with fewer workers (one: no pool), so small sets (the smoke recipe, a few test
# utterances) stay fast.
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


def load_judge(
    name: str, model_dir: str | os.PathLike | None = None, device: str = "cpu"
) -> AsrJudge:
    """The ASR judge called `name` (one of JUDGES); `whisper` needs `model_dir`."""
    if name == "pocketsphinx":
        return PocketsphinxJudge()
    if name == "whisper":
        if model_dir is None:
            raise ValueError("the whisper judge needs a local model directory (--judge_dir)")
        from opuslm.eval.hf_judges import WhisperJudge

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
    # module and the judge's makes each worker a fork of a server that has imported them (torch,
    # for a Hugging Face judge) once.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(sorted({__name__, type(judge).__module__} - {"__main__"}))
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
    # nj workers share the cores: more threads each would only oversubscribe them (torch is
    # there only when the judge is a torch model).
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
    _worker_state.update(judge=judge, sources=sources)


def _transcribe_in_worker(chunk: Sequence[tuple[str, str]]) -> list[Transcript]:
    return _transcribe_chunk(_worker_state["judge"], _worker_state["sources"], chunk)
