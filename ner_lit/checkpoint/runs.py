"""Run folders: where each command writes, and which checkpoint ``best`` and ``last`` name.

``fit`` makes a new ``version_N`` under ``trainer.default_root_dir``. ``test``, ``validate``
and ``predict`` make no run of their own: they write beside the checkpoint they scored,
in ``<run>/<subcommand>/<checkpoint stem>/<data file stem>/`` (``<run>`` is the folder
holding ``checkpoints/``; a checkpoint outside a run gets the folder beside it). Without
a checkpoint they write under ``<default_root_dir>/<subcommand>/no_checkpoint/<data stem>/``.
Running the same evaluation again writes into the same folder.

A command that fails removes the folders it created, unless they hold a checkpoint.

``--ckpt_path best`` and ``last`` are resolved here too: ``best`` is the checkpoint with the
highest monitored score recorded in its ``ner_lit`` section across the runs under a root,
``last`` the newest ``last.ckpt``.
"""
from __future__ import annotations

import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ner_lit.checkpoint.format import CheckpointError
from ner_lit.checkpoint.spec import FORMAT as FORMAT
from ner_lit.checkpoint.spec import SECTION as SECTION
from ner_lit.checkpoint.spec import TOKENIZER_FILES as TOKENIZER_FILES

_VERSION = re.compile(r"^version_(\d+)$")

_LAST = re.compile(r"^last(-v\d+)?\.ckpt$")


#: Marks the temporary file a checkpoint is written to before it is renamed into place:
#: ``.<name>.ner_lit-tmp.<pid>`` beside the final file (see :mod:`ner_lit.checkpoint.io`).
TEMP_MARK = ".ner_lit-tmp."


def run_dirs(root: str | Path) -> list[Path]:
    """The ``version_N`` run directories under a root, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _VERSION.match(p.name))]
    return [p for _, p in sorted(found)]


def is_temp_file(path: Path) -> bool:
    """Whether ``path`` is one of ner_lit's temporary checkpoint files (never a checkpoint to use)."""
    return path.name.startswith(".") and TEMP_MARK in path.name


def checkpoint_files(run: Path) -> list[Path]:
    """The finished checkpoints of a run directory (temporary files left by a kill are not among them)."""
    folder = run / "checkpoints"
    return sorted(p for p in folder.glob("*.ckpt") if p.is_file() and not is_temp_file(p)) if folder.is_dir() else []


@dataclass(frozen=True)
class Record:
    """What a checkpoint says about itself: the monitored score it was saved with, and when."""

    path: Path
    monitor: str
    mode: str
    score: Optional[float]
    epoch: int
    step: int

    def rank(self) -> tuple[float, int]:
        """Sort key, higher is better: the score in the monitor's direction (missing or NaN last), then the step."""
        if self.score is None or math.isnan(self.score):
            return (-math.inf, self.step)
        return (self.score if self.mode == "max" else -self.score, self.step)


