"""Copy synthesis: encode and decode every utterance through a codec and score it with a judge."""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jiwer
from tqdm import tqdm

from opuslm.audio import AudioReader, read_table, write_wav
from opuslm.bin import run
from opuslm.dump import write_text_atomic
from opuslm.eval.judges import AsrJudge, PocketsphinxJudge, transcribe_all
from opuslm.eval.normalizer import normalize_english
from opuslm.tokenizers.acoustic import Codec, load_codec

logger = logging.getLogger("opuslm.copy_synthesis")


@dataclass
class CopySynthesis:
    """Where the resynthesised audio went and what it cost."""

    wav_scp: Path
    audio_seconds: float
    codec_seconds: float  # encode + decode wall time
    codec_cpu_seconds: float  # the same in CPU time of this process (all threads)

    @property
    def real_time_factor(self) -> float:
        return self.codec_seconds / self.audio_seconds


def copy_synthesize(
    reader: AudioReader, codec: Codec, uttids: Sequence[str], output_dir: str | Path
) -> CopySynthesis:
    """Encode -> decode each utterance; write output_dir/wav/<uttid>.wav and output_dir/wav.scp."""
    output_dir = Path(output_dir)
    wav_dir = output_dir / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    lines, audio_seconds, codec_seconds, cpu_seconds = [], 0.0, 0.0, 0.0
    for uttid in tqdm(uttids, desc="copy synthesis", unit="utt"):
        wav = reader.read(uttid)
        start, cpu_start = time.perf_counter(), time.process_time()
        resynthesized = codec.decode(codec.encode(wav))
        codec_seconds += time.perf_counter() - start
        cpu_seconds += time.process_time() - cpu_start
        audio_seconds += len(wav) / codec.sample_rate
        path = (wav_dir / f"{uttid}.wav").resolve()
        write_wav(path, resynthesized, codec.sample_rate)
        lines.append(f"{uttid} {path}\n")
    write_text_atomic(output_dir / "wav.scp", "".join(lines))
    return CopySynthesis(output_dir / "wav.scp", audio_seconds, codec_seconds, cpu_seconds)


def judge_wer(
    judge: AsrJudge, reader: AudioReader, references: dict[str, str], nj: int = 1
) -> tuple[float, dict[str, str]]:
    """Corpus WER (percent, English-normalised) of the judge on every utterance of `references`.

    nj: judge processes (see `transcribe_all`). Returns (wer, {uttid: hypothesis}).
    """
    source = str(reader.wav_scp)
    items = [(source, uttid) for uttid in references]
    transcripts = transcribe_all(judge, {source: reader}, items, nj, desc="judge")
    hypotheses = {uttid: t.text for uttid, t in zip(references, transcripts, strict=True)}
    # An utterance the normaliser empties entirely would make jiwer reject the corpus.
    reference_texts = [normalize_english(references[u]) or "<empty>" for u in references]
    hypothesis_texts = [normalize_english(hypotheses[u]) for u in references]
    return 100.0 * jiwer.wer(reference_texts, hypothesis_texts), hypotheses


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data_dir", required=True, help="Kaldi data directory (wav.scp, text)")
    parser.add_argument("--codec_dir", required=True, help="directory with codec.yaml")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--max_utts", type=int, default=0, help="first N utterances (0 = all)")
    parser.add_argument(
        "--judge",
        choices=("pocketsphinx", "none"),
        default="pocketsphinx",
        help="ASR judge for score.json (needs data_dir/text)",
    )
    parser.add_argument(
        "--skip_original",
        action="store_true",
        help="judge only the resynthesised audio (when the original's judge WER is known, e.g. "
        "the ref WER of score_tts on the same utterances)",
    )
    parser.add_argument("--allow_pipes", action="store_true", help="run `cmd |` wav.scp entries")
    parser.add_argument(
        "--nj", type=int, default=1, help="processes for the judge (the codec runs in one)"
    )
    return parser


def write_hypotheses(path: Path, hypotheses: dict[str, str]) -> None:
    write_text_atomic(path, "".join(f"{u} {h}\n" for u, h in hypotheses.items()))


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    output_dir = Path(args.output_dir)
    codec = load_codec(args.codec_dir)
    reader = AudioReader(args.data_dir, sample_rate=codec.sample_rate, allow_pipes=args.allow_pipes)
    uttids = reader.uttids()[: args.max_utts or None]
    result = copy_synthesize(reader, codec, uttids, output_dir)
    logger.info(
        "%d utterances, %.1f s of audio, codec real-time factor %.3f",
        len(uttids),
        result.audio_seconds,
        result.real_time_factor,
    )
    text_path = Path(args.data_dir) / "text"
    if args.judge == "none" or not text_path.is_file():
        return 0
    texts = read_table(text_path)
    missing = [u for u in uttids if u not in texts]
    if missing:
        raise SystemExit(f"{text_path}: no transcript for {missing[0]} ({len(missing)} missing)")
    references = {u: texts[u] for u in uttids}
    judge = PocketsphinxJudge()
    wer_original = None
    if not args.skip_original:
        wer_original, hyp_original = judge_wer(judge, reader, references, args.nj)
        write_hypotheses(output_dir / "judge_original.txt", hyp_original)
    resynthesized = AudioReader(result.wav_scp, sample_rate=codec.sample_rate)
    wer_resynthesized, hyp_resynthesized = judge_wer(judge, resynthesized, references, args.nj)
    write_hypotheses(output_dir / "judge_resynthesized.txt", hyp_resynthesized)
    score = {
        "task": "copy_synthesis",
        "test_set": Path(args.data_dir).name,
        "codec_dir": str(args.codec_dir),
        "num_utts": len(uttids),
        "judge": judge.name,
        "normalizer": "whisper_english",
        "wer_original": None if wer_original is None else round(wer_original, 2),
        "wer_resynthesized": round(wer_resynthesized, 2),
        "wer_ratio": round(wer_resynthesized / wer_original, 3) if wer_original else None,
        "codec_real_time_factor": round(result.real_time_factor, 4),
    }
    write_text_atomic(output_dir / "score.json", json.dumps(score, indent=2) + "\n")
    logger.info("%s", json.dumps(score))
    return 0


if __name__ == "__main__":
    run(main)
