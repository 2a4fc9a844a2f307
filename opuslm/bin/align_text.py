"""Align each transcript token to the speech frame where it starts (align.scp, for aligned TTS).

A small CTC recogniser (`opuslm.tokenizers.phonetic.train_ctc_encoder`: a BiGRU over MFCCs at the
speech dump's frame rate) learns to read the text dump's own token ids from the audio of the
training set; its forced alignment (`opuslm.alignment.ctc_forced_align`) then gives, per
utterance, the start frame of every token. An utterance without a CTC path (more tokens than its
frames can hold) gets its tokens spread evenly instead, logged and counted. A TTS manifest made
with `make_manifest --align` interleaves each transcript with its target speech, and a model
trained on it is decoded with `interleave_text: true` (`opuslm.model.generate`).

    # the training set first: trains the recogniser into exp/aligner, then aligns
    python -m opuslm.bin.align_text --train_aligner --token_list data/token_list.json \\
        --aligner_dir exp/aligner \\
        --data_dir data/train --token_dir dump/tokens/train --output_dir dump/align/train
    python -m opuslm.bin.align_text --aligner_dir exp/aligner \\
        --data_dir data/test --token_dir dump/tokens/test --output_dir dump/align/test
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from opuslm.alignment import AlignmentError, ctc_forced_align, uniform_starts
from opuslm.audio import AudioError, AudioReader
from opuslm.bin import run
from opuslm.data.ark import ScpTable
from opuslm.data.datadir import DataDirError
from opuslm.dump import Dump, DumpError, ShardWriter, fingerprint
from opuslm.fileio import write_text_atomic
from opuslm.tokenizers.phonetic import (
    ENCODER_NAME,
    PhoneticFeatures,
    PhoneticTraining,
    recogniser_log_probs,
    spectral_features,
    train_ctc_encoder,
)
from opuslm.tokenizers.semantic import SemanticError, SpectralConfig, SpectralFeatures, fft_size
from opuslm.vocab import TokenList, VocabError

log = logging.getLogger("opuslm.align_text")

CONFIG = "aligner.json"  # PhoneticFeatures' config; its weights are ENCODER_NAME beside it


def save_aligner(features: PhoneticFeatures, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    config = features.save(directory)
    write_text_atomic(directory / CONFIG, json.dumps(config, indent=1) + "\n")


def load_aligner(directory: Path) -> PhoneticFeatures:
    if not (directory / CONFIG).is_file():
        raise SemanticError(
            f"{directory}: no aligner ({CONFIG}, {ENCODER_NAME}); run align_text with "
            "--train_aligner on the training set first"
        )
    return PhoneticFeatures.load(json.loads((directory / CONFIG).read_text("utf-8")), directory)


def train_aligner(
    args: argparse.Namespace, reader: AudioReader, texts: ScpTable, uttids: list[str]
) -> PhoneticFeatures:
    """The recogniser, trained on at most --aligner_utts utterances of `uttids`; its labels are
    the token list's text ids (named by their index)."""
    hop = args.hop_length
    spectral = SpectralFeatures(
        SpectralConfig(
            kind="mfcc",
            sample_rate=args.sample_rate,
            hop_length=hop,
            win_length=max(400, hop),  # a window shorter than the hop skips samples
            n_fft=fft_size(max(400, hop)),
        )
    )
    order = np.random.default_rng(args.seed).permutation(len(uttids))[: args.aligner_utts]
    chosen = [uttids[i] for i in sorted(order)]
    wavs = [reader.read(u) for u in tqdm(chosen, desc="audio", unit="utt")]
    targets = [np.asarray(texts[u]) for u in chosen]
    training = PhoneticTraining(
        hidden=args.aligner_hidden, steps=args.aligner_steps, seed=args.seed
    )
    log.info("aligner: CTC recogniser on %d utterances, %d steps", len(chosen), training.steps)
    num_labels = TokenList.load(args.token_list).size("text")
    encoder, _ = train_ctc_encoder(spectral_features(spectral, wavs), targets, num_labels, training)
    return PhoneticFeatures(spectral, encoder, [str(i) for i in range(num_labels)])


def fit_frames(log_probs: np.ndarray, num_frames: int) -> np.ndarray:
    """The recogniser's frames cut or extended (last frame repeated) to the dump's [T, C]: the
    two analyses of one waveform may differ by a frame at the end."""
    if len(log_probs) >= num_frames:
        return log_probs[:num_frames]
    return np.concatenate([log_probs, np.repeat(log_probs[-1:], num_frames - len(log_probs), 0)])


