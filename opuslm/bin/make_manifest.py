"""Write a task manifest (data.json): utterances present in every entry file, with lengths."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from opuslm.bin import run
from opuslm.data.manifest import TASK_ENTRIES, ManifestError, build_manifest
from opuslm.vocab import VocabError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="opuslm make_manifest",
        description=__doc__,
        epilog="Paths inside data.json are stored relative to its directory. Lengths come from "
        "utt2num_frames / utt2num_tokens next to the scp files, else from reading the arks.",
    )
    parser.add_argument("--task", required=True, choices=sorted(TASK_ENTRIES))
    parser.add_argument("--dataset", required=True, help="name of the data set, e.g. train")
    parser.add_argument("--token_list", required=True, type=Path, help="token_list.json")
    parser.add_argument("--speech", type=Path, help="speech.scp: int32 [T, S] token dumps")
    parser.add_argument("--text", type=Path, help="text.scp: int32 [L] base-tokenizer ids")
    parser.add_argument(
        "--align",
        type=Path,
        help="tts: align.scp, int [L] start frame per text token (opuslm.bin.align_text); the "
        "target speech then interleaves the transcript",
    )
    parser.add_argument("--utt2spk", type=Path, help="utt2spk, for TTS speaker prompts")
    parser.add_argument(
        "--prompt_frames", type=int, default=0, help="TTS speaker prompt length in frames"
    )
    parser.add_argument("--output", required=True, type=Path, help="the manifest, data.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    entries = {
        name: getattr(args, name) for name in ("speech", "text", "align") if getattr(args, name)
    }
    try:
        manifest = build_manifest(
            args.task,
            args.dataset,
            args.token_list,
            entries,
            args.output,
            utt2spk=args.utt2spk,
            prompt_frames=args.prompt_frames,
        )
    except (ManifestError, VocabError, OSError) as e:
        logging.error("%s", e)
        return 1
    manifest.save()
    lengths = manifest.lengths()
    logging.info(
        "%s: %d utterances, %d rows (min %d, max %d)",
        args.output,
        len(lengths),
        lengths.sum(),
        lengths.min(),
        lengths.max(),
    )
    return 0


if __name__ == "__main__":
    run(main)
