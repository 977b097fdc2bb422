"""KLUE-NER scores as torchmetrics metrics: char macro F1 (``F1c``) and entity macro F1 (``F1e``).

Both reproduce the official KLUE definitions (scikit-learn and seqeval, see the data README)
from sufficient statistics: small per-class count tensors that are summed across updates and
across processes. That is what makes them exact under DDP and over many batches, where
averaging per-batch scores would not be. The counting is vectorised over the concatenated
characters of a whole batch, so scoring the 5,000 dev sentences takes milliseconds rather
than the seconds seqeval needs.

Inputs are label ids (indices into the label list the metric was built with), one 1-D
integer tensor per sentence, with the whitespace characters already removed: KLUE scores
characters without whitespace, and removing them is the caller's business because only the
caller knows the text.

Two cases where the reference libraries give no number are defined here instead:

- no character at all: scikit-learn raises on empty input; both metrics return 0.0 so that a
  monitored value stays finite.
- no entity on either side (e.g. all-``O`` gold and prediction): seqeval averages over no
  entity type and returns NaN; ``EntityMacroF1`` returns 0.0, extending seqeval's own
  zero-division convention (an undefined score counts as 0) to the empty average, again so
  that checkpointing and early stopping never see NaN.

This module imports nothing else of ner_lit.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

OUTSIDE = "O"
_O, _B, _I = 0, 1, 2

#: Names of the aggregate rows of :meth:`EntityMacroF1.report`, as in seqeval's classification report.
MICRO_AVG = "micro avg"
MACRO_AVG = "macro avg"


def parse_labels(labels: Sequence[str]) -> tuple[list[str], Tensor, Tensor]:
    """Split BIO label names into (entity types, prefix per label, type index per label).

    Types are sorted, as seqeval orders them. The prefix codes are 0 for ``O``, 1 for ``B-``
    and 2 for ``I-``; ``O`` has type index -1. Anything that is not ``O``, ``B-X`` or ``I-X``
    is rejected here, once, so that ``update`` never has to look at strings.
    """
    labels = list(labels)
    if len(set(labels)) != len(labels):
        raise ValueError(f"duplicate labels in {labels}")
    bad = [lab for lab in labels if lab != OUTSIDE and not (lab[:2] in ("B-", "I-") and len(lab) > 2)]
    if bad:
        raise ValueError(f"labels must be 'O', 'B-<type>' or 'I-<type>'; got {bad}")
    types = sorted({lab[2:] for lab in labels if lab != OUTSIDE})
    index = {t: i for i, t in enumerate(types)}
    prefix = torch.tensor([_O if lab == OUTSIDE else (_B if lab[0] == "B" else _I) for lab in labels])
    type_of = torch.tensor([-1 if lab == OUTSIDE else index[lab[2:]] for lab in labels])
    return types, prefix, type_of


def _concat(preds: Sequence[Tensor], target: Sequence[Tensor], num_labels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate a batch of sentences into (pred ids, gold ids, sentence-start mask).

    The start mask is what lets the entity extraction run over the whole batch at once while
    still ending every entity at its sentence's end. The counting that follows is a few dozen
    operations on vectors of a few thousand small integers, so it runs in NumPy on the CPU:
    a NumPy call costs about a microsecond, a torch call several (its dispatcher, and an
    intra-op thread pool that only adds synchronisation at this size), and that per-call
    cost, not arithmetic, is what an update spends its time on.
    """
    if len(preds) != len(target):
        raise ValueError(f"{len(preds)} predicted sentences for {len(target)} gold sentences")
    # Checks in bulk: per-sentence Python work is what dominates on a 5,000-sentence update.
    p_shapes = [p.shape for p in preds]
    t_shapes = [t.shape for t in target]
    if p_shapes != t_shapes or any(len(shape) != 1 for shape in t_shapes):
        for i, (ps, ts) in enumerate(zip(p_shapes, t_shapes)):
            if len(ps) != 1 or len(ts) != 1:
                raise ValueError(f"sentence {i}: expected 1-D label-id tensors, got shapes {tuple(ps)} and {tuple(ts)}")
            if ps != ts:
                raise ValueError(f"sentence {i}: {ps[0]} predicted labels for {ts[0]} gold labels")
    lengths = [shape[0] for shape in t_shapes]
    # an empty sentence may come as torch.tensor([]), whose dtype is float: leave it out
    pred_parts = [p for p, n in zip(preds, lengths) if n]
    gold_parts = [t for t, n in zip(target, lengths) if n]
    if not pred_parts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=bool)
    # One tensor holding the predictions then the gold ids: one concatenation, one range
    # check, and (for entities) one extraction pass serve both sides.
    both_t = torch.cat(pred_parts + gold_parts)
    if both_t.is_floating_point() or both_t.is_complex() or both_t.dtype == torch.bool:
        for name, parts in (("preds", preds), ("target", target)):
            for i, x in enumerate(parts):
                if x.numel() and (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool):
                    raise ValueError(f"sentence {i}: {name} label ids must be integers, got dtype {x.dtype}")
    both = both_t.detach().cpu().numpy().astype(np.int64, copy=False)
    lo, hi = int(both.min()), int(both.max())
    if lo < 0 or hi >= num_labels:
        raise ValueError(f"label ids must lie in [0, {num_labels}); found values in [{lo}, {hi}]")
    n = both.size // 2
    offsets = np.cumsum([0] + lengths[:-1])
    starts = np.zeros(n, dtype=bool)
    starts[offsets[offsets < n]] = True
    return both[:n], both[n:], starts


