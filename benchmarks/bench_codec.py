"""Copy synthesis through MelRVQCodec settings: judge WER on resynthesised vs original flite speech.

Issue 4 is done when pocketsphinx's WER on the resynthesised audio is at most 1.3 x its WER on
the original audio, over at least 100 utterances. This script synthesises a flite corpus from
Debian's fortunes (opuslm.bin.prepare_flite_corpus: 100 training and 100 test sentences, 4
voices round-robin, text-disjoint), trains one codec per setting on the training set, resynthesises
the test set and prints one markdown row per setting, the original audio's WER beside it:

    .venv/bin/python benchmarks/bench_codec.py [--settings 8x1024@50Hz 4x256@25Hz ...]

The corpus and the judge's transcripts of the originals are cached under --work_dir.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from opuslm.audio import AudioReader, read_table
from opuslm.bin import prepare_flite_corpus
from opuslm.bin.copy_synthesis import copy_synthesize, judge_wer
from opuslm.eval.judges import PocketsphinxJudge
from opuslm.tokenizers.acoustic import train_codec
from opuslm.tokenizers.codec_melrvq import MelRVQCodec

DEFAULT = {"num_codebooks": 8, "codebook_size": 1024, "hop_length": 320}
SMALL = {"num_codebooks": 4, "codebook_size": 256, "hop_length": 640}
SETTINGS = {
    "8x1024@50Hz": DEFAULT,
    "4x256@25Hz": SMALL,
    "8x1024@50Hz mel128": {**DEFAULT, "n_mels": 128},
    "8x1024@50Hz gl64": {**DEFAULT, "griffin_lim_iters": 64},
    "8x1024@50Hz gl16": {**DEFAULT, "griffin_lim_iters": 16},
    "8x1024@50Hz synth_hop80": {**DEFAULT, "synthesis_hop": 80},
    "8x1024@50Hz synth_hop320": {**DEFAULT, "synthesis_hop": 320},
    "8x1024@50Hz utt-norm": {**DEFAULT, "normalization": "utterance"},
    "8x1024@50Hz nfft512": {**DEFAULT, "n_fft": 512},
    "4x256@25Hz mel128": {**SMALL, "n_mels": 128},
    "mel only (no VQ)": {**DEFAULT, "num_codebooks": 1, "codebook_size": 2},
}


class UnquantisedMel:
    """The codec's analysis and Griffin-Lim synthesis without quantisation: the ceiling of VQ."""

    def __init__(self, codec: MelRVQCodec) -> None:
        self.codec = codec
        self.sample_rate = codec.sample_rate

    def encode(self, wav: np.ndarray) -> np.ndarray:
        return self.codec.log_mel(wav)

    def decode(self, log_mel: np.ndarray) -> np.ndarray:
        return self.codec.synthesize(log_mel)


def prepare_corpus(work_dir: Path, num_train: int, num_test: int, seed: int) -> Path:
    data_dir = work_dir / "data"
    if not (data_dir / "test" / "text").is_file():
        prepare_flite_corpus.main(
            [
                f"--output_dir={data_dir}",
                f"--wav_dir={work_dir / 'wav'}",
                f"--num_train={num_train}",
                "--num_valid=4",
                f"--num_test={num_test}",
                "--num_text_test=0",
                "--num_text_train=0",
                f"--seed={seed}",
            ]
        )
    return data_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", type=Path, default=Path("/tmp/opuslm_bench_codec"))
    parser.add_argument("--num_train", type=int, default=100)
    parser.add_argument("--num_test", type=int, default=100)
    parser.add_argument("--settings", nargs="+", default=["8x1024@50Hz", "4x256@25Hz"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    unknown = [s for s in args.settings if s not in SETTINGS]
    if unknown:
        parser.error(f"unknown settings {unknown}; known: {list(SETTINGS)}")

    data_dir = prepare_corpus(args.work_dir, args.num_train, args.num_test, args.seed)
    train_reader = AudioReader(data_dir / "train")
    test_reader = AudioReader(data_dir / "test")
    references = read_table(data_dir / "test" / "text")
    judge = PocketsphinxJudge()
    cache = args.work_dir / "wer_original.json"
    if not cache.is_file():
        cache.write_text(json.dumps(judge_wer(judge, test_reader, references)[0]))
    wer_original = json.loads(cache.read_text())

    # CPU seconds beside wall seconds: on a shared machine the wall clock measures the neighbours.
    print(
        "| setting | utts | WER orig % | WER resynth % | ratio | encode+decode RTF (wall / CPU) "
        "| train s (wall / CPU) |\n|---|---|---|---|---|---|---|"
    )
    for name in args.settings:
        start, cpu_start = time.perf_counter(), time.process_time()
        codec = train_codec((w for _, w in train_reader), {**SETTINGS[name], "seed": args.seed})
        train_seconds = time.perf_counter() - start
        train_cpu_seconds = time.process_time() - cpu_start
        if name.startswith("mel only"):
            codec = UnquantisedMel(codec)
        output_dir = args.work_dir / "resynth" / name.replace(" ", "_")
        result = copy_synthesize(test_reader, codec, list(references), output_dir)
        wer = judge_wer(judge, AudioReader(result.wav_scp), references)[0]
        print(
            f"| {name} | {len(references)} | {wer_original:.1f} | {wer:.1f} | "
            f"{wer / wer_original:.2f} | {result.real_time_factor:.3f} / "
            f"{result.codec_cpu_seconds / result.audio_seconds:.3f} | "
            f"{train_seconds:.0f} / {train_cpu_seconds:.0f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
