"""Audio -> raw token rows `[T, S]` (semantic unit, then codec codes), one definition for all.

The token dumper (`opuslm.bin.tokenize_audio`) and the packed model's API both turn waveforms
into rows through `tokenize_waveforms`, so prompts at inference match the training dumps exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from opuslm.tokenizers.acoustic import Codec
from opuslm.tokenizers.semantic import SemanticTokenizer


class FrameAlignmentError(ValueError):
    """Semantic and acoustic tokens that do not describe the same frames."""


def check_compatible(semantic: SemanticTokenizer, codec: Codec) -> None:
    """Both tokenizers must read the same audio on the same frame grid."""
    if (semantic.sample_rate, semantic.hop_length) != (codec.sample_rate, codec.hop_length):
        raise FrameAlignmentError(
            f"the semantic tokenizer ({semantic.sample_rate} Hz, hop {semantic.hop_length}) and "
            f"the codec ({codec.sample_rate} Hz, hop {codec.hop_length}) are on different frame "
            f"grids; train them with the same sample rate and hop"
        )


def align_streams(uttid: str, units: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """units [T1] + codes [T2, n_q] -> int32 [min(T1, T2), 1 + n_q]; |T1 - T2| <= 1 allowed.

    The tokenizers agree on T = ceil(N / hop) but a backend may round the last frame the other
    way; more than one frame apart means they are not describing the same frames.
    """
    if abs(len(units) - len(codes)) > 1:
        raise FrameAlignmentError(
            f"utterance {uttid}: the semantic tokenizer gave {len(units)} frames but the codec "
            f"gave {len(codes)}; they must agree within one frame"
        )
    length = min(len(units), len(codes))
    return np.concatenate([units[:length, None], codes[:length]], axis=1).astype(np.int32)


def encode_codes(codec: Codec, wavs: list[np.ndarray]) -> list[np.ndarray]:
    """Codes [T_i, n_q] of each waveform, batched when the backend can."""
    encode_batch = getattr(codec, "encode_batch", None)
    return encode_batch(wavs) if encode_batch else [codec.encode(w) for w in wavs]


def tokenize_waveforms(
    semantic: SemanticTokenizer,
    codec: Codec,
    wavs: Sequence[np.ndarray],
    names: Sequence[str] | None = None,
) -> list[np.ndarray]:
    """Waveforms float32 [N_i] at the tokenizers' rate -> raw token rows int32 [T_i, S].

    All waveforms are analysed in one batch. names: the utterances, for error messages
    (default "audio <i>").
    """
    names = names or [f"audio {i}" for i in range(len(wavs))]
    units = semantic.encode_batch(list(wavs))
    codes = encode_codes(codec, list(wavs))
    return [align_streams(n, u, c) for n, u, c in zip(names, units, codes)]
