"""A linear-chain CRF head: learned scores for each step from one tag to the next, trained by likelihood.

With the softmax head every character (or token) is scored on its own and the IOB2 Viterbi
only forbids invalid steps. A CRF scores whole tag sequences: its loss is the negative log
likelihood of the gold sequence among all sequences (the forward algorithm's partition
function), so it learns which steps are likely (``B-PS`` then ``I-PS``, rarely ``O`` then
``B-PS`` inside a word) from the data. Decoding is the same IOB2-constrained Viterbi as the
softmax head's, with the learned scores added (:mod:`ner_lit.alignment.decoding`); the scores
travel in the tagger's spec, so ``predict``, ``serve`` and an exported directory decode alike.

A training window's sequence is its labelled positions in order (under ``char`` tagging, the
labelled character slots of its tokens), gathered to the front; no constraint is imposed in
training, because a window may start inside an entity (``I-X`` first). The loss is the
negative log likelihood summed over windows and divided by the labelled positions, the scale
of the softmax head's mean cross-entropy, so learning rates carry over.
"""
from __future__ import annotations

import torch
from torch import nn


class CRFHead(nn.Module):
    """Transition scores ``[previous, current]`` and start scores ``[current]`` over ``num_labels`` tags."""

    def __init__(self, num_labels: int) -> None:
        super().__init__()
        self.transitions = nn.Parameter(torch.zeros(num_labels, num_labels))
        self.start = nn.Parameter(torch.zeros(num_labels))

    def scores(self) -> tuple:
        """The learned scores as float64 NumPy arrays, what the decoder takes."""
        return (self.transitions.detach().double().cpu().numpy(), self.start.detach().double().cpu().numpy())

    def nll(self, emissions: torch.Tensor, labels: torch.Tensor, ignore: int) -> tuple[torch.Tensor, int]:
        """Summed negative log likelihood of the gold tags and the number of labelled positions.

        ``emissions`` is ``[windows, positions, labels]``, ``labels`` ``[windows, positions]`` with
        ``ignore`` where a position carries no label. Computed in float32.
        """
        mask = labels != ignore
        lengths = mask.sum(dim=1)
        n = int(lengths.sum())
        if n == 0:
            return emissions.sum() * 0.0, 0
        # The labelled positions of each window to its front, in order (a stable sort of "not labelled").
        order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices
        width = int(lengths.max())
        order = order[:, :width]
        e = emissions.float().gather(1, order[:, :, None].expand(-1, -1, emissions.shape[-1]))
        y = labels.gather(1, order)
        valid = torch.arange(width, device=labels.device)[None, :] < lengths[:, None]
        y = torch.where(valid, y, torch.zeros_like(y))
        has = lengths > 0
        e, y, valid = e[has], y[has], valid[has]
        trans, start = self.transitions.float(), self.start.float()
        # The gold sequences' scores.
        gold = start[y[:, 0]] + e[:, 0].gather(1, y[:, :1])[:, 0]
        step = trans[y[:, :-1], y[:, 1:]] + e[:, 1:].gather(2, y[:, 1:, None])[..., 0]
        gold = gold + (step * valid[:, 1:]).sum(dim=1)
        # The partition function: the forward recursion over positions, a window's finished rows held.
        alpha = start[None, :] + e[:, 0]
        for t in range(1, width):
            nxt = torch.logsumexp(alpha[:, :, None] + trans[None], dim=1) + e[:, t]
            alpha = torch.where(valid[:, t, None], nxt, alpha)
        log_z = torch.logsumexp(alpha, dim=1)
        return (log_z - gold).sum(), n
