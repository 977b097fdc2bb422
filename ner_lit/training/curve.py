"""The learning curve of a checkpoint's run: dev F1 against minutes of training, as a table and a PNG.

Minutes of training are what :class:`TrainingClock` logs at every validation (``train_minutes``:
time inside training epochs, validation and checkpoint writing left out, carried across
resumes in the checkpoint). The curve is read from the run's own ``metrics.csv``, following a
resumed run back through the runs it resumed from (each saved ``config.yaml`` names the
checkpoint it started from), so a run stopped and resumed twice is still one curve. Runs that
did not log minutes are plotted against optimizer steps.

The PNG needs matplotlib (``pip install 'ner_lit[plots]'``); without it the table is written
and the report says how to get the picture.
"""
from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
import yaml
from lightning.pytorch.callbacks import Callback

from ner_lit.checkpoint.runs import run_of
from ner_lit.files import atomic_writer

MINUTES = "train_minutes"


class TrainingClock(Callback):
    """Logs ``train_minutes``, the time spent inside training epochs so far, at every validation."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._since: Optional[float] = None

    @property
    def state_key(self) -> str:
        return "ner_lit.TrainingClock"

    def state_dict(self) -> dict[str, Any]:
        return {"seconds": self._now()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.seconds = float(state_dict.get("seconds", 0.0))

    def _now(self) -> float:
        return self.seconds + (time.perf_counter() - self._since if self._since is not None else 0.0)

    def _pause(self) -> None:
        self.seconds, self._since = self._now(), None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._since = time.perf_counter()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._since is None:  # back from a validation in the middle of the epoch
            self._since = time.perf_counter()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._pause()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            pl_module.log(MINUTES, self.seconds / 60, on_step=False, on_epoch=True)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._pause()


def _rows(run: Path) -> list[dict[str, str]]:
    path = run / "metrics.csv"
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return [row for row in csv.DictReader(f) if row.get("val_F1e")]


def _resumed_from(run: Path) -> Optional[Path]:
    """The run whose checkpoint this run resumed from, as its saved config.yaml records it."""
    config = run / "config.yaml"
    try:
        ckpt = (yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("ckpt_path")
    except (OSError, yaml.YAMLError):
        return None
    if not ckpt:
        return None
    path = Path(ckpt)
    if not path.is_absolute():
        path = (Path.cwd() / path)
    return run_of(path) if path.parent.name == "checkpoints" else None


def learning_curve(checkpoint: str | Path, limit: int = 20) -> list[dict[str, float]]:
    """Every validation of the checkpoint's run and of the runs it resumed from, oldest first:
    ``step``, ``epoch``, ``F1c``, ``F1e`` and ``minutes`` where the run logged them."""
    runs: list[Path] = []
    run: Optional[Path] = run_of(checkpoint)
    while run is not None and run not in runs and len(runs) < limit:
        runs.append(run)
        run = _resumed_from(run)
    points: dict[int, dict[str, float]] = {}
    for run in reversed(runs):  # a later run's validation of the same step replaces an earlier one's
        for row in _rows(run):
            point = {"step": int(float(row["step"])), "epoch": int(float(row["epoch"])),
                     "F1c": float(row["val_F1c"]), "F1e": float(row["val_F1e"])}
            if row.get(MINUTES):
                point["minutes"] = float(row[MINUTES])
            points[point["step"]] = point
    return [points[k] for k in sorted(points)]


def markdown(points: list[dict[str, float]], png: Optional[Path], why_no_png: Optional[str]) -> str:
    if not points:
        return "The checkpoint's run folder has no validation scores (metrics.csv) to draw."
    has_minutes = all("minutes" in p for p in points)
    head = "| minutes | step | epoch | dev F1e | dev F1c |" if has_minutes else "| step | epoch | dev F1e | dev F1c |"
    lines = [head, "|" + " ---: |" * (head.count("|") - 1)]
    for p in points:
        cells = ([f"{p['minutes']:.1f}"] if has_minutes else []) + [str(p["step"]), str(p["epoch"]),
                                                                   f"{p['F1e']:.2f}", f"{p['F1c']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    picture = f"![learning curve]({png.name})" if png is not None else f"No picture: {why_no_png}."
    return picture + "\n\n" + "\n".join(lines)


def write_png(points: list[dict[str, float]], target: Path, title: str) -> Optional[str]:
    """Draw dev F1e and F1c against minutes (or steps) into ``target``; None, or why it could not."""
    if not points:
        return "no validation scores"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'ner_lit[plots]')"
    has_minutes = all("minutes" in p for p in points)
    xs = [p["minutes"] if has_minutes else p["step"] for p in points]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    try:
        ax.plot(xs, [p["F1e"] for p in points], marker="o", label="dev F1e (entities)")
        ax.plot(xs, [p["F1c"] for p in points], marker="s", label="dev F1c (characters)")
        ax.set_xlabel("minutes of training" if has_minutes else "optimizer steps")
        ax.set_ylabel("macro F1")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        with atomic_writer(target, "wb") as f:
            fig.savefig(f, format="png")
    finally:
        plt.close(fig)
    return None
