"""Windows into model inputs: padded batches for training and evaluation, packed rows for serving.

Packing lays several short windows end to end in one row (each with its own position ids
and a block-diagonal attention mask), so a batch of short requests wastes no compute on padding.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ner_lit.alignment.windows import IGNORE, Window


def pad_windows(windows: Sequence[Window], pad_id: int) -> dict[str, torch.Tensor]:
    """One padded batch (dynamic padding: as wide as its longest window); labels padded with -100
    (``[windows, width]``, or ``[windows, width, slots]`` under ``char`` tagging)."""
    width = max(len(w.input_ids) for w in windows)
    ids = torch.full((len(windows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(windows), width), dtype=torch.long)
    first = next((w.labels for w in windows if w.labels is not None), None)
    slots = tuple(np.shape(first)[1:]) if first is not None else ()  # (slots,) under char tagging
    labels = torch.full((len(windows), width, *slots), IGNORE, dtype=torch.long)
    for r, w in enumerate(windows):
        n = len(w.input_ids)
        ids[r, :n] = torch.tensor(w.input_ids)
        mask[r, :n] = 1
        if w.labels is not None:
            labels[r, :n] = torch.as_tensor(np.asarray(w.labels, dtype=np.int64))
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@dataclass
class PackedBatch:
    """Several windows per row, for inference: no row is padded to a longer window's length."""

    input_ids: torch.Tensor  # [rows, width]
    attention_mask: torch.Tensor  # [rows, 1, width, width] additive: 0 within a window, the dtype's min across
    position_ids: torch.Tensor  # [rows, width]: every window counts its positions from ``first_position`` again
    row: list[int]  # per window (in the order given): its row
    start: list[int]  # per window: the column of its first token in that row


def pack_windows(windows: Sequence[Window], pad_id: int, width: int, first_position: int = 0) -> PackedBatch:
    """Windows packed into rows of at most ``width`` tokens (first fit, longest first).

    Each window attends only to itself and takes the position ids it would have alone, so
    a model gives it the logits it gives it alone (up to float rounding); the padding at a
    row's end attends only to itself, which keeps its (unread) values finite. A window
    longer than ``width`` gets a row of its own, as wide as it is.
    """
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i].input_ids))
    fill: list[int] = []
    row = [0] * len(windows)
    start = [0] * len(windows)
    for i in order:
        n = len(windows[i].input_ids)
        r = next((r for r, used in enumerate(fill) if used + n <= width), len(fill))
        if r == len(fill):
            fill.append(0)
        row[i], start[i] = r, fill[r]
        fill[r] += n
    rows, cols = len(fill), max(fill, default=0)
    ids = torch.full((rows, cols), pad_id, dtype=torch.long)
    positions = torch.full((rows, cols), first_position, dtype=torch.long)
    segment = torch.full((rows, cols), -1, dtype=torch.long)
    for i, w in enumerate(windows):
        n, r, a = len(w.input_ids), row[i], start[i]
        ids[r, a : a + n] = torch.tensor(w.input_ids)
        positions[r, a : a + n] = torch.arange(first_position, first_position + n)
        segment[r, a : a + n] = i
    same = segment[:, :, None] == segment[:, None, :]
    mask = torch.zeros(rows, 1, cols, cols).masked_fill_(~same[:, None], torch.finfo(torch.float32).min)
    return PackedBatch(ids, mask, positions, row, start)