def extract_entities(
    ids: np.ndarray, sentence_start: np.ndarray, prefix: np.ndarray, type_of: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Strict IOB2 entities of concatenated sentences as (start, end, type) arrays, end exclusive.

    An entity starts at each ``B-X`` and runs over the following ``I-X`` that continue it.
    An ``I-X`` continues only when the previous character is ``B-X`` or ``I-X`` of the same
    sentence. Every other character is a "break"; an entity ends at the first break after its
    ``B``. A stray ``I-X`` chain (not opened by ``B-X``) contains no ``B`` and so yields no
    entity, which is exactly seqeval's strict mode.
    """
    n = ids.size
    pre = prefix[ids]
    typ = type_of[ids]
    cont = np.zeros(n, dtype=bool)
    if n > 1:
        # typ >= 0 for I-, so equal types also rule out a preceding O
        cont[1:] = (pre[1:] == _I) & (typ[1:] == typ[:-1]) & ~sentence_start[1:]
    breaks = np.append(np.flatnonzero(~cont), n)
    starts = np.flatnonzero(pre == _B)
    ends = breaks[np.searchsorted(breaks, starts, side="right")]
    return starts, ends, typ[starts]


def _add(state: Tensor, counts: np.ndarray) -> None:
    state += torch.from_numpy(counts).to(state.device)


class CharMacroF1(Metric):
    """KLUE ``F1c`` x100: scikit-learn's macro F1 over every label, ``zero_division=1``.

    Per class, F1 = 2 tp / (2 tp + fp + fn), and 1 when the class occurs on neither side
    (scikit-learn 1.9's ``zero_division=1``); a class that is only predicted or only gold
    scores 0. All labels are averaged, ``O`` included, as KLUE does.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    tp: Tensor
    fp: Tensor
    fn: Tensor

    def __init__(self, labels: Sequence[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.labels = list(labels)
        parse_labels(self.labels)  # validate once, fail at construction
        n = len(self.labels)
        for name in ("tp", "fp", "fn"):
            self.add_state(name, default=torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Sequence[Tensor], target: Sequence[Tensor]) -> None:
        pred, gold, _ = _concat(preds, target, len(self.labels))
        n = len(self.labels)
        tp = np.bincount(gold[pred == gold], minlength=n)
        _add(self.tp, tp)
        _add(self.fp, np.bincount(pred, minlength=n) - tp)
        _add(self.fn, np.bincount(gold, minlength=n) - tp)

    def compute(self) -> Tensor:
        tp, fp, fn = self.tp.double(), self.fp.double(), self.fn.double()
        if (tp + fn).sum() == 0:
            return torch.zeros((), dtype=torch.float64, device=self.tp.device)
        denom = 2 * tp + fp + fn
        f1 = torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.ones_like(denom))
        return f1.mean() * 100


class EntityMacroF1(Metric):
    """KLUE ``F1e`` x100: seqeval's macro F1, ``mode="strict", scheme=IOB2``.

    Per entity type, precision and recall are 0 where undefined (seqeval's default), F1 is
    their harmonic mean (0 when both are 0), and the macro average runs over the types that
    occur on either side; a type of the label list that occurs nowhere is not averaged.
    Entities never cross a sentence boundary.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    tp: Tensor
    n_pred: Tensor
    n_true: Tensor

    def __init__(self, labels: Sequence[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.labels = list(labels)
        self.types, prefix, type_of = parse_labels(self.labels)
        self._prefix, self._type_of = prefix.numpy(), type_of.numpy()
        for name in ("tp", "n_pred", "n_true"):
            self.add_state(name, default=torch.zeros(len(self.types), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Sequence[Tensor], target: Sequence[Tensor]) -> None:
        pred, gold, first = _concat(preds, target, len(self.labels))
        prefix, type_of = self._prefix, self._type_of
        n = gold.size
        # Predictions and gold in one pass: the gold half starts with a sentence start, so no
        # entity runs from one half into the other.
        both = np.concatenate([pred, gold])
        start, end, typ = extract_entities(both, np.tile(first, 2), prefix, type_of)
        is_pred = start < n
        p_start, p_end, p_type = start[is_pred], end[is_pred], typ[is_pred]
        g_start, g_end, g_type = start[~is_pred] - n, end[~is_pred] - n, typ[~is_pred]
        # At most one gold entity starts at a character, so a predicted entity is correct
        # exactly when a gold one starts where it starts, with the same end and type.
        gold_end_at = np.full(n + 1, -1, dtype=np.int64)
        gold_end_at[g_start] = g_end
        hit = (gold_end_at[p_start] == p_end) & (type_of[gold[p_start]] == p_type)
        k = len(self.types)
        _add(self.tp, np.bincount(p_type[hit], minlength=k))
        _add(self.n_pred, np.bincount(p_type, minlength=k))
        _add(self.n_true, np.bincount(g_type, minlength=k))

    def _per_type(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(precision, recall, f1, present) per type, as fractions, in seqeval's arithmetic."""
        tp, n_pred, n_true = self.tp.double(), self.n_pred.double(), self.n_true.double()
        precision = torch.where(n_pred > 0, tp / n_pred.clamp(min=1), torch.zeros_like(tp))
        recall = torch.where(n_true > 0, tp / n_true.clamp(min=1), torch.zeros_like(tp))
        denom = precision + recall
        f1 = torch.where(denom > 0, 2 * precision * recall / torch.where(denom > 0, denom, 1.0), torch.zeros_like(tp))
        return precision, recall, f1, (self.n_pred + self.n_true) > 0

    def compute(self) -> Tensor:
        _, _, f1, present = self._per_type()
        if not present.any():
            return torch.zeros((), dtype=torch.float64, device=self.tp.device)
        return f1[present].mean() * 100

    def report(self) -> dict[str, dict[str, float]]:
        """Per-type precision / recall / F1 / support (x100; support = gold entities), then aggregates.

        The rows are those of seqeval's ``classification_report(output_dict=True)``: one per
        type that occurs on either side (sorted), then ``"micro avg"`` (pooled counts) and
        ``"macro avg"`` (unweighted mean of the rows; its F1 is :meth:`compute`). Under DDP
        the counts of all processes are summed first, as in ``compute``.
        """
        with self.sync_context(should_sync=not self._is_synced, should_unsync=not self._is_synced):
            precision, recall, f1, present = self._per_type()
            tp, n_pred, n_true = int(self.tp.sum()), int(self.n_pred.sum()), int(self.n_true.sum())
            rows: dict[str, dict[str, float]] = {}
            for i, name in enumerate(self.types):
                if present[i]:
                    rows[name] = {
                        "precision": float(precision[i]) * 100,
                        "recall": float(recall[i]) * 100,
                        "f1": float(f1[i]) * 100,
                        "support": int(self.n_true[i]),
                    }
        micro_p = tp / n_pred if n_pred else 0.0
        micro_r = tp / n_true if n_true else 0.0
        micro_f = 2 * micro_p * micro_r / (micro_p + micro_r) if micro_p + micro_r else 0.0
        rows[MICRO_AVG] = {"precision": micro_p * 100, "recall": micro_r * 100, "f1": micro_f * 100, "support": n_true}
        if present.any():
            macro = [float(x[present].mean()) * 100 for x in (precision, recall, f1)]
        else:
            macro = [0.0, 0.0, 0.0]
        rows[MACRO_AVG] = {"precision": macro[0], "recall": macro[1], "f1": macro[2], "support": n_true}
        return rows
