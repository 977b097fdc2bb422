"""The training DataLoader that knows where it is in its epoch, so that a run can stop mid-epoch and go on.

Lightning resumes mid-epoch exactly only when every training loader is *stateful*: it saves
``loader.state_dict()`` in each checkpoint and hands it back to ``load_state_dict`` before the
resumed run's first batch. The state here is small because the batch order is a pure function
of the seed and the epoch (:class:`~ner_lit.data.samplers.LengthGroupedBatchSampler`): the
epoch and how many batches this loader has handed out in it. Resuming draws the same
permutation and skips that many batches; nothing of the data is stored.

The count is of batches handed to the consumer, not of indices the sampler gave out:
worker processes read ahead, and Lightning fetches ahead of the batch it runs only for loaders
without a length (this one has one), so at a checkpoint the count is the batches trained on.
"""
from __future__ import annotations

from typing import Any, Iterator

from torch.utils.data import DataLoader

from ner_lit.data.samplers import LengthGroupedBatchSampler
from ner_lit.data.settings import DataError

#: Bumped when the state's meaning changes; an unknown one is refused rather than misread.
STATE_FORMAT = 1


class ResumableLoader(DataLoader):
    """A DataLoader over a :class:`LengthGroupedBatchSampler` with ``state_dict``/``load_state_dict``.

    Iteration starts lazily, at the first batch asked for, so worker processes draw their
    indices only after Lightning has set the sampler's epoch (it does so after creating the
    iterator when a run resumes).
    """

    batch_sampler: LengthGroupedBatchSampler

    def __init__(self, dataset: Any, batch_sampler: LengthGroupedBatchSampler, **kwargs: Any) -> None:
        super().__init__(dataset, batch_sampler=batch_sampler, **kwargs)
        self._taken = 0  # batches of the current epoch handed out so far
        self._resume_at = 0  # batches the next iteration skips (set by load_state_dict)

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        self._taken = self._resume_at  # a new pass: its count starts where it will start
        return self._batches()

    def _batches(self) -> Iterator[Any]:
        skip, self._resume_at = self._resume_at, 0
        self.batch_sampler.skip = skip
        self._taken = skip
        for batch in super().__iter__():
            self._taken += 1
            yield batch

    def _shape(self) -> dict[str, int]:
        """What must be equal for a saved position to mean the same batches in this run."""
        s = self.batch_sampler
        return {"batches": len(s), "windows": len(s.lengths), "batch_size": s.batch_size, "seed": s.seed,
                "world_size": s.world_size, "shuffle": int(s.shuffle), "group_by_length": int(s.group_by_length)}

    def state_dict(self) -> dict[str, int]:
        return {"format": STATE_FORMAT, "epoch": self.batch_sampler.epoch, "position": self._taken, **self._shape()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT:
            raise DataError(f"the checkpoint's training-loader state has format {state.get('format')!r}, "
                            f"this version reads {STATE_FORMAT}: resume from an epoch-end checkpoint")
        saved = {k: state.get(k) for k in self._shape()}
        now = self._shape()
        if saved != now:
            changed = ", ".join(f"{k} {saved[k]} -> {now[k]}" for k in now if saved[k] != now[k])
            raise DataError(
                f"the checkpoint stopped in epoch {state['epoch']} after batch {state['position']} of "
                f"{saved['batches']}, but this run's training batches differ ({changed}): resume with the "
                "settings, training file, seed and number of devices it was trained with")
        self.batch_sampler.set_epoch(int(state["epoch"]))
        self._resume_at = self._taken = int(state["position"])
