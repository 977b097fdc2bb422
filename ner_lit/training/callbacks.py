"""Callbacks the CLI adds to every run: predictions to JSONL, the best model as a Hugging Face directory."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Iterator, Optional, TextIO

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BasePredictionWriter, Callback, ProgressBar
from tqdm import tqdm

from ner_lit.data.datamodule import DataError
from ner_lit.data.stream import ChunkPlan
from ner_lit.files import atomic_directory, fsync_dir, refused
from ner_lit.inference.loading import from_checkpoint, from_checkpoint_on
from ner_lit.memory import release_freed_memory

# The stream has no batch sampler for Lightning to read indices from; rows carry their own index.
warnings.filterwarnings("ignore", message=r"Couldn't infer the batch indices fetched from your dataloader")


class PredictionWriter(BasePredictionWriter):
    """Writes ``predict`` results as JSONL (one line a sentence: id, text, entities), in input order, as they come.

    Rows are written batch by batch to a temporary file in the output's folder (under DDP one
    part file per rank, merged in input order by rank 0 at the end) and moved onto the output
    only when all are there (fsynced, renamed, the folder fsynced), so a run killed at any moment
    leaves no half output behind. A row waits only until the rows before it (of the same rank)
    are written: the stream's batches are sorted by length within a chunk, so at most a chunk's
    rows wait. Predictions are never also collected for ``trainer.predict``'s return value
    (``return_predictions`` is turned off). Every reason the output could not be written is
    checked before the first batch; a write the system refuses later (a full disk) is a
    :class:`~ner_lit.files.WriteError` naming the output, with the temporary files removed.
    """

    def __init__(self, output: Optional[str] = None, overwrite: bool = False) -> None:
        """
        Args:
            output: JSONL file to write; default ``predictions.jsonl`` in the run's log directory.
            overwrite: Replace an existing output file (never the input file).
        """
        super().__init__(write_interval="batch")
        self.output = output
        self.overwrite = overwrite
        self.written: Optional[Path] = None
        self.max_pending = 0  # the most rows ever waiting for an earlier row (bounded by the chunk size)
        self._target_path: Optional[Path] = None
        self._part: Optional[Path] = None
        self._file: Optional[TextIO] = None
        self._pending: dict[int, dict[str, Any]] = {}
        self._expected: Iterator[int] = iter(())
        self._next: Optional[int] = None
        self._count = 0
        self._show_progress = False
        self._bar: Optional[tqdm] = None

    def _target(self, trainer: pl.Trainer) -> Path:
        return Path(self.output) if self.output else Path(trainer.log_dir or ".") / "predictions.jsonl"

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        progress = trainer.progress_bar_callback
        if stage == "predict" and isinstance(progress, ProgressBar) and progress.is_enabled:
            progress.disable()  # it counts batches of unknown number: this writer shows sentences instead
            self._show_progress = True

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        target = self._target(trainer)  # trainer.log_dir is a broadcast under DDP: every rank must ask
        self._check_target(trainer, target)
        token = trainer.strategy.broadcast(os.getpid())  # one name for this run's part files on every rank
        hidden = target.with_name(f".{target.name}.tmp{token}")
        self._part = hidden if trainer.world_size == 1 else hidden.with_name(f"{hidden.name}.part{trainer.global_rank}")
        self._file = _open_new(self._part, target)
        self._target_path = target
        trainer.predict_loop.return_predictions = False
        plan: ChunkPlan = trainer.datamodule.predict_plan()
        self._expected = plan.indices_of_rank(trainer.global_rank)
        self._next = next(self._expected, None)
        self._pending.clear()
        self._count = self.max_pending = 0
        if self._show_progress and trainer.is_global_zero:
            share = "" if trainer.world_size == 1 else f" (rank 0's share of {plan.total})"
            self._bar = tqdm(total=plan.count_of_rank(0), unit=" sentences", desc=f"Predicting{share}",
                             dynamic_ncols=True, smoothing=0.1)

    def _check_target(self, trainer: pl.Trainer, target: Path) -> None:
        source = trainer.datamodule.path("predict") if trainer.datamodule is not None else None
        if source is not None and target.resolve() == Path(source).resolve():
            raise DataError(f"{target}: the prediction output would overwrite its input; choose another --prediction_writer.output")
        if target.is_dir():
            raise DataError(f"{target}: is a directory; --prediction_writer.output must name a file")
        if target.exists() and not self.overwrite:
            raise DataError(f"{target} exists; choose another --prediction_writer.output or pass --prediction_writer.overwrite true")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"{target}: its folder {target.parent} can not be created ({exc.strerror}); "
                            "choose another --prediction_writer.output") from None

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx) -> None:
        if trainer.received_sigterm:  # Lightning's predict loop notes a SIGTERM but runs on: stop, leaving nothing
            raise DataError(f"{self._target_path}: predict stopped by SIGTERM; nothing was written")
        for row in prediction:
            self._pending[row["index"]] = row
        self.max_pending = max(self.max_pending, len(self._pending))
        added = self._flush()
        if self._bar is not None:
            self._bar.update(added)

    def _flush(self) -> int:
        """Write the rows that are next in input order; how many were written."""
        assert self._file is not None
        n = 0
        while self._next is not None and self._next in self._pending:
            r = self._pending.pop(self._next)
            line = json.dumps({"id": r["id"], "text": r["text"], "entities": r["entities"]}, ensure_ascii=False) + "\n"
            try:
                self._file.write(line)
            except OSError as exc:
                raise refused(self._target_path, exc) from None
            self._next = next(self._expected, None)
            n += 1
        self._count += n
        return n

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert self._file is not None and self._part is not None and self._target_path is not None
        if self._next is not None or self._pending:
            raise RuntimeError(f"prediction stream incomplete: sentence {self._next} missing, {len(self._pending)} rows unplaced")
        target = self._target_path
        file, self._file = self._file, None
        try:
            _close_synced(file)
        except OSError as exc:
            raise refused(target, exc) from None
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        trainer.strategy.barrier()  # every rank's part is complete
        if trainer.is_global_zero:
            try:
                if trainer.world_size > 1:
                    self._part = self._merge(trainer)
                os.replace(self._part, target)
            except OSError as exc:
                raise refused(target, exc) from None
            fsync_dir(target.parent)
            self.written = target
            print(f"Wrote {trainer.datamodule.predict_count} predictions to {target}")
        self._part = None

    def _merge(self, trainer: pl.Trainer) -> Path:
        """Rank 0: the ranks' part files merged into one temporary file in input order (the parts removed)."""
        assert self._part is not None and self._target_path is not None
        merged = self._part.with_name(self._part.name.rsplit(".part", 1)[0])
        parts = [self._part.with_name(f"{merged.name}.part{r}") for r in range(trainer.world_size)]
        out = _open_new(merged, self._target_path)
        try:
            merge_parts(parts, trainer.datamodule.predict_plan(), out)
        except BaseException:
            out.close()
            merged.unlink(missing_ok=True)
            raise
        finally:
            for part in parts:
                part.unlink(missing_ok=True)
        _close_synced(out)
        return merged

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """A failed run leaves nothing: its temporary file goes, the output is untouched."""
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass  # what it could not flush goes with the file
            self._file = None
        if self._part is not None:
            self._part.unlink(missing_ok=True)
            self._part = None