def write_alignments(
    aligner: PhoneticFeatures,
    reader: AudioReader,
    texts: ScpTable,
    speech: ScpTable,
    uttids: list[str],
    writer: ShardWriter,
) -> dict:
    summary = {"utterances": 0, "tokens": 0, "uniform": 0}
    blank = len(aligner.labels)  # the text ids are the labels; the blank is last
    for start in tqdm(range(0, len(uttids), 32), desc="aligning", unit="batch"):
        batch = uttids[start : start + 32]
        wavs = [reader.read(u) for u in batch]
        for uttid, log_probs in zip(batch, recogniser_log_probs(aligner, wavs)):
            ids = np.asarray(texts[uttid])
            if (ids < 0).any() or (ids >= blank).any():
                raise SemanticError(
                    f"utterance {uttid!r}: text ids outside the aligner's {blank} "
                    "labels; it was trained with another text tokenizer"
                )
            num_frames = len(speech[uttid])
            try:
                starts = ctc_forced_align(fit_frames(log_probs, num_frames), ids, blank)
            except AlignmentError as e:
                log.warning("utterance %s: %s; tokens spread evenly instead", uttid, e)
                starts = uniform_starts(len(ids), num_frames)
                summary["uniform"] += 1
            writer.add(uttid, starts)
            summary["utterances"] += 1
            summary["tokens"] += len(ids)
    return summary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data_dir", required=True, help="data directory with wav.scp")
    parser.add_argument(
        "--token_dir", required=True, help="its token dumps: text.scp and speech.scp"
    )
    parser.add_argument("--output_dir", required=True, help="where align.scp is written")
    parser.add_argument("--aligner_dir", required=True, type=Path, help="the recogniser")
    parser.add_argument(
        "--train_aligner",
        action="store_true",
        help="train the recogniser on this set first (the training set); kept if it exists",
    )
    parser.add_argument(
        "--token_list",
        type=Path,
        help="token_list.json: its text ids are the recogniser's labels (--train_aligner)",
    )
    parser.add_argument("--sample_rate", type=int, default=16000)
    parser.add_argument("--hop_length", type=int, default=640, help="the speech dump's hop")
    parser.add_argument("--aligner_steps", type=int, default=600, help="recogniser updates")
    parser.add_argument("--aligner_hidden", type=int, default=128, help="GRU width per direction")
    parser.add_argument("--aligner_utts", type=int, default=4000, help="utterances it trains on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--allow_pipes", action="store_true", help="run `cmd |` wav.scp entries")
    args = parser.parse_args(argv)
    if args.train_aligner and args.token_list is None:
        parser.error("--train_aligner needs --token_list (its text ids are the labels)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    token_dir = Path(args.token_dir)
    try:
        texts, speech = ScpTable(token_dir / "text.scp"), ScpTable(token_dir / "speech.scp")
        reader = AudioReader(
            args.data_dir, sample_rate=args.sample_rate, allow_pipes=args.allow_pipes
        )
        audio = set(reader.uttids())
        uttids = [u for u in texts if u in speech and u in audio]
        if not uttids:
            raise SemanticError(f"{token_dir}: no utterance has text, speech and audio")
        if len(uttids) < len(texts):
            log.warning(
                "%d of %d transcripts have no speech dump or audio",
                len(texts) - len(uttids),
                len(texts),
            )
        if args.train_aligner and not (args.aligner_dir / ENCODER_NAME).is_file():
            save_aligner(train_aligner(args, reader, texts, uttids), args.aligner_dir)
        aligner = load_aligner(args.aligner_dir)
        dump = Dump(
            output_dir=Path(args.output_dir),
            name="align",
            lengths_name="utt2num_tokens",
            module="opuslm.bin.align_text",
            nj=1,
            signature={
                "text": fingerprint(token_dir / "text.scp"),
                "speech": fingerprint(token_dir / "speech.scp"),
                "aligner": fingerprint(args.aligner_dir / ENCODER_NAME),
            },
        )
        summary = dump.run(
            [],
            None,
            lambda writer, job: write_alignments(aligner, reader, texts, speech, uttids, writer),
        )
    except (AudioError, DataDirError, DumpError, SemanticError, VocabError, OSError) as e:
        log.error("%s", e)
        return 1
    if summary is not None:
        log.info(
            "%s: %d utterances aligned, %d spread evenly (no CTC path)",
            args.output_dir,
            summary["utterances"],
            summary["uniform"],
        )
    return 0


if __name__ == "__main__":
    run(main)
