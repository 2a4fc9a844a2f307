"""Score TTS output: judge-ASR WER (synthesised vs reference audio), durations, speaker, MOS."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path

from opuslm.audio import AudioError, AudioReader
from opuslm.bin import run
from opuslm.dump import write_text_atomic
from opuslm.eval.asr_scoring import ScoringError, format_report, read_kaldi_text
from opuslm.eval.judges import JUDGES, JudgeError, Transcript, load_judge
from opuslm.eval.normalizer import DEFAULT_NORMALIZER, NORMALIZERS
from opuslm.eval.tts_scoring import TtsScore, score_tts

logger = logging.getLogger("opuslm.score_tts")

# Every judge model here works at 16 kHz; each resamples itself if that ever changes.
SAMPLE_RATE = 16000


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ref_text", required=True, type=Path, help="reference Kaldi text")
    parser.add_argument("--ref_wav_scp", required=True, type=Path, help="reference audio")
    parser.add_argument(
        "--syn_wav_scp",
        required=True,
        type=Path,
        help="synthesised audio; keys <uttid> or <uttid>_sample<k> for several samples",
    )
    parser.add_argument("--output_dir", required=True, type=Path)
    parser.add_argument("--judge", choices=JUDGES, default="pocketsphinx")
    parser.add_argument("--judge_dir", type=Path, help="local Whisper directory (--judge whisper)")
    parser.add_argument("--spk_model_dir", type=Path, help="local speaker-embedding model dir")
    parser.add_argument("--mos_model_dir", type=Path, help="local MOS-predictor model dir")
    parser.add_argument(
        "--best_of_n",
        type=int,
        help="keep the best of the first N samples by judge WER (written into score.json); "
        "default: score the first sample only",
    )
    parser.add_argument("--normalizer", choices=NORMALIZERS, default=DEFAULT_NORMALIZER)
    parser.add_argument("--device", default="cpu", help="torch device of the HF judge models")
    parser.add_argument(
        "--nj",
        type=int,
        default=1,
        help="processes for the ASR judge, each with its own copy of the judge (same scores for "
        "any value); the speaker and MOS models run in the main process",
    )
    parser.add_argument(
        "--allow_pipes", action="store_true", help="run `cmd |` entries of the wav.scp files"
    )
    parser.add_argument(
        "--ref_judge_cache",
        type=Path,
        help="JSON file of the judge's transcripts of the reference audio: those found there "
        "(same judge, same --ref_wav_scp) are not judged again, the new ones are added. For "
        "scoring several systems on one test set",
    )
    return parser


def ref_cache_key(args: argparse.Namespace) -> dict[str, str | None]:
    """What the cached reference transcripts depend on: the judge and the reference audio
    (wav.scp's content and modification time, which stage 2 renews when it rewrites the audio)."""
    scp = args.ref_wav_scp
    digest = hashlib.sha256(scp.read_bytes()).hexdigest()
    return {
        "judge": args.judge,
        "judge_dir": str(args.judge_dir) if args.judge_dir else None,
        "ref_wav_scp": f"{scp.resolve()} sha256:{digest} mtime_ns:{scp.stat().st_mtime_ns}",
    }


def load_ref_cache(path: Path, key: dict[str, str | None]) -> dict[str, Transcript]:
    """The cached transcripts if `path` was written for `key`, else none (logged)."""
    if not path.exists():
        return {}
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        if cached.get("key") != key:
            logger.info("%s: written for another judge or reference audio; not used", path)
            return {}
        return {u: Transcript(t["text"], int(t["num_samples"])) for u, t in cached["utts"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        logger.warning("%s: unreadable reference-judge cache (%s); judging afresh", path, e)
        return {}


def save_ref_cache(
    path: Path, key: dict[str, str | None], transcripts: dict[str, Transcript]
) -> None:
    utts = {u: {"text": t.text, "num_samples": t.num_samples} for u, t in transcripts.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps({"key": key, "utts": utts}, indent=1) + "\n")


def write_outputs(output_dir: Path, score: TtsScore, result: dict[str, object]) -> None:
    """score.json, judge transcripts and sclite-style reports of both audio sources."""
    for name, field in (("judge_text", "judge_text"), ("judge_ref_text", "judge_ref_text")):
        lines = [f"{u.uttid} {getattr(u, field)}".rstrip() for u in score.utterances]
        write_text_atomic(output_dir / name, "".join(f"{line}\n" for line in lines))
    if score.best_of_n is not None:
        chosen = [f"{u.uttid} {u.sample_key}\n" for u in score.utterances if u.sample_key]
        write_text_atomic(output_dir / "best_sample", "".join(chosen))
    write_text_atomic(output_dir / "result.txt", format_report(score.synthesized))
    write_text_atomic(output_dir / "result_ref.txt", format_report(score.reference))
    write_text_atomic(output_dir / "score.json", json.dumps(result, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        refs = read_kaldi_text(args.ref_text)
        ref_audio = AudioReader(
            args.ref_wav_scp, sample_rate=SAMPLE_RATE, allow_pipes=args.allow_pipes
        )
        syn_audio = AudioReader(
            args.syn_wav_scp, sample_rate=SAMPLE_RATE, allow_pipes=args.allow_pipes
        )
        judge = load_judge(args.judge, args.judge_dir, args.device)
        cache_key = ref_cache_key(args) if args.ref_judge_cache else None
        cached = load_ref_cache(args.ref_judge_cache, cache_key) if cache_key else {}
        if cached:
            logger.info("%d reference transcripts from %s", len(cached), args.ref_judge_cache)
        speaker = mos = None
        if args.spk_model_dir or args.mos_model_dir:
            from opuslm.eval.hf_judges import MOSPredictor, SpeakerEmbedder

            if args.spk_model_dir:
                speaker = SpeakerEmbedder(args.spk_model_dir, args.device)
            if args.mos_model_dir:
                mos = MOSPredictor(args.mos_model_dir, args.device)
        score = score_tts(
            refs,
            ref_audio,
            syn_audio,
            judge,
            normalizer=args.normalizer,
            best_of_n=args.best_of_n,
            speaker_embedder=speaker,
            mos_predictor=mos,
            syn_name=str(args.syn_wav_scp),
            ref_name=str(args.ref_wav_scp),
            nj=args.nj,
            ref_transcripts=cached,
        )
    except (ScoringError, AudioError, JudgeError, ValueError) as e:
        logger.error("%s", e)
        return 1
    if score.synthesized.missing:
        logger.warning(
            "%d of %d utterances have no synthesised sample; scored as all deletions (listed "
            "in result.txt)",
            len(score.synthesized.missing),
            len(refs),
        )
    result = score.to_json()
    model_dirs = {
        "judge_dir": args.judge_dir,
        "spk_model_dir": args.spk_model_dir,
        "mos_model_dir": args.mos_model_dir,
    }
    result.update({key: str(path) for key, path in model_dirs.items() if path is not None})
    write_outputs(args.output_dir, score, result)
    if cache_key is not None and set(score.ref_transcripts) - set(cached):
        save_ref_cache(args.ref_judge_cache, cache_key, {**cached, **score.ref_transcripts})
    logger.info(
        "judge WER %.2f%% (reference audio %.2f%%), duration ratio %s  (%s)",
        result["wer"],
        result["ref_wer"],
        result["duration_ratio"],
        args.output_dir,
    )
    return 0


if __name__ == "__main__":
    run(main)
