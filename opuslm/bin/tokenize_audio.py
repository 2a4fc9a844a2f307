"""Dump semantic units + codec codes of a data directory as int32 [T, 1 + n_q] rows (speech.scp)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from opuslm.audio import AudioError, AudioReader
from opuslm.bin import run
from opuslm.data.datadir import DataDirError
from opuslm.dump import Dump, DumpError, ShardWriter, fingerprint, split_for_job
from opuslm.tokenizers.acoustic import Codec, CodecError, load_codec
from opuslm.tokenizers.frames import FrameAlignmentError, check_compatible, tokenize_waveforms
from opuslm.tokenizers.semantic import SemanticError, SemanticTokenizer, load_semantic_tokenizer

log = logging.getLogger("opuslm.tokenize_audio")


def read_batch(
    reader: AudioReader, uttids: list[str], skip_bad: bool, summary: dict
) -> tuple[list[str], list[np.ndarray]]:
    """The readable utterances of `uttids` and their waveforms; bad ones skipped if asked."""
    kept, wavs = [], []
    for uttid in uttids:
        try:
            wavs.append(reader.read(uttid))
            kept.append(uttid)
        except AudioError as e:
            if not skip_bad:
                raise
            log.warning("skipping: %s", e)
            summary["skipped"] += 1
    return kept, wavs


def write_shard(
    args: argparse.Namespace,
    semantic: SemanticTokenizer,
    codec: Codec,
    writer: ShardWriter,
    job: int,
) -> dict:
    reader = AudioReader(
        args.data_dir,
        sample_rate=semantic.sample_rate,
        allow_pipes=args.allow_pipes,
        downmix=args.downmix,
    )
    uttids = split_for_job(reader.uttids(), job, args.nj)
    summary = {"utterances": 0, "frames": 0, "hours": 0.0, "skipped": 0}
    desc = f"tokenize_audio job {job}/{args.nj}"
    with tqdm(total=len(uttids), unit="utt", desc=desc) as progress:
        for start in range(0, len(uttids), args.batch_size):
            chunk = uttids[start : start + args.batch_size]
            kept, wavs = read_batch(reader, chunk, args.skip_bad, summary)
            if wavs:  # empty when every utterance of the chunk was skipped
                for uttid, wav, frames in zip(
                    kept, wavs, tokenize_waveforms(semantic, codec, wavs, kept)
                ):
                    writer.add(uttid, frames)
                    summary["utterances"] += 1
                    summary["frames"] += len(frames)
                    summary["hours"] += len(wav) / semantic.sample_rate / 3600
            progress.update(len(chunk))
    return summary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data_dir", required=True, help="data directory with wav.scp")
    parser.add_argument("--semantic_dir", required=True, help="trained semantic tokenizer")
    parser.add_argument("--codec_dir", required=True, help="codec directory (codec.yaml)")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--nj", type=int, default=1, help="number of parallel jobs")
    parser.add_argument("--job", type=int, help="run only this job (1..nj); no merging")
    parser.add_argument("--batch_size", type=int, default=16, help="utterances per batch")
    parser.add_argument(
        "--skip_bad", action="store_true", help="skip unreadable audio (logged) instead of failing"
    )
    parser.add_argument("--allow_pipes", action="store_true", help="run `cmd |` wav.scp entries")
    parser.add_argument("--downmix", action="store_true", help="average > 2 channels too")
    args = parser.parse_args(argv)
    if args.nj < 1 or args.batch_size < 1:
        parser.error("--nj and --batch_size must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    data_dir = Path(args.data_dir)
    segments = data_dir / "segments"
    try:
        dump = Dump(
            output_dir=Path(args.output_dir),
            name="speech",
            lengths_name="utt2num_frames",
            module="opuslm.bin.tokenize_audio",
            nj=args.nj,
            signature={
                "wav.scp": fingerprint(data_dir / "wav.scp"),
                "segments": fingerprint(segments) if segments.is_file() else None,
                "semantic": fingerprint(args.semantic_dir),
                "codec": fingerprint(args.codec_dir),
                "nj": args.nj,
                "options": [args.skip_bad, args.allow_pipes, args.downmix],
            },
        )

        def tokenize(writer: ShardWriter, job: int) -> dict:
            # Loaded here, only when a shard really has to be written.
            semantic = load_semantic_tokenizer(args.semantic_dir)
            codec = load_codec(args.codec_dir)
            check_compatible(semantic, codec)
            threads = max(1, (os.cpu_count() or 1) // args.nj)
            torch.set_num_threads(threads)
            with threadpool_limits(threads):
                return write_shard(args, semantic, codec, writer, job)

        dump.run(argv, args.job, tokenize)
    except (
        AudioError,
        CodecError,
        DataDirError,
        DumpError,
        FrameAlignmentError,
        SemanticError,
        OSError,
    ) as e:
        log.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    run(main)
