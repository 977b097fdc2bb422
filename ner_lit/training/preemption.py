"""Stopping a training run on SIGTERM or Ctrl-C without losing the epoch it is in.

A cloud preemption or a SLURM time limit sends SIGTERM, a user presses Ctrl-C (SIGINT); either
can come hours into an epoch. :class:`Preemption` turns the signal into a flag, lets the
optimizer step under way finish, writes ``last.ckpt`` (atomically, with the training loader's
position, :mod:`ner_lit.data.resumable`) and ends the command with :class:`Preempted`, which the
CLI prints as one line and exits with :data:`EXIT_PREEMPTED`. ``fit --ckpt_path last`` then
goes on from the next batch as if nothing had happened.

Under DDP the ranks agree, after every batch, on whether any of them was signalled (one
all-reduce of a boolean), so they all stop after the same step and write one checkpoint
together, whichever process the signal reached. A second signal means "now": Ctrl-C twice
raises KeyboardInterrupt, SIGTERM twice ends the process at once (the atomic writer leaves the
previous ``last.ckpt`` whole either way).

Lightning's own SIGTERM handling (a flag, then an exception after the step, without a save;
under DDP a broadcast from inside the signal handler) is replaced while training runs and
restored after; before training starts a signal still ends the run as before.
"""
from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Optional

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

#: The exit status of a run stopped by a signal with its state saved: EX_TEMPFAIL, "try again later".
EXIT_PREEMPTED = 75
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """A fit stopped by a signal after writing ``last.ckpt``; the message says how to go on."""

    def __init__(self, signal_name: str, epoch: int, step: int, checkpoint: Optional[str], config: Optional[str],
                 rank: int) -> None:
        self.signal_name, self.epoch, self.step = signal_name, epoch, step
        self.checkpoint, self.config, self.rank = checkpoint, config, rank
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.signal_name} in epoch {self.epoch} after step {self.step}"
        if self.checkpoint is None:
            return f"stopped by {where}; no checkpoint was written (checkpointing is off)"
        config = f" --config {self.config}" if self.config else ""
        return (f"stopped by {where}; saved {self.checkpoint}: resume with "
                f"`ner_lit fit{config} --ckpt_path {self.checkpoint}`")


class Preemption(Callback):
    """SIGTERM/SIGINT during training: finish the step, write ``last.ckpt``, raise :class:`Preempted`."""

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self._previous: dict[int, Any] = {}

    # ------------------------------------------------------------------ the handler
    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.received is None:
            self.received = signum  # acted on after the step under way
            return
        # A second signal: the user means now. Ctrl-C raises KeyboardInterrupt, SIGTERM ends the process.
        self._restore()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)

    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in SIGNALS:
            self._previous.setdefault(signum, signal.getsignal(signum))
            signal.signal(signum, self._handle)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    # ------------------------------------------------------------------ hooks
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Here, not in setup: Lightning installs its own SIGTERM handler just before training starts.
        self.received = None
        self._install()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._stop_now(trainer):
            self._save_and_stop(trainer)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A signal during the epoch-end validation: that epoch's last.ckpt is written; stop before the next.
        if self._stop_now(trainer):
            self._save_and_stop(trainer)

    # ------------------------------------------------------------------ stopping
    def _stop_now(self, trainer: pl.Trainer) -> bool:
        signalled = self.received is not None
        if trainer.world_size > 1:  # every rank must stop after the same step
            signalled = trainer.strategy.reduce_boolean_decision(signalled, all=False)
        return signalled

    def _save_and_stop(self, trainer: pl.Trainer) -> None:
        callback = trainer.checkpoint_callback
        path: Optional[str] = None
        if callback is not None and getattr(callback, "save_last", False):
            save = getattr(callback, "save_last_now", None)
            if save is not None:
                save(trainer)
            else:  # a plain ModelCheckpoint given in the config
                callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))
            path = callback.last_model_path or None
        name = signal.Signals(self.received).name if self.received is not None else "a signal on another rank"
        config = _saved_config(trainer)
        raise Preempted(name, trainer.current_epoch, trainer.global_step, path, config, trainer.global_rank)


def _saved_config(trainer: pl.Trainer) -> Optional[str]:
    """The config file LightningCLI saved in the run's folder, if it did (what reruns the same command)."""
    log_dir = trainer.log_dir
    if not log_dir:
        return None
    path = Path(log_dir) / "config.yaml"
    return str(path) if path.is_file() else None
