"""Phonetic features for the semantic tokenizer: a small CTC recogniser's hidden states.

Without a pretrained SSL model (the mini recipe has none: nothing can be downloaded), the
semantic units were k-means of MFCCs, which carry little of what is said: a character probe reads
57% CER from them (EXPERIMENTS.md, "Stronger semantic units?"), and the TTS learnt to predict them
from the speech before them while ignoring its transcript ("Does the TTS use its text?"). This
module gives the k-means supervised features instead, as CosyVoice's S3 tokenizer does: a
bidirectional GRU trained with CTC on the corpus's own transcripts (lower-cased characters), whose
top hidden states [T, 2 * hidden] are clustered. The units then follow what is said, and a unit
sequence is close to a function of the transcript.

The encoder reads the spectral features of `SpectralFeatures` at the same frame rate, so a
frame is still a unit; its weights are saved beside the centroids (`ENCODER_NAME`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
from torch import nn
from tqdm import tqdm

from opuslm.fileio import atomic_path
from opuslm.tokenizers.semantic import SemanticError, SpectralConfig, SpectralFeatures

logger = logging.getLogger(__name__)

ENCODER_NAME = "phonetic_encoder.safetensors"


@dataclass(frozen=True)
class PhoneticTraining:
    """How the CTC recogniser is trained (train_phonetic_features)."""

    hidden: int = 128  # GRU width per direction: the features have 2 * hidden dims
    layers: int = 2
    steps: int = 600  # updates of `batch` utterances
    batch: int = 32
    lr: float = 2e-3
    seed: int = 0


class PhoneticEncoder(nn.Module):
    """Spectral features [B, T, D] -> hidden states [B, T, 2H] and CTC log-probs [B, T, C + 1]
    (the blank is the last class)."""

    def __init__(self, input_dim: int, num_labels: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.input = nn.Linear(input_dim, hidden)
        self.rnn = nn.GRU(hidden, hidden, num_layers=layers, batch_first=True, bidirectional=True)
        self.output = nn.Linear(2 * hidden, num_labels + 1)

    def hidden_states(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # Packed, so that the backward direction of a short utterance starts at its own last
        # frame, not in the padding: features do not depend on the batch.
        packed = nn.utils.rnn.pack_padded_sequence(
            self.input(feats), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        out, _ = self.rnn(packed)
        unpacked = nn.utils.rnn.pad_packed_sequence(
            out, batch_first=True, total_length=feats.shape[1]
        )
        return unpacked[0]

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.output(self.hidden_states(feats, lengths)).log_softmax(-1)


def pad(arrays: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 [T_i, D] arrays -> ([B, max T, D], lengths [B])."""
    lengths = torch.tensor([len(a) for a in arrays])
    return nn.utils.rnn.pad_sequence([torch.from_numpy(a) for a in arrays], True), lengths


class PhoneticFeatures:
    """Waveform -> the recogniser's hidden states float32 [ceil(N / hop_length), 2 * hidden]."""

    def __init__(
        self, spectral: SpectralFeatures, encoder: PhoneticEncoder, labels: Sequence[str]
    ) -> None:
        self.spectral = spectral
        self.encoder = encoder.eval()
        self.labels = list(labels)
        self.sample_rate = spectral.sample_rate
        self.hop_length = spectral.hop_length
        self.dim = 2 * encoder.rnn.hidden_size

    def extract_batch(self, wavs: list[np.ndarray]) -> list[np.ndarray]:
        feats = self.spectral.extract_batch(wavs)
        padded, lengths = pad(feats)
        with torch.no_grad():
            hidden = self.encoder.hidden_states(padded, lengths).numpy()
        return [np.ascontiguousarray(h[:n]) for h, n in zip(hidden, lengths.tolist())]

    def save(self, directory: Path) -> dict:
        with atomic_path(Path(directory) / ENCODER_NAME) as tmp:
            safetensors.torch.save_file(self.encoder.state_dict(), str(tmp))
        return {
            "type": "phonetic",
            "spectral": asdict(self.spectral.config),
            "hidden": self.encoder.rnn.hidden_size,
            "layers": self.encoder.rnn.num_layers,
            "labels": self.labels,
            "weights": ENCODER_NAME,
        }

    @classmethod
    def load(cls, config: dict, directory: Path | None) -> PhoneticFeatures:
        spectral = SpectralFeatures(SpectralConfig(**config["spectral"]))
        labels = list(config["labels"])
        encoder = PhoneticEncoder(spectral.dim, len(labels), config["hidden"], config["layers"])
        weights = Path(config["weights"])
        if directory is not None and not weights.is_absolute():
            weights = directory / weights
        if not weights.is_file():
            raise SemanticError(f"{weights}: the phonetic encoder's weights are missing")
        encoder.load_state_dict(safetensors.torch.load_file(str(weights)))
        return cls(spectral, encoder, labels)


