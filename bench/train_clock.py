"""Training time as both systems spend it on their optimizer steps, clocked alike.

Per epoch: from the epoch's start to the end of its last optimizer step (data loading,
forward, backward and optimizer step included); model building, validation, checkpoint
writing and export fall outside, since they happen before the first epoch or after the last
step of an epoch. ``LightningTrainClock`` rides on ``python -m ner_lit fit`` as an extra
callback (``--trainer.callbacks+=``); ``hf_train_clock()`` on the Hugging Face ``Trainer``.
Each writes/returns the same record.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback

from bench.common import write_json


class EpochClock:
    """Start and last-step-end times of every epoch, and the steps taken in it."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []

    def start(self) -> None:
        now = time.perf_counter()
        self.epochs.append({"start": now, "end": now, "steps": 0})

    def step(self) -> None:
        if not self.epochs:
            self.start()
        self.epochs[-1]["end"] = time.perf_counter()
        self.epochs[-1]["steps"] += 1

    def record(self) -> dict[str, Any]:
        seconds = [e["end"] - e["start"] for e in self.epochs]
        return {"train_s": sum(seconds), "epoch_s": seconds, "steps": int(sum(e["steps"] for e in self.epochs)),
                "epochs": len(self.epochs)}


class LightningTrainClock(Callback):
    """Writes :meth:`EpochClock.record` as JSON to ``out`` when training ends (rank 0)."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.clock = EpochClock()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.clock.start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.clock.step()

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            write_json(Path(self.out), self.clock.record())


def hf_train_clock():
    """A ``TrainerCallback`` with an :class:`EpochClock` as ``.clock``."""
    from transformers import TrainerCallback

    class HFTrainClock(TrainerCallback):
        def __init__(self) -> None:
            self.clock = EpochClock()

        def on_epoch_begin(self, args, state, control, **kwargs):
            self.clock.start()

        def on_step_end(self, args, state, control, **kwargs):
            self.clock.step()

    return HFTrainClock()

