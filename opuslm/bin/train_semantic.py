"""Train the semantic tokenizer: speech features of a data directory + k-means (semantic.yaml).

With `--feature phonetic` the features are the hidden states of a small CTC recogniser trained
first on the data directory's `text` (opuslm/tokenizers/phonetic.py): supervised units for
corpora without a pretrained SSL model."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator

import numpy as np
from tqdm import tqdm

from opuslm.audio import AudioError, AudioReader
from opuslm.bin import run
from opuslm.data.datadir import DataDirError, read_table
from opuslm.tokenizers.semantic import (
    ESPnetSSLFeatures,
    FeatureExtractor,
    HFSSLFeatures,
    SemanticError,
    SpectralConfig,
    SpectralFeatures,
    fft_size,
    train_semantic_tokenizer,
)

log = logging.getLogger("opuslm.train_semantic")


def build_extractor(args: argparse.Namespace) -> FeatureExtractor:
    if args.feature in ("mfcc", "logmel", "phonetic"):
        config = SpectralConfig(
            kind="mfcc" if args.feature == "phonetic" else args.feature,
            sample_rate=args.sample_rate,
            hop_length=args.hop_length,
            # A window shorter than the hop would leave samples between frames unanalysed.
            win_length=args.win_length,
            n_fft=fft_size(args.win_length),
            deltas=args.deltas,
            cmvn=args.cmvn == "true",
            context=args.context,
        )
        return SpectralFeatures(config)
    if args.layer is None:
        raise SemanticError(f"--feature {args.feature} needs --layer")
    if args.feature == "hf":
        if not args.hf_dir:
            raise SemanticError("--feature hf needs --hf_dir (a local Hugging Face model)")
        return HFSSLFeatures(args.hf_dir, args.layer)
    if not (args.espnet_config and args.espnet_model):
        raise SemanticError("--feature espnet needs --espnet_config and --espnet_model")
    return ESPnetSSLFeatures(args.espnet_config, args.espnet_model, args.layer)


def train_phonetic(
    args: argparse.Namespace, spectral: SpectralFeatures, reader: AudioReader
) -> FeatureExtractor:
    """The CTC recogniser of `--feature phonetic`, trained on (at most --phonetic_utts)
    utterances of the data directory with their `text`."""
    from opuslm.tokenizers.phonetic import (
        PhoneticTraining,
        greedy_transcripts,
        train_phonetic_features,
    )

    text_path = f"{args.data_dir}/text"
    try:
        texts = read_table(text_path)
    except OSError as e:
        raise SemanticError(f"--feature phonetic needs transcripts: {e}") from None
    uttids = [u for u in reader.uttids() if u in texts]
    if not uttids:
        raise SemanticError(f"{text_path}: no transcript of any utterance of wav.scp")
    order = np.random.default_rng(args.seed).permutation(len(uttids))[: args.phonetic_utts]
    chosen = [uttids[i] for i in sorted(order)]
    held_out = [uttids[i] for i in np.setdiff1d(np.arange(len(uttids)), order)[:50]]
    training = PhoneticTraining(
        hidden=args.phonetic_hidden, steps=args.phonetic_steps, seed=args.seed
    )
    log.info("phonetic CTC recogniser: %d utterances, %d steps", len(chosen), training.steps)
    features, _ = train_phonetic_features(
        [reader.read(u) for u in tqdm(chosen, desc="audio", unit="utt")],
        [texts[u] for u in chosen],
        spectral,
        training,
    )
    if held_out:  # what the units can carry: the recogniser's own error on unseen utterances
        import jiwer

        hyps = greedy_transcripts(features, [reader.read(u) for u in held_out])
        refs = [texts[u].lower() for u in held_out]
        log.info(
            "phonetic CTC recogniser, %d utterances not trained on: greedy CER %.1f%%",
            len(held_out),
            100 * jiwer.cer(refs, hyps),
        )
    return features


def shuffled_audio(reader: AudioReader, seed: int) -> Iterator[np.ndarray]:
    """Utterances in a seeded random order, so a frame budget samples all speakers."""
    uttids = reader.uttids()
    order = np.random.default_rng(seed).permutation(len(uttids))
    for index in tqdm(order, unit="utt", desc="features"):
        yield reader.read(uttids[index])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data_dir", required=True, help="data directory with wav.scp")
    parser.add_argument("--output_dir", required=True, help="where semantic.yaml etc. go")
    parser.add_argument("--num_clusters", type=int, required=True, help="K, the number of units")
    parser.add_argument(
        "--feature", choices=["mfcc", "logmel", "phonetic", "hf", "espnet"], default="mfcc"
    )
    parser.add_argument("--hf_dir", help="local HuBERT / WavLM / wav2vec2 model (--feature hf)")
    parser.add_argument("--espnet_config", help="ESPnet SSL config.yaml (--feature espnet)")
    parser.add_argument("--espnet_model", help="ESPnet SSL checkpoint (--feature espnet)")
    parser.add_argument("--layer", type=int, help="SSL hidden layer (hf / espnet)")
    parser.add_argument("--max_frames", type=int, default=200_000, help="k-means frame budget")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample_rate", type=int, default=16000, help="mfcc / logmel")
    parser.add_argument("--hop_length", type=int, default=320, help="mfcc / logmel")
    parser.add_argument(
        "--win_length", type=int, default=400, help="mfcc / logmel analysis window (samples)"
    )
    parser.add_argument("--deltas", type=int, default=2, help="mfcc / logmel delta order")
    parser.add_argument("--context", type=int, default=0, help="mfcc / logmel frames stacked")
    parser.add_argument("--cmvn", choices=["true", "false"], default="true")
    parser.add_argument(
        "--phonetic_steps", type=int, default=600, help="CTC recogniser updates (phonetic)"
    )
    parser.add_argument(
        "--phonetic_hidden", type=int, default=128, help="GRU width per direction (phonetic)"
    )
    parser.add_argument(
        "--phonetic_utts", type=int, default=4000, help="utterances it trains on (phonetic)"
    )
    parser.add_argument("--allow_pipes", action="store_true", help="run `cmd |` wav.scp entries")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        features = build_extractor(args)
        reader = AudioReader(
            args.data_dir, sample_rate=features.sample_rate, allow_pipes=args.allow_pipes
        )
        if args.feature == "phonetic":
            features = train_phonetic(args, features, reader)
        tokenizer = train_semantic_tokenizer(
            shuffled_audio(reader, args.seed),
            features,
            num_clusters=args.num_clusters,
            max_frames=args.max_frames,
            seed=args.seed,
        )
        tokenizer.save(args.output_dir)
    except (AudioError, DataDirError, SemanticError, OSError) as e:
        log.error("%s", e)
        return 1
    log.info(
        "wrote %s: %d units at %.1f Hz, feature dim %d",
        args.output_dir,
        tokenizer.num_clusters,
        tokenizer.frame_rate,
        features.dim,
    )
    return 0


if __name__ == "__main__":
    run(main)
