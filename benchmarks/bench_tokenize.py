"""Tokenisation speed: semantic units + codec codes of flite speech, as a real-time factor.

Ours: `python -m opuslm.bin.tokenize_audio` (in-process, one job) on a data directory, reading,
batched MFCC (one torch.stft per batch) + k-means assignment, batched codec encoding, ark/scp
writing. Baseline: the same tokenizers one utterance at a time with librosa's own
`feature.mfcc` / `feature.delta` and sklearn's `pairwise_distances_argmin`, no file writing.
Both runs use the same threads (default 2, the development machines' core count).
RTF = processing seconds / audio seconds (target <= 0.02: one hour of audio in 72 s), shown
for wall-clock time and for process CPU time (all threads; robust to other load on the machine).

    python benchmarks/bench_tokenize.py [--minutes 3] [--num_clusters 500] [--repeats 2]
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import tempfile
import time
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
import torch
from sklearn.metrics import pairwise_distances_argmin
from threadpoolctl import threadpool_limits

from opuslm.audio import AudioReader
from opuslm.bin import tokenize_audio
from opuslm.tokenizers.acoustic import train_codec
from opuslm.tokenizers.semantic import SpectralFeatures, train_semantic_tokenizer

VOICES = ("slt", "rms", "awb", "kal16")
FORTUNES = Path("/usr/share/games/fortunes/fortunes")
FALLBACK_SENTENCES = (
    "the quick brown fox jumps over the lazy dog near the river bank",
    "a journey of a thousand miles begins with a single step",
    "all that glitters is not gold and all who wander are not lost",
    "speech language models predict semantic and acoustic tokens together",
)


def sentences() -> list[str]:
    """Lines of 6-20 words from Debian's fortunes (or a fixed list when it is missing)."""
    if not FORTUNES.is_file():
        return list(FALLBACK_SENTENCES)
    lines = FORTUNES.read_text(encoding="utf-8", errors="replace").splitlines()
    return [line.strip() for line in lines if 6 <= len(line.split()) <= 20 and "%" not in line]


def make_data_dir(root: Path, minutes: float) -> float:
    """flite utterances, voices in turn, until `minutes` of audio; returns the seconds made."""
    data = root / "data"
    data.mkdir(parents=True)
    wav_scp, total = [], 0.0
    for i, sentence in enumerate(sentences()):
        if total >= 60 * minutes:
            break
        wav = root / "wav" / f"utt{i:04d}.wav"
        wav.parent.mkdir(exist_ok=True)
        voice = VOICES[i % len(VOICES)]
        subprocess.run(["flite", "-voice", voice, "-t", sentence, "-o", str(wav)], check=True)
        wav_scp.append(f"utt{i:04d} {wav}\n")
        total += sf.info(wav).duration
    (data / "wav.scp").write_text("".join(sorted(wav_scp)))
    return total


def librosa_units(wav: np.ndarray, features: SpectralFeatures, centroids: np.ndarray) -> np.ndarray:
    """The baseline semantic units: librosa defaults pipeline, one utterance."""
    c = features.config
    mel = librosa.feature.melspectrogram(
        y=wav,
        sr=c.sample_rate,
        n_fft=c.n_fft,
        hop_length=c.hop_length,
        win_length=c.win_length,
        n_mels=c.n_mels,
        pad_mode="constant",
    )
    mfcc = librosa.feature.mfcc(S=librosa.power_to_db(mel, top_db=None), n_mfcc=c.n_mfcc)
    feats = np.concatenate(
        [mfcc] + [librosa.feature.delta(mfcc, order=k, mode="nearest") for k in (1, 2)]
    ).T
    feats = (feats - feats.mean(axis=0)) / (feats.std(axis=0) + 1e-5)
    return pairwise_distances_argmin(feats.astype(np.float32), centroids)


class Timing:
    """Best wall-clock and process CPU seconds over repeats (CPU counts every thread)."""

    def __init__(self) -> None:
        self.wall = self.cpu = float("inf")

    def measure(self, fn, *args) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        fn(*args)
        self.wall = min(self.wall, time.perf_counter() - wall)
        self.cpu = min(self.cpu, time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--num_clusters", type=int, default=500)
    parser.add_argument("--num_codebooks", type=int, default=8)
    parser.add_argument("--codebook_size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(args.threads):
        root = Path(tmp)
        seconds = make_data_dir(root, args.minutes)
        wavs = [wav for _, wav in AudioReader(root / "data")]
        features = SpectralFeatures()
        # Speed does not depend on how well k-means converged: train on little, briefly.
        semantic = train_semantic_tokenizer(wavs, features, args.num_clusters, max_frames=5_000)
        semantic.save(root / "semantic")
        codec_config = {
            "num_codebooks": args.num_codebooks,
            "codebook_size": args.codebook_size,
            "max_frames": 5_000,
            "kmeans_max_iter": 5,
        }
        codec = train_codec(wavs, codec_config)
        codec.save(root / "codec")

        data = ["--data_dir", str(root / "data")]
        data += ["--semantic_dir", str(root / "semantic"), "--codec_dir", str(root / "codec")]

        def run_ours(repeat: int) -> None:
            if tokenize_audio.main([*data, "--output_dir", str(root / f"dump{repeat}")]) != 0:
                raise SystemExit("tokenize_audio failed")

        def run_baseline(repeat: int) -> None:
            for wav in wavs:
                librosa_units(wav, features, semantic.centroids)
                codec.encode(wav)

        # Alternate the two so that load from other processes hits both alike; keep the best.
        ours, baseline = Timing(), Timing()
        for repeat in range(args.repeats):
            ours.measure(run_ours, repeat)
            baseline.measure(run_baseline, repeat)

    setting = (
        f"{seconds / 60:.1f} min flite, MFCC+deltas k-means {args.num_clusters} + melrvq "
        f"{args.num_codebooks}x{args.codebook_size} @ 50 Hz, {args.threads} threads"
    )
    print("| benchmark | setting | ours RTF wall / CPU | baseline RTF wall / CPU | speed-up |")
    print("|---|---|---|---|---|")
    print(
        f"| tokenize_audio (semantic + acoustic) | {setting} | "
        f"{ours.wall / seconds:.4f} / {ours.cpu / seconds:.4f} (dump, batched) | "
        f"{baseline.wall / seconds:.4f} / {baseline.cpu / seconds:.4f} "
        f"(librosa + per-utterance encode) | {baseline.wall / ours.wall:.2f}x |"
    )


if __name__ == "__main__":
    main()
