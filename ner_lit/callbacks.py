"""Callbacks the CLI adds to every run: predictions to JSONL, the best model as a Hugging Face directory."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback


class PredictionWriter(BasePredictionWriter):
    """Writes ``predict`` results as JSONL (one line a sentence: id, text, entities), in input order."""

    def __init__(self, output: Optional[str] = None, overwrite: bool = False) -> None:
        """
        Args:
            output: JSONL file to write; default ``predictions.jsonl`` in the run's log directory.
            overwrite: Replace an existing output file (never the input file).
        """
        super().__init__(write_interval="epoch")
        self.output = output
        self.overwrite = overwrite
        self.written: Optional[Path] = None

    def _target(self, trainer: pl.Trainer) -> Path:
        return Path(self.output) if self.output else Path(trainer.log_dir or ".") / "predictions.jsonl"

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from ner_lit.data import DataError

        target = self._target(trainer)
        source = trainer.datamodule.path("predict") if trainer.datamodule is not None else None
        if source is not None and target.resolve() == Path(source).resolve():
            raise DataError(f"{target}: the prediction output would overwrite its input; choose another --prediction_writer.output")
        if target.exists() and not self.overwrite:
            raise DataError(f"{target} exists; choose another --prediction_writer.output or pass --prediction_writer.overwrite true")

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        rows = [row for batch in predictions for row in batch]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, rows)
            rows = [row for part in gathered for row in part]
        target = self._target(trainer)  # trainer.log_dir is a broadcast under DDP: every rank must ask
        if not trainer.is_global_zero:
            return
        rows.sort(key=lambda r: r["index"])
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        with tmp.open("w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps({"id": r["id"], "text": r["text"], "entities": r["entities"]}, ensure_ascii=False) + "\n")
        os.replace(tmp, target)
        self.written = target
        print(f"Wrote {len(rows)} predictions to {target}")


class ExportBestModel(Callback):
    """At the end of ``fit``, saves the best checkpoint as a Hugging Face directory.

    The directory loads with ``AutoModelForTokenClassification.from_pretrained`` and works in
    ``transformers.pipeline("token-classification")``; ``id2label`` carries the labels.
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
        from ner_lit.predictor import Predictor

        best = trainer.checkpoint_callback.best_model_path or getattr(trainer.checkpoint_callback, "last_model_path", "")
        if not best:
            return
        predictor = Predictor.from_checkpoint(best)
        target = log_dir / self.dirname
        predictor.model.save_pretrained(target)
        predictor.tokenizer.save_pretrained(target)
        self.exported = target
        print(f"Exported the best model ({Path(best).name}) as a Hugging Face directory: {target}")
