"""Train the built-in log-mel RVQ acoustic codec (MelRVQCodec) on a data directory's audio."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import yaml
from tqdm import tqdm

from opuslm.audio import AudioReader
from opuslm.bin import run
from opuslm.tokenizers.acoustic import train_codec

logger = logging.getLogger("opuslm.train_codec")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data_dir", required=True, help="Kaldi data directory (wav.scp)")
    parser.add_argument("--output_dir", required=True, help="codec directory to write")
    parser.add_argument("--config", help="YAML with more MelRVQ options (n_mels, n_fft, ...)")
    parser.add_argument("--sample_rate", type=int, default=16000)
    parser.add_argument("--num_codebooks", type=int, default=8)
    parser.add_argument("--codebook_size", type=int, default=1024)
    parser.add_argument("--hop_length", type=int, default=320)
    parser.add_argument(
        "--max_frames", type=int, default=200_000, help="frames sampled for k-means"
    )
    parser.add_argument("--max_utts", type=int, default=0, help="use the first N (0 = all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--allow_pipes", action="store_true", help="run `cmd |` wav.scp entries")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = {}
    if args.config:
        with open(args.config, encoding="utf-8") as f:
            config = yaml.safe_load(f) or {}
    # Command-line options override the config file.
    config.update(
        sample_rate=args.sample_rate,
        num_codebooks=args.num_codebooks,
        codebook_size=args.codebook_size,
        hop_length=args.hop_length,
        max_frames=args.max_frames,
        seed=args.seed,
    )
    reader = AudioReader(args.data_dir, sample_rate=args.sample_rate, allow_pipes=args.allow_pipes)
    uttids = reader.uttids()[: args.max_utts or None]
    start = time.perf_counter()
    wavs = (reader.read(u) for u in tqdm(uttids, desc="codec features", unit="utt"))
    codec = train_codec(wavs, config)
    codec.save(args.output_dir)
    logger.info(
        "trained %s on %d utterances in %.1f s -> %s",
        type(codec).__name__,
        len(uttids),
        time.perf_counter() - start,
        Path(args.output_dir) / "codec.yaml",
    )
    return 0


if __name__ == "__main__":
    run(main)
