"""Pack a checkpoint and its tokenizers into a self-contained model directory (stage 11)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import yaml

from opuslm.bin import run
from opuslm.packing import PackError, pack

log = logging.getLogger("opuslm.pack")


def read_decode_config(path: Path | None) -> dict[str, dict]:
    """`task: {settings}` mapping from a YAML file (None: no overrides)."""
    if path is None:
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise PackError(f"{path}: cannot read the decoding config: {e}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise PackError(f"{path}: expected a mapping task -> decoding settings")
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--checkpoint",
        required=True,
        type=Path,
        help="a step directory (exp/x/checkpoints/step_N) or the run directory (its latest)",
    )
    parser.add_argument("--text_tokenizer_dir", required=True, type=Path)
    parser.add_argument("--semantic_dir", required=True, type=Path)
    parser.add_argument("--codec_dir", required=True, type=Path)
    parser.add_argument("--output_dir", required=True, type=Path)
    parser.add_argument(
        "--prompt_frames",
        type=int,
        help="TTS speaker prompt length in frames (default: the training run's, else 3 s)",
    )
    parser.add_argument(
        "--default_prompt_wav",
        type=Path,
        help="audio of the speaker that TTS uses when no prompt is given (e.g. a training "
        "utterance); without it, prompt-less TTS is an error",
    )
    parser.add_argument(
        "--decode_config",
        type=Path,
        help="YAML `task: {text/semantic/acoustic: {greedy, top_k, top_p, temperature}, "
        "min_frames, max_frames, ...}` overriding the default decoding settings",
    )
    parser.add_argument(
        "--lexicon",
        type=Path,
        help="word list (one word per line, e.g. from opuslm.bin.make_lexicon) packed for ASR "
        "decoding with lexicon_penalty > 0",
    )
    parser.add_argument(
        "--word_lm",
        type=Path,
        help="word n-gram counts (opuslm.bin.make_lexicon --word_lm) or an ARPA file, packed "
        "as given for ASR decoding with word_lm_weight > 0",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        output = pack(
            checkpoint=args.checkpoint,
            text_tokenizer_dir=args.text_tokenizer_dir,
            semantic_dir=args.semantic_dir,
            codec_dir=args.codec_dir,
            output_dir=args.output_dir,
            prompt_frames=args.prompt_frames,
            default_prompt_wav=args.default_prompt_wav,
            decoding=read_decode_config(args.decode_config),
            lexicon=args.lexicon,
            word_lm=args.word_lm,
        )
    except PackError as e:
        log.error("%s", e)
        return 1
    log.info("packed %s into %s", args.checkpoint, output)
    return 0


if __name__ == "__main__":
    run(main)
