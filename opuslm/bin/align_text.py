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
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
from tqdm import tqdm

from opuslm.alignment import AlignmentError, ctc_forced_align, uniform_starts
from opuslm.audio import AudioError, AudioReader
from opuslm.data.ark import ScpTable
from opuslm.data.datadir import DataDirError
from opuslm.dump import Dump, DumpError, ShardWriter, fingerprint
from opuslm.fileio import atomic_path, write_text_atomic
from opuslm.tokenizers.phonetic import (
    PhoneticEncoder,
    PhoneticTraining,
    pad,
    spectral_features,
    train_ctc_encoder,
)
from opuslm.tokenizers.semantic import SemanticError, SpectralConfig, SpectralFeatures
from opuslm.vocab import TokenList, VocabError

log = logging.getLogger("opuslm.align_text")

WEIGHTS = "aligner.safetensors"
CONFIG = "aligner.json"


class Aligner:
    """The CTC recogniser and the spectral features it reads (`log_probs` per waveform)."""

    def __init__(self, spectral: SpectralFeatures, encoder: PhoneticEncoder) -> None:
        self.spectral, self.encoder = spectral, encoder.eval()
        self.num_labels = encoder.output.out_features - 1  # the blank is the last class

    def log_probs(self, wavs: list[np.ndarray]) -> list[np.ndarray]:
        """float32 [T_i, labels + 1] per waveform."""
        padded, lengths = pad(self.spectral.extract_batch(wavs))
        with torch.no_grad():
            out = self.encoder(padded, lengths).numpy()
        return [o[:n] for o, n in zip(out, lengths.tolist())]

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / WEIGHTS) as tmp:
            safetensors.torch.save_file(self.encoder.state_dict(), str(tmp))
        config = {
            "spectral": asdict(self.spectral.config),
            "num_labels": self.num_labels,
            "hidden": self.encoder.rnn.hidden_size,
            "layers": self.encoder.rnn.num_layers,
        }
        write_text_atomic(directory / CONFIG, json.dumps(config, indent=1) + "\n")

    @classmethod
    def load(cls, directory: Path) -> Aligner:
        if not (directory / CONFIG).is_file() or not (directory / WEIGHTS).is_file():
            raise SemanticError(
                f"{directory}: no aligner ({CONFIG}, {WEIGHTS}); run align_text with "
                "--train_aligner on the training set first"
            )
        config = json.loads((directory / CONFIG).read_text(encoding="utf-8"))
        spectral = SpectralFeatures(SpectralConfig(**config["spectral"]))
        encoder = PhoneticEncoder(
            spectral.dim, config["num_labels"], config["hidden"], config["layers"]
        )
        encoder.load_state_dict(safetensors.torch.load_file(str(directory / WEIGHTS)))
        return cls(spectral, encoder)


def train_aligner(
    args: argparse.Namespace, reader: AudioReader, texts: ScpTable, uttids: list[str]
) -> Aligner:
    """The recogniser, trained on at most --aligner_utts utterances of `uttids`."""
    hop = args.hop_length
    spectral = SpectralFeatures(
        SpectralConfig(
            kind="mfcc",
            sample_rate=args.sample_rate,
            hop_length=hop,
            win_length=max(400, hop),  # a window shorter than the hop skips samples
            n_fft=max(512, 1 << (max(400, hop) - 1).bit_length()),
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
    return Aligner(spectral, encoder)


def fit_frames(log_probs: np.ndarray, num_frames: int) -> np.ndarray:
    """The recogniser's frames cut or extended (last frame repeated) to the dump's [T, C]: the
    two analyses of one waveform may differ by a frame at the end."""
    if len(log_probs) >= num_frames:
        return log_probs[:num_frames]
    return np.concatenate([log_probs, np.repeat(log_probs[-1:], num_frames - len(log_probs), 0)])


def write_alignments(
    aligner: Aligner,
    reader: AudioReader,
    texts: ScpTable,
    speech: ScpTable,
    uttids: list[str],
    writer: ShardWriter,
) -> dict:
    summary = {"utterances": 0, "tokens": 0, "uniform": 0}
    for start in tqdm(range(0, len(uttids), 32), desc="aligning", unit="batch"):
        batch = uttids[start : start + 32]
        for uttid, log_probs in zip(batch, aligner.log_probs([reader.read(u) for u in batch])):
            ids = np.asarray(texts[uttid])
            if (ids < 0).any() or (ids >= aligner.num_labels).any():
                raise SemanticError(
                    f"utterance {uttid!r}: text ids outside the aligner's {aligner.num_labels} "
                    "labels; it was trained with another text tokenizer"
                )
            num_frames = len(speech[uttid])
            try:
                starts = ctc_forced_align(
                    fit_frames(log_probs, num_frames), ids, aligner.num_labels
                )
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
        if args.train_aligner and not (args.aligner_dir / WEIGHTS).is_file():
            train_aligner(args, reader, texts, uttids).save(args.aligner_dir)
        aligner = Aligner.load(args.aligner_dir)
        dump = Dump(
            output_dir=Path(args.output_dir),
            name="align",
            lengths_name="utt2num_tokens",
            module="opuslm.bin.align_text",
            nj=1,
            signature={
                "text": fingerprint(token_dir / "text.scp"),
                "speech": fingerprint(token_dir / "speech.scp"),
                "aligner": fingerprint(args.aligner_dir / WEIGHTS),
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
    sys.exit(main())
