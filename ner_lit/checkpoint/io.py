"""Writing checkpoints so that a kill at any moment leaves whole files, and resuming exactly.

Three pieces the CLI installs in every run:

* :class:`AtomicCheckpointIO` writes each checkpoint to a temporary file in the same
  folder, fsyncs it and the folder, and renames it into place: a kill leaves the old file
  or the new one, never a torn one. (Lightning's own writer goes through fsspec, whose
  local transaction writes in the system temp folder and *moves* the file: across
  filesystems that is a copy, which a kill leaves half done at the final path.)
* :class:`NERModelCheckpoint` rewrites ``last.ckpt`` at every validation and epoch end,
  whatever the score (Lightning rewrites it only when a top-k file was saved in the same
  step), also mid-epoch every N steps or T time when asked, and writes the top-k ("best")
  files without optimizer state: ``last.ckpt`` is what resuming needs, the best file what
  evaluating and serving need.
* :class:`ExactResume` stores the random number generators' states in the checkpoint (every
  rank's) and puts them back at the next training batch, in the run that wrote the checkpoint
  as in a run resumed from it, so both train on from the same state.
"""
from __future__ import annotations

import os
import random
import re
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import IO, Any, Optional

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn

from ner_lit.checkpoint.format import CheckpointError
from ner_lit.checkpoint.runs import TEMP_MARK, run_dirs
from ner_lit.files import atomic_writer

_TEMP = re.compile(r"^\..+" + re.escape(TEMP_MARK) + r"(\d+)$")


