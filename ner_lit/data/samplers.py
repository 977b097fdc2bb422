"""Batch samplers: training windows grouped by length, evaluation sentences sorted by length.

Both give every DDP rank its share of the same batches, so ranks step together and
evaluation sees every sentence exactly once.
"""
from __future__ import annotations

import math
import random
from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from ner_lit.data.datasets import EvalItem


class EvalItems:
    """The Python side of an evaluation batch.

    Deliberately not a dataclass or a sequence, so that Lightning's batch transfer leaves
    it alone instead of walking through thousands of small fields.
    """

    def __init__(self, items: list[EvalItem]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)


class _EpochHandle:
    """Where Lightning looks for ``set_epoch`` under a batch sampler (``batch_sampler.sampler``).

    Lightning sets the epoch of a loader's ``sampler`` and of its ``batch_sampler.sampler``, never
    of the batch sampler itself; without this handle every epoch would draw epoch 0's order.
    """

    def __init__(self, owner: "LengthGroupedBatchSampler") -> None:
        self.owner = owner

    def set_epoch(self, epoch: int) -> None:
        self.owner.set_epoch(epoch)


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Shuffled batches of similar length, the same on every rank, each rank taking its share.

    Indices are shuffled, cut into mega-batches of ``50 * batch_size``, each sorted by
    length and cut into batches, and the batches shuffled again. Every rank draws the same
    permutation (same seed and epoch) and takes every ``world_size``-th batch; the batch
    count is cut to a multiple of ``world_size`` so all ranks step together (with fewer
    batches than ranks, batches are repeated so that every rank has one).

    ``skip`` makes the next iteration start part-way into its epoch (a mid-epoch resume, see
    :class:`~ner_lit.data.resumable.ResumableLoader`): the permutation is the epoch's own, only
    its first ``skip`` batches of this rank are left out. It applies to one iteration.
    """

    def __init__(self, lengths: Sequence[int] | np.ndarray, batch_size: int, shuffle: bool, group_by_length: bool,
                 seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.group_by_length = group_by_length
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.skip = 0
        self.sampler = _EpochHandle(self)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[np.ndarray]:
        """The epoch's batches as views of one index array (a million windows are one array, not a
        million Python ints); each mega-batch sorted by a stable argsort, as ``sorted`` would."""
        n = len(self.lengths)
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        if self.shuffle:
            shuffled = list(range(n))
            rng.shuffle(shuffled)
            order = np.asarray(shuffled, dtype=np.int64)
            del shuffled
        else:
            order = np.arange(n, dtype=np.int64)
        if self.group_by_length:
            mega = self.batch_size * 50
            for lo in range(0, n, mega):
                part = order[lo:lo + mega]
                order[lo:lo + mega] = part[np.argsort(-self.lengths[part], kind="stable")]
        batches = [order[lo:lo + self.batch_size] for lo in range(0, n, self.batch_size)]
        if self.shuffle and self.group_by_length:
            rng.shuffle(batches)
        if 0 < len(batches) < self.world_size:
            return (batches * self.world_size)[: self.world_size]
        return batches[: len(batches) - len(batches) % self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        skip, self.skip = self.skip, 0
        for batch in self._batches()[self.rank::self.world_size][skip:]:
            yield batch.tolist()

    def __len__(self) -> int:
        n = math.ceil(len(self.lengths) / self.batch_size)
        usable = n - n % self.world_size if n >= self.world_size else (self.world_size if n else 0)
        return len(range(self.rank, usable, self.world_size))


class SortedSentenceBatchSampler(Sampler[list[int]]):
    """Evaluation batches of whole sentences, longest first, dealt round-robin to the ranks.

    A batch holds at most ``batch_size`` windows (at least one sentence). No sentence is
    repeated to even out the ranks: metric states are summed across ranks, so uneven
    shares are exact.
    """

    def __init__(self, window_counts: Sequence[int] | np.ndarray, lengths: Sequence[int] | np.ndarray, batch_size: int,
                 rank: int = 0, world_size: int = 1):
        # One index array and the batch boundaries in it: a large dev set costs two arrays, not a list a batch.
        self.order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
        starts: list[int] = []
        windows = 0
        for k, count in enumerate(np.asarray(window_counts, dtype=np.int64)[self.order].tolist()):
            if not starts or windows + count > batch_size:
                starts.append(k)
                windows = 0
            windows += count
        bounds = np.asarray(starts + [len(self.order)], dtype=np.int64)
        self.spans = np.stack([bounds[:-1], bounds[1:]], axis=1)[rank::world_size]

    @property
    def batches(self) -> list[list[int]]:
        return list(self)

    def __iter__(self) -> Iterator[list[int]]:
        for a, b in self.spans.tolist():
            yield self.order[a:b].tolist()

    def __len__(self) -> int:
        return len(self.spans)
