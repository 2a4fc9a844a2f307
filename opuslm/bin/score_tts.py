"""Score TTS output: judge-ASR WER (synthesised vs reference audio), durations, speaker, MOS."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from opuslm.audio import AudioError, AudioReader
from opuslm.dump import write_text_atomic
from opuslm.eval.asr_scoring import ScoringError, format_report, read_kaldi_text
from opuslm.eval.judges import JUDGES, JudgeError, MOSPredictor, SpeakerEmbedder, load_judge
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
    return parser


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
        speaker = SpeakerEmbedder(args.spk_model_dir, args.device) if args.spk_model_dir else None
        mos = MOSPredictor(args.mos_model_dir, args.device) if args.mos_model_dir else None
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
    logger.info(
        "judge WER %.2f%% (reference audio %.2f%%), duration ratio %s  (%s)",
        result["wer"],
        result["ref_wer"],
        result["duration_ratio"],
        args.output_dir,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