def _close_synced(file: TextIO) -> None:
    """Flush, fsync and close: after this the bytes are on disk (or the OSError says why not)."""
    try:
        file.flush()
        os.fsync(file.fileno())
    finally:
        file.close()


def _open_new(path: Path, target: Path) -> TextIO:
    try:
        return path.open("x", encoding="utf-8", newline="\n")
    except OSError as exc:
        raise DataError(f"{target}: can not write in {target.parent} ({exc.strerror}); "
                        "choose another --prediction_writer.output") from None


def merge_parts(parts: list[Path], plan: ChunkPlan, out: TextIO) -> None:
    """The ranks' part files (each its chunks' rows in order) interleaved back into input order, chunk by chunk."""
    files = [p.open(encoding="utf-8", newline="\n") for p in parts]
    try:
        for k in range(plan.num_chunks):
            source = files[plan.rank_of(k)]
            for _ in range(min(plan.chunk_size, plan.total - k * plan.chunk_size)):
                line = source.readline()
                if not line:
                    raise RuntimeError(f"{parts[plan.rank_of(k)]}: ends before chunk {k}")
                out.write(line)
    finally:
        for f in files:
            f.close()


class ExportBestModel(Callback):
    """At the end of ``fit``, saves the best checkpoint as a Hugging Face directory.

    Written into a temporary folder and renamed into place when whole (:func:`~ner_lit.files.atomic_directory`):
    a kill or a full disk leaves no half-written model for ``serve --model_dir`` to load.

    The directory loads with ``AutoModelForTokenClassification.from_pretrained``; ``ner_lit.json``
    beside ``config.json`` holds the rest of the tagger's spec (tagging unit, windows, decoding,
    scores, provenance) for ``Predictor.from_pretrained`` and ``serve --model_dir``. A ``token``
    tagger's ``id2label`` carries the labels, so ``transformers.pipeline("token-classification")``
    reads it as well; a ``char`` tagger's outputs are a row of labels per character slot
    (``id2label``: ``<label>@<slot>``), which only ner_lit's decoding turns into entities.
    """

    def __init__(self, dirname: Optional[str] = "hf_model") -> None:
        """
        Args:
            dirname: Directory name inside the run's log directory; None disables the export.
        """
        self.dirname = dirname
        self.exported: Optional[Path] = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.dirname is None or trainer.checkpoint_callback is None:
            return
        log_dir = Path(trainer.log_dir or ".")  # a broadcast under DDP: every rank must ask
        if not trainer.is_global_zero:
            return

        best = trainer.checkpoint_callback.best_model_path or getattr(trainer.checkpoint_callback, "last_model_path", "")
        if not best:
            return
        # The trained module's own tensors when the best file holds them (the usual case when the last
        # validation was the best): loading the file beside them would hold the network twice at once.
        loaded = from_checkpoint_on(best, pl_module) or from_checkpoint(best)
        target = log_dir / self.dirname
        from safetensors import SafetensorError  # the weights writer's own I/O error (a full disk, ...)

        with atomic_directory(target, refusals=(SafetensorError,)) as folder:
            loaded.model.save_pretrained(folder)
            loaded.tokenizer.save_pretrained(folder)
            loaded.spec.save(folder)  # windows, decoding, scores: serve --model_dir predicts as predict does
        self.exported = target
        print(f"Exported the best model ({Path(best).name}) as a Hugging Face directory: {target}")


class ReleaseFreedMemory(Callback):
    """Returns freed memory to the system after every training epoch and validation, before the
    checkpoints are written and the best model exported.

    A training step's activations and an evaluation's batches are freed when they are done,
    but glibc's allocator keeps much of that memory mapped for reuse, so the process stays as
    large as its largest step; the checkpoint writes then read every weight (the frozen
    embeddings too, memory-mapped from the pretrained files until then) on top of it. Trimming
    there keeps those pages from adding to the run's peak. Training computes the same: only
    free memory is handed back. Lightning calls ``ModelCheckpoint``'s hooks after every other
    callback's, so this runs before the writes.
    """

    def __init__(self) -> None:
        self.releases = 0

    def _release(self) -> None:
        if release_freed_memory():
            self.releases += 1

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._release()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._release()
