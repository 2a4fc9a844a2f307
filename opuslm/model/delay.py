"""Delay interleaving of the streams of a frame sequence (MusicGen-style).

Stream s is shifted right by s rows, so one forward step per row predicts every stream while each
frame's streams are still produced in order (stream s of a frame is seen after streams < s).
Both functions are pure index arithmetic: one gather, no loop over time.
"""

from __future__ import annotations

import torch


def _check_frames(tensor: torch.Tensor, name: str) -> None:
    if tensor.dim() != 3:
        raise ValueError(f"{name} must be [B, T, S], got shape {tuple(tensor.shape)}")


def delay(frames: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Shift stream s right by s rows.

    frames: LongTensor [B, T, S]  ->  LongTensor [B, T + S - 1, S] with
    out[b, t, s] = frames[b, t - s, s] if 0 <= t - s < T else pad_id.
    """
    _check_frames(frames, "frames")
    batch, num_frames, num_streams = frames.shape
    rows = torch.arange(num_frames + num_streams - 1, device=frames.device)[:, None]
    source = rows - torch.arange(num_streams, device=frames.device)[None, :]  # [T+S-1, S]
    valid = (source >= 0) & (source < num_frames)
    if num_frames == 0:
        return frames.new_full((batch, num_streams - 1, num_streams), pad_id)
    gathered = frames.gather(1, source.clamp(0, num_frames - 1).expand(batch, -1, -1))
    return gathered.masked_fill(~valid, pad_id)


def undelay(delayed: torch.Tensor) -> torch.Tensor:
    """Invert `delay`: LongTensor [B, T + S - 1, S] -> LongTensor [B, T, S].

    out[b, t, s] = delayed[b, t + s, s]; undelay(delay(x, p)) == x exactly.
    """
    _check_frames(delayed, "delayed")
    batch, num_rows, num_streams = delayed.shape
    num_frames = num_rows - (num_streams - 1)
    if num_frames < 0:
        raise ValueError(
            f"a delayed sequence of {num_streams} streams needs at least {num_streams - 1} rows, "
            f"got {num_rows}"
        )
    source = (
        torch.arange(num_frames, device=delayed.device)[:, None]
        + torch.arange(num_streams, device=delayed.device)[None, :]
    )  # [T, S]
    return delayed.gather(1, source.expand(batch, -1, -1))