def temp_path(target: Path) -> Path:
    """The temporary file ``target`` is written to first: hidden, beside it, named after this process."""
    return target.with_name(f".{target.name}{TEMP_MARK}{os.getpid()}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete the temporary checkpoint files in ``folder`` whose writing process is gone (a killed save)."""
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = _TEMP.match(p.name)
        if m and p.is_file() and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def remove_stale_temps_under(root: str | Path) -> None:
    """Clean every run's checkpoint folder under a runs root at start-up, saying what went."""

    for run in run_dirs(root):
        for p in remove_stale_temps(run / "checkpoints"):
            print(f"ner_lit: removed {p}, left by a checkpoint save that was killed", file=sys.stderr)



class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file in the target's folder, fsync, ``os.replace``, fsync the folder."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            super().save_checkpoint(checkpoint, path, storage_options)  # remote storage: fsspec's own way
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(target.parent)
        with atomic_writer(target, "wb", temp=temp_path(target)) as f:
            self.write(checkpoint, f)

    def write(self, checkpoint: dict[str, Any], f: IO[bytes]) -> None:
        """Serialize into the open temporary file (a separate step so that tests can interrupt it)."""
        torch.save(checkpoint, f)


class NERModelCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose ``last.ckpt`` is always the latest state, and whose best files hold weights only.

    ``every_n_train_steps`` and ``train_time_interval`` keep their Lightning names but write
    ``last.ckpt`` only, mid-epoch: the state a resume continues from (the training loader is
    stateful, :mod:`ner_lit.data.resumable`). Best files are chosen where scores exist, at
    validation; Lightning's own step triggers would also stop the per-epoch best files and
    rank mid-epoch saves by the previous epoch's score.
    """

    def __init__(self, best_weights_only: bool = True, every_n_train_steps: Optional[int] = None,
                 train_time_interval: Optional[timedelta] = None, **kwargs: Any) -> None:
        """
        Args:
            best_weights_only: Write the top-k (best) checkpoints without optimizer and scheduler
                state (about a third of the size with AdamW); ``last.ckpt`` stays complete for resuming.
            every_n_train_steps: Also rewrite ``last.ckpt`` every this many optimizer steps, mid-epoch, so
                that a kill loses at most that many steps (``fit --ckpt_path last`` resumes mid-epoch exactly);
                0 or null: at epoch ends only.
            train_time_interval: Also rewrite ``last.ckpt`` when this much time has passed since the last
                such save (e.g. ``"00:30:00"``), checked after each training batch.
            **kwargs: ModelCheckpoint's arguments.
        """
        if every_n_train_steps is not None and every_n_train_steps < 0:
            raise CheckpointError(f"--checkpoint.every_n_train_steps must be 0 (off) or more, got {every_n_train_steps}")
        super().__init__(**kwargs)
        self.best_weights_only = best_weights_only
        self.last_every_n_steps = every_n_train_steps
        self.last_every = train_time_interval
        self._last_saved_step: Optional[int] = None
        self._last_saved_time = time.monotonic()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self._mid_epoch_save_due(trainer):
            self.save_last_now(trainer)

    def _mid_epoch_save_due(self, trainer: pl.Trainer) -> bool:
        if not self.save_last or (self.last_every_n_steps is None and self.last_every is None):
            return False
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch or self._last_saved_step == trainer.global_step:
            return False  # the epoch end writes last.ckpt in a moment, with the epoch's scores
        due = bool(self.last_every_n_steps) and trainer.global_step % self.last_every_n_steps == 0
        if self.last_every is not None:
            # Rank 0's clock decides for every rank: a save is a collective step.
            late = time.monotonic() - self._last_saved_time >= self.last_every.total_seconds()
            due = due or bool(trainer.strategy.broadcast(late))
        return due

    def save_last_now(self, trainer: pl.Trainer) -> None:
        """Write ``last.ckpt`` with the current state (every rank calls this: saving is collective)."""
        if self._last_saved_step == trainer.global_step and Path(self.last_model_path or "").is_file():
            return
        # A mid-epoch save must not count as this step's save, or the epoch end's best file would be skipped.
        saved_step, saved_path = self._last_global_step_saved, self._last_checkpoint_saved
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        self._last_global_step_saved, self._last_checkpoint_saved = saved_step, saved_path

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        full = self.save_weights_only
        is_last = filepath == self.last_model_path
        self.save_weights_only = full or (self.best_weights_only and not is_last and self.save_last != "link")
        try:
            super()._save_checkpoint(trainer, filepath)
        finally:
            self.save_weights_only = full

    def _save_last_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, torch.Tensor]) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        if self.save_last:
            self._last_saved_step = trainer.global_step
            self._last_saved_time = time.monotonic()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_behind(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_behind(trainer)

    def _save_last_if_behind(self, trainer: pl.Trainer) -> None:
        """Write ``last.ckpt`` if this step's checking left it behind (no top-k file was saved)."""
        if (not self.save_last or trainer.fast_dev_run or trainer.state.fn != TrainerFn.FITTING
                or trainer.sanity_checking or trainer.global_step == 0 or self._last_saved_step == trainer.global_step):
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def rng_states() -> dict[str, Any]:
    """Python's, NumPy's and torch's (CPU and every CUDA device's) generator states, as weights_only-loadable types."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"][: torch.cuda.device_count()])


class ExactResume(Callback):
    """Random number generator states in the checkpoint, restored at the next training batch.

    The states are taken when a checkpoint is written and set again at the start of the
    next training batch, both in the run that wrote it and in a run resumed from it. What
    happens in between differs between the two runs (a resumed run loads, skips the sanity
    check, builds its loaders afresh), so restoring at load time would not be enough;
    restoring at the same batch in both makes the resumed run draw the same dropout masks
    as the uninterrupted one. Under DDP every rank's states are gathered (each rank draws its
    own masks) and each rank takes back its own; resumed on another number of ranks, every
    rank takes rank 0's. The training loader keeps its own position
    (:mod:`ner_lit.data.resumable`); its order needs no generator state.

    It also hands a mid-epoch checkpoint's loader position to the loader at the start of
    training. Lightning does that when it first builds the training loader, but a model whose
    schedule asks for ``trainer.estimated_stepping_batches`` (ours: warmup and decay are in
    steps) has it built before the checkpoint's state is restored, and the position is never
    applied (Lightning issue #20550). The loader starts lazily, so it is not too late here.
    """

    def __init__(self) -> None:
        self._pending: Optional[dict[str, Any]] = None
        self._trainer: Optional[pl.Trainer] = None

    @property
    def state_key(self) -> str:
        return "ner_lit.ExactResume"

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.fit_loop._load_combined_loader_states()  # a no-op unless a mid-epoch state is pending

    def state_dict(self) -> dict[str, Any]:
        # Every rank builds the checkpoint (rank 0 writes it), so gathering here is a collective all take part in.
        self._pending = rng_states()
        trainer = self._trainer
        if trainer is None or trainer.world_size == 1:
            return {"rng": self._pending}
        ranks: list[Any] = [None] * trainer.world_size
        torch.distributed.all_gather_object(ranks, self._pending)
        return {"rng": ranks[0], "rng_by_rank": ranks}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        by_rank = state_dict.get("rng_by_rank")
        trainer = self._trainer
        if by_rank and trainer is not None and len(by_rank) == trainer.world_size:
            self._pending = by_rank[trainer.global_rank]
        else:
            self._pending = state_dict.get("rng")

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._pending is not None:
            set_rng_states(self._pending)
            self._pending = None