def read_record(path: Path) -> Record:
    """The monitor record of a checkpoint, without verifying its weights (that happens when it is used).

    Checkpoints written before the record existed fall back to their ``val_F1c`` (the CLI's monitor).
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        section = ckpt[SECTION]
    except Exception as exc:  # noqa: BLE001 - unreadable here means unusable as "best"
        raise CheckpointError(f"{path}: not a readable ner_lit checkpoint ({type(exc).__name__})") from None
    monitor = section.get("monitor") or {"name": "val_F1c", "mode": "max",
                                         "score": section.get("scores", {}).get("val_F1c")}
    score = monitor.get("score")
    return Record(path, str(monitor.get("name")), str(monitor.get("mode", "max")),
                  None if score is None else float(score), int(ckpt.get("epoch", -1)), int(ckpt.get("global_step", -1)))


@dataclass(frozen=True)
class Choice:
    """The checkpoint ``best``/``last`` resolved to, and why (printed, so the user sees which run was used)."""

    path: Path
    why: str

    def describe(self, spec: str) -> str:
        return f"--ckpt_path {spec}: {self.path} ({self.why})"


def _best_of(run: Path) -> Optional[Choice]:
    files = [p for p in checkpoint_files(run) if not _LAST.match(p.name)]
    if not files:
        return None
    records, unreadable = [], []
    for p in files:
        try:
            records.append(read_record(p))
        except CheckpointError:
            unreadable.append(p.name)
    if not records:
        raise CheckpointError(f"{run / 'checkpoints'}: none of its checkpoints is readable ({', '.join(unreadable)})")
    best = max(records, key=Record.rank)
    score = "no score" if best.score is None else f"{best.score:.4f}"
    skipped = f"; skipped unreadable {', '.join(unreadable)}" if unreadable else ""
    return Choice(best.path, f"run {run.name}: the highest {best.monitor} ({best.mode}) of {len(records)} "
                             f"checkpoint(s), {score} at epoch {best.epoch}{skipped}")


def _last_of(run: Path) -> Optional[Choice]:
    last = run / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return None
    try:
        record = read_record(last)
        when = f"epoch {record.epoch}, step {record.step}"
    except CheckpointError:
        when = "unreadable"  # loading it says why, naming the file
    return Choice(last, f"run {run.name}: its latest checkpoint, {when}")


def choose_checkpoint(spec: str, root: str | Path) -> Choice:
    """Turn ``best``/``last`` (or a path) into a checkpoint file, saying which and why.

    ``root`` is either one run directory (``.../version_3``) or the directory holding the
    runs (``trainer.default_root_dir``), in which case the newest run with such a checkpoint
    is used. ``best`` is read from the checkpoints themselves: each records the monitored
    score it was saved with, and the highest (or lowest, for a ``min`` monitor) wins, the
    later one on a tie. It does not depend on ``last.ckpt``, which may be older or newer
    than the best one.
    """
    if spec not in ("best", "last"):
        path = Path(spec)
        if not path.is_file():
            raise CheckpointError(f"{path}: no such checkpoint file")
        return Choice(path, "given")
    root = Path(root)
    candidates = [root] if (root / "checkpoints").is_dir() else list(reversed(run_dirs(root)))
    for run in candidates:
        choice = _best_of(run) if spec == "best" else _last_of(run)
        if choice is not None:
            return choice
    wanted = "a checkpoint other than last.ckpt" if spec == "best" else "checkpoints/last.ckpt"
    raise CheckpointError(
        f"no run with {wanted} under {root}: train first (`python -m ner_lit fit --config ...`) "
        "or pass a checkpoint file"
    )


def resolve_checkpoint(spec: str, root: str | Path) -> Path:
    """:func:`choose_checkpoint`'s file."""
    return choose_checkpoint(spec, root).path


def next_version(root: str | Path) -> int:
    """The number ``fit``'s next ``version_N`` folder takes under ``root``."""
    runs = run_dirs(root)
    return int(runs[-1].name.split("_")[1]) + 1 if runs else 0



CHECKPOINTS = "checkpoints"
NO_CHECKPOINT = "no_checkpoint"


def run_of(ckpt: str | Path) -> Path:
    """The run a checkpoint belongs to: the folder above ``checkpoints/``, else the file's own folder."""
    parent = Path(ckpt).parent
    return parent.parent if parent.name == CHECKPOINTS else parent


def evaluation_dir(subcommand: str, ckpt: Optional[str | Path], data_name: Optional[str], root: str | Path) -> Path:
    """The folder ``test``/``validate``/``predict`` write to (see the module docstring)."""
    data = Path(data_name).stem if data_name else "data"
    if ckpt:
        return run_of(ckpt) / subcommand / Path(ckpt).stem / data
    return Path(root) / subcommand / NO_CHECKPOINT / data


def new_folders(path: Path) -> list[Path]:
    """``path`` and those of its parents that do not exist yet (outermost first)."""
    missing = []
    for p in [path, *path.parents]:
        if p.exists():
            break
        missing.append(p)
    return list(reversed(missing))


def remove_if_unneeded(folder: Path) -> None:
    """Remove a folder a failed command created, unless a checkpoint was written in it."""
    if folder.is_dir() and not any(folder.rglob("*.ckpt")):
        shutil.rmtree(folder, ignore_errors=True)
