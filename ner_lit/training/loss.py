"""The training loss of a tagger's scores: cross-entropy per labelled item, or a CRF's sequence likelihood."""
from __future__ import annotations

from typing import Optional

import torch

from ner_lit.alignment.windows import IGNORE
from ner_lit.training.crf import CRFHead


def tagging_loss(scores: torch.Tensor, labels: torch.Tensor,
                 crf: Optional[CRFHead] = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The loss over every labelled token (or character slot), the accuracy of the scores' argmax, and
    how many labelled items there were.

    ``scores`` is ``[windows, positions(, slots), labels]`` and ``labels`` the same without the last
    dimension, ``IGNORE`` where nothing is labelled. Without a CRF: the mean cross-entropy over
    labelled items in float32, as the Hugging Face token classifiers compute it, so a ``token``
    tagger trains exactly as before. With one: its negative log likelihood of each window's labelled
    positions in order, divided by their number (the same scale).
    """
    flat, gold = scores.reshape(-1, scores.shape[-1]), labels.reshape(-1)
    mask = gold != IGNORE
    n = int(mask.sum())
    if crf is not None:
        nll, _ = crf.nll(scores.reshape(scores.shape[0], -1, scores.shape[-1]), labels.reshape(labels.shape[0], -1), IGNORE)
        loss = nll / max(1, n)
    else:
        loss = torch.nn.functional.cross_entropy(flat.float(), gold, ignore_index=IGNORE)
    correct = (flat.detach().argmax(-1)[mask] == gold[mask]).float().sum()
    return loss, correct / max(1, n), n
