"""TTS scoring: judge-ASR WER of synthesised vs reference audio, duration ratio, speaker, MOS.

The synthesised `wav.scp` holds one or more samples per utterance: key `<uttid>` (sample 0) or
`<uttid>_sample<k>` (k = 0, 1, ...). The first sample of each utterance is scored. With
`best_of_n=N` the sample with the fewest judge word errors among the first N is kept instead;
the published OpusLM results ranked 10 samples this way without saying so, so the choice is
written into score.json whenever it is used.

A reference utterance without any synthesised sample is scored as an empty transcript (all
deletions) and listed, as in ASR scoring; a synthesised key that names no reference utterance is
an error.

The judge's transcripts of the reference audio depend on that audio and the judge alone, so a
caller scoring several systems on one test set can pass those of an earlier call
(`ref_transcripts`, returned in `TtsScore.ref_transcripts`) and only the rest are judged.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import jiwer
import numpy as np
from tqdm import tqdm

from opuslm.eval.asr_scoring import AsrScore, ScoringError, format_ids, score_texts
from opuslm.eval.judges import AsrJudge, Transcript, WaveformSource, transcribe_all
from opuslm.eval.normalizer import get_normalizer

if TYPE_CHECKING:  # torch and transformers come with them: imported by whoever builds them
    from opuslm.eval.hf_judges import MOSPredictor, SpeakerEmbedder

SAMPLE_KEY = re.compile(r"^(?P<uttid>.+)_sample(?P<index>\d+)$")


def group_samples(keys: Sequence[str], refs: dict[str, str], where: str) -> dict[str, list[str]]:
    """{uttid: its synthesised keys ordered by sample index} for the keys of a wav.scp."""
    indexed: dict[str, list[tuple[int, str]]] = {}
    unknown = []
    for key in keys:
        match = SAMPLE_KEY.match(key)
        if key in refs:
            uttid, index = key, 0
        elif match and match["uttid"] in refs:
            uttid, index = match["uttid"], int(match["index"])
        else:
            unknown.append(key)
            continue
        indexed.setdefault(uttid, []).append((index, key))
    if unknown:
        raise ScoringError(
            f"{where}: keys that are neither a reference uttid nor <uttid>_sample<k>: "
            f"{format_ids(unknown)}"
        )
    grouped = {}
    for uttid, samples in indexed.items():
        indices = [index for index, _ in samples]
        if len(set(indices)) != len(indices):
            raise ScoringError(f"{where}: utterance {uttid} has two keys for the same sample")
        grouped[uttid] = [key for _, key in sorted(samples)]
    return grouped


@dataclass
class TtsUtterance:
    """What was measured for one utterance (the chosen sample only)."""

    uttid: str
    sample_key: str | None
    judge_text: str
    judge_ref_text: str
    duration_ratio: float | None = None
    speaker_similarity: float | None = None
    mos: float | None = None
    ref_mos: float | None = None


@dataclass
class TtsScore:
    """Judge WER of synthesised and reference audio plus the optional speaker / MOS scores."""

    synthesized: AsrScore
    reference: AsrScore
    utterances: list[TtsUtterance]
    judge: str
    best_of_n: int | None = None
    # The judge's transcript of every reference utterance scored (reused or judged here).
    ref_transcripts: dict[str, Transcript] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        """The score.json fields (rates in percent); optional scores only when measured."""
        wer, ref_wer = self.synthesized.words.error_rate, self.reference.words.error_rate
        result: dict[str, object] = {
            "task": "tts",
            "judge": self.judge,
            "wer": round(wer, 4),
            "ref_wer": round(ref_wer, 4),
            "wer_ratio": round(wer / ref_wer, 4) if ref_wer > 0 else None,
            "cer": round(self.synthesized.chars.error_rate, 4),
            "ref_cer": round(self.reference.chars.error_rate, 4),
            "duration_ratio": _mean_of(self.utterances, "duration_ratio"),
            "num_utts": len(self.utterances),
            "num_missing_syn": len(self.synthesized.missing),
            "normalizer": self.synthesized.normalizer,
            # 95% bootstrap intervals over the utterances (opuslm.eval.bootstrap).
            "wer_interval_95": [round(x, 2) for x in self.synthesized.wer_interval()],
            "ref_wer_interval_95": [round(x, 2) for x in self.reference.wer_interval()],
        }
        if self.best_of_n is not None:
            result["best_of_n"] = self.best_of_n
        for name in ("speaker_similarity", "mos", "ref_mos"):
            mean = _mean_of(self.utterances, name)
            if mean is not None:
                result[name] = mean
        return result


def _mean_of(utterances: list[TtsUtterance], name: str) -> float | None:
    values = [getattr(u, name) for u in utterances if getattr(u, name) is not None]
    return round(float(np.mean(values)), 4) if values else None


def _word_errors(ref: str, hyp: str, normalize: Callable[[str], str]) -> int:
    out = jiwer.process_words(normalize(ref), normalize(hyp))
    return out.substitutions + out.deletions + out.insertions


def score_tts(
    refs: dict[str, str],
    ref_audio: WaveformSource,
    syn_audio: WaveformSource,
    judge: AsrJudge,
    normalizer: str = "whisper_english",
    best_of_n: int | None = None,
    speaker_embedder: SpeakerEmbedder | None = None,
    mos_predictor: MOSPredictor | None = None,
    syn_name: str = "synthesised wav.scp",
    ref_name: str = "reference wav.scp",
    nj: int = 1,
    ref_transcripts: Mapping[str, Transcript] | None = None,
) -> TtsScore:
    """Judge every utterance of `refs` (text) on its reference and synthesised audio.

    ref_audio / syn_audio: waveform readers keyed by uttid / by sample key (see module doc), at
    the same sample rate.
    best_of_n: keep the sample with the fewest judge errors among the first N per utterance.
    nj: processes for the judge transcripts (same scores for any nj); the speaker embedder and
    the MOS predictor run in this process.
    ref_transcripts: the same judge's transcripts of (some of) this reference audio from an
    earlier call; those utterances' reference audio is not judged again.
    """
    if ref_audio.sample_rate != syn_audio.sample_rate:
        raise ScoringError(
            f"reference audio at {ref_audio.sample_rate} Hz but synthesised audio at "
            f"{syn_audio.sample_rate} Hz: read both at one rate"
        )
    samples = _check_inputs(refs, ref_audio, syn_audio, best_of_n, syn_name, ref_name)
    judged_keys = {uttid: samples.get(uttid, [])[: best_of_n or 1] for uttid in refs}
    ref_source, syn_source = f"reference audio {ref_name}", f"synthesised audio {syn_name}"
    sources = {ref_source: ref_audio, syn_source: syn_audio}
    known = dict(ref_transcripts or {})
    items = []
    for uttid, keys in judged_keys.items():
        items += [] if uttid in known else [(ref_source, uttid)]
        items += [(syn_source, key) for key in keys]
    transcripts = iter(transcribe_all(judge, sources, items, nj))
    normalize = get_normalizer(normalizer)
    utterances = []
    used: dict[str, Transcript] = {}
    for uttid, text in refs.items():
        ref = used[uttid] = known[uttid] if uttid in known else next(transcripts)
        utterance = TtsUtterance(uttid, None, "", ref.text)
        keys = judged_keys[uttid]
        syn = [next(transcripts) for _ in keys]
        if keys:
            # min() keeps the first of equally good samples.
            best = min(range(len(keys)), key=lambda i: _word_errors(text, syn[i].text, normalize))
            utterance.sample_key, utterance.judge_text = keys[best], syn[best].text
            utterance.duration_ratio = syn[best].num_samples / ref.num_samples
        utterances.append(utterance)
    if speaker_embedder is not None or mos_predictor is not None:
        _score_speaker_and_mos(utterances, ref_audio, syn_audio, speaker_embedder, mos_predictor)
    uttids, ref_texts = list(refs), list(refs.values())
    missing = [u.uttid for u in utterances if u.sample_key is None]
    return TtsScore(
        synthesized=score_texts(
            uttids, ref_texts, [u.judge_text for u in utterances], normalizer, missing
        ),
        reference=score_texts(
            uttids, ref_texts, [u.judge_ref_text for u in utterances], normalizer
        ),
        utterances=utterances,
        judge=judge.name,
        best_of_n=best_of_n,
        ref_transcripts=used,
    )


def _score_speaker_and_mos(
    utterances: list[TtsUtterance],
    ref_audio: WaveformSource,
    syn_audio: WaveformSource,
    speaker_embedder: SpeakerEmbedder | None,
    mos_predictor: MOSPredictor | None,
) -> None:
    """Fill in the speaker similarity and MOS of each utterance's chosen sample (in place)."""
    sample_rate = ref_audio.sample_rate
    for utterance in tqdm(utterances, desc="speaker / MOS", unit="utt"):
        ref_wav = ref_audio.read(utterance.uttid)
        if mos_predictor is not None:
            utterance.ref_mos = mos_predictor.predict(ref_wav, sample_rate)
        if utterance.sample_key is None:
            continue
        wav = syn_audio.read(utterance.sample_key)
        if speaker_embedder is not None:
            utterance.speaker_similarity = speaker_embedder.similarity(wav, ref_wav, sample_rate)
        if mos_predictor is not None:
            utterance.mos = mos_predictor.predict(wav, sample_rate)


def _check_inputs(
    refs: dict[str, str],
    ref_audio: WaveformSource,
    syn_audio: WaveformSource,
    best_of_n: int | None,
    syn_name: str,
    ref_name: str,
) -> dict[str, list[str]]:
    """Fail before any judging on inputs that do not fit; returns the grouped samples."""
    if best_of_n is not None and best_of_n < 1:
        raise ScoringError(f"best_of_n must be at least 1, got {best_of_n}")
    samples = group_samples(syn_audio.uttids(), refs, syn_name)
    if not samples:
        raise ScoringError(f"{syn_name} has no sample of any reference utterance")
    with_audio = set(ref_audio.uttids())
    without_audio = [uttid for uttid in refs if uttid not in with_audio]
    if without_audio:
        raise ScoringError(
            f"{ref_name}: no audio for {len(without_audio)} reference utterances: "
            f"{format_ids(without_audio)}"
        )
    if best_of_n is not None:
        short = [uttid for uttid, keys in samples.items() if len(keys) < best_of_n]
        if short:
            raise ScoringError(
                f"{syn_name}: best_of_n={best_of_n} but {len(short)} utterances have fewer "
                f"samples, e.g. {short[0]} has {len(samples[short[0]])}"
            )
    return samples