def train_ctc_encoder(
    feats: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    num_labels: int,
    training: PhoneticTraining = PhoneticTraining(),
) -> tuple[PhoneticEncoder, list[float]]:
    """Train a PhoneticEncoder with CTC on feature matrices float32 [T_i, D] and their label ids
    [L_i] (in [0, num_labels); the blank is num_labels) -> (the encoder, the loss of each
    update). Shared by the phonetic features and the TTS aligner (`opuslm.bin.align_text`)."""
    if len(feats) != len(targets) or not feats:
        raise SemanticError(
            f"need as many label sequences as utterances (and some): {len(targets)} and "
            f"{len(feats)}"
        )
    labels = [torch.as_tensor(np.asarray(t), dtype=torch.long) for t in targets]
    torch.manual_seed(training.seed)
    encoder = PhoneticEncoder(feats[0].shape[1], num_labels, training.hidden, training.layers)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=training.lr)
    ctc = nn.CTCLoss(blank=num_labels, zero_infinity=True)
    rng = np.random.default_rng(training.seed)
    batch = min(training.batch, len(feats))
    losses: list[float] = []
    progress = tqdm(range(training.steps), desc="CTC recogniser", unit="step")
    for _ in progress:
        chosen = rng.choice(len(feats), batch, replace=False)
        padded, lengths = pad([feats[i] for i in chosen])
        log_probs = encoder(padded, lengths).transpose(0, 1)  # [T, B, C + 1]
        loss = ctc(
            log_probs,
            torch.cat([labels[i] for i in chosen]),
            lengths,
            torch.tensor([len(labels[i]) for i in chosen]),
        )
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(encoder.parameters(), 5.0)
        optimizer.step()
        losses.append(loss.item())
        progress.set_postfix(ctc=f"{losses[-1]:.3f}", refresh=False)
    if not math.isfinite(losses[-1]):
        raise SemanticError(f"the CTC recogniser diverged (loss {losses[-1]})")
    logger.info(
        "CTC recogniser: %d labels, %d utterances, %d steps, loss %.3f -> %.3f",
        num_labels,
        len(feats),
        training.steps,
        losses[0],
        float(np.mean(losses[-20:])),
    )
    return encoder.eval(), losses


def spectral_features(spectral: SpectralFeatures, wavs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Waveforms -> float32 [T_i, D] spectral features, 64 at a time, with a progress bar."""
    return [
        f
        for start in tqdm(range(0, len(wavs), 64), desc="spectral features", unit="batch")
        for f in spectral.extract_batch(list(wavs[start : start + 64]))
    ]


def train_phonetic_features(
    wavs: Sequence[np.ndarray],
    transcripts: Sequence[str],
    spectral: SpectralFeatures,
    training: PhoneticTraining = PhoneticTraining(),
) -> tuple[PhoneticFeatures, list[float]]:
    """Train the CTC recogniser on (waveform, transcript) pairs -> (its features, the loss of
    each update). Transcripts are lower-cased; their characters are the CTC labels."""
    if len(wavs) != len(transcripts) or not wavs:
        raise SemanticError(
            f"need as many transcripts as utterances (and some): {len(transcripts)} and {len(wavs)}"
        )
    texts = [t.lower() for t in transcripts]
    labels = sorted({c for t in texts for c in t})
    index = {c: i for i, c in enumerate(labels)}
    targets = [np.array([index[c] for c in t]) for t in texts]
    encoder, losses = train_ctc_encoder(
        spectral_features(spectral, wavs), targets, len(labels), training
    )
    return PhoneticFeatures(spectral, encoder, labels), losses


def recogniser_log_probs(features: PhoneticFeatures, wavs: list[np.ndarray]) -> list[np.ndarray]:
    """The recogniser's CTC log-probs float32 [T_i, labels + 1] per waveform (blank last)."""
    padded, lengths = pad(features.spectral.extract_batch(wavs))
    with torch.no_grad():
        out = features.encoder(padded, lengths).numpy()
    return [o[:n] for o, n in zip(out, lengths.tolist())]


def greedy_transcripts(features: PhoneticFeatures, wavs: list[np.ndarray]) -> list[str]:
    """The recogniser's own greedy CTC transcripts (a check of what the features carry)."""
    blank = len(features.labels)
    out = []
    for log_probs in recogniser_log_probs(features, wavs):
        chars, last = [], None
        for k in log_probs.argmax(-1).tolist():
            if k != last and k != blank:
                chars.append(features.labels[k])
            last = k
        out.append("".join(chars))
    return out
