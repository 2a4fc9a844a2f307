"""Selected positions of a right-padded batch, left-aligned: the gather indices that CTC (the
speech frames and the transcript of an ASR example) and guided attention (its query and key
rows) read from per-example masks."""

from __future__ import annotations

import torch


def compact_positions(selected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """selected [B, T] bool -> the selected positions of each row, in order, left-aligned
    [B, N] (N = the most per row; entries past a row's count are other positions) and their
    number per row [B]. A stable sort of "not selected" moves the selected ones to the front."""
    counts = selected.sum(1)
    order = torch.argsort((~selected).to(torch.int8), dim=1, stable=True)
    return order[:, : int(counts.max())], counts
