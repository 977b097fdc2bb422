"""Faults injected into a `python -m ner_lit fit` process (tests/pipeline/test_fault_injection.py).

Given to the CLI in a config file (``trainer.callbacks`` / ``trainer.plugins`` by class
path, with ``tests/`` on PYTHONPATH), each ends its own process with SIGKILL (or sends it
SIGTERM/SIGINT) at a chosen point, which is how a reproducible kill at "a random moment" is
made: the moments are drawn from a fixed seed list by the test.
"""
from __future__ import annotations

import errno
import io
import os
import signal
from pathlib import Path
from typing import IO, Any

import lightning.pytorch as pl
import torch

from ner_lit.checkpoint.io import AtomicCheckpointIO


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillAtBatch(pl.Callback):
    """SIGKILL after training batch ``batch`` of epoch ``epoch`` (mid-epoch: no checkpoint is being written)."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch = epoch
        self.batch = batch

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            die()


class SignalAtBatch(pl.Callback):
    """Send this process ``signal_name`` as training batch ``batch`` of epoch ``epoch`` starts, on global rank ``rank``.

    Sent before the step's forward pass, so the run must finish that step before it stops: what a
    preemption notice arriving mid-step looks like.
    """

    def __init__(self, epoch: int, batch: int, signal_name: str = "SIGTERM", rank: int = 0) -> None:
        self.epoch = epoch
        self.batch = batch
        self.signum = signal.Signals[signal_name]
        self.rank = rank

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if (trainer.current_epoch, batch_idx, trainer.global_rank) == (self.epoch, self.batch, self.rank):
            os.kill(os.getpid(), self.signum)


class TouchAtBatch(pl.Callback):
    """Create the file ``path`` after training batch ``batch`` of epoch ``epoch``: a cue for a signal from outside."""

    def __init__(self, epoch: int, batch: int, path: str) -> None:
        self.epoch = epoch
        self.batch = batch
        self.path = path

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch) and trainer.global_rank == 0:
            Path(self.path).touch()


class TornSave(AtomicCheckpointIO):
    """SIGKILL in the middle of writing the ``occurrence``-th checkpoint whose name starts with ``prefix``.

    The first ``fraction`` of the serialized bytes reach the temporary file, then the
    process dies: what a kill during a save leaves behind.
    """

    def __init__(self, prefix: str, occurrence: int, fraction: float) -> None:
        super().__init__()
        self.prefix = prefix
        self.occurrence = occurrence
        self.fraction = fraction
        self.seen = 0

    def write(self, checkpoint: dict[str, Any], f: IO[bytes]) -> None:
        name = Path(f.name).name  # ".<final name>.ner_lit-tmp.<pid>"
        if name[1:].startswith(self.prefix):
            self.seen += 1
            if self.seen == self.occurrence:
                buffer = io.BytesIO()
                torch.save(checkpoint, buffer)
                data = buffer.getvalue()
                f.write(data[: int(len(data) * self.fraction)])
                f.flush()
                os.fsync(f.fileno())
                die()
        super().write(checkpoint, f)


class FullDiskSave(AtomicCheckpointIO):
    """The ``occurrence``-th save of a checkpoint whose name starts with ``prefix`` finds the disk full:
    half its bytes reach the temporary file, then the write fails with ENOSPC, as a full disk does."""

    def __init__(self, prefix: str, occurrence: int) -> None:
        super().__init__()
        self.prefix = prefix
        self.occurrence = occurrence
        self.seen = 0

    def write(self, checkpoint: dict[str, Any], f: IO[bytes]) -> None:
        if Path(f.name).name[1:].startswith(self.prefix):
            self.seen += 1
            if self.seen == self.occurrence:
                buffer = io.BytesIO()
                torch.save(checkpoint, buffer)
                f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        super().write(checkpoint, f)
