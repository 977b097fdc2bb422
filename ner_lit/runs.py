"""Where each command writes, so that runs stay tidy.

``fit`` makes a new ``version_N`` under ``trainer.default_root_dir``. ``test``, ``validate``
and ``predict`` make no run of their own: they write beside the checkpoint they scored,
in ``<run>/<subcommand>/<checkpoint stem>/<data file stem>/`` (``<run>`` is the folder
holding ``checkpoints/``; a checkpoint outside a run gets the folder beside it). Without
a checkpoint they write under ``<default_root_dir>/<subcommand>/no_checkpoint/<data stem>/``.
Running the same evaluation again writes into the same folder.

A command that fails removes the folders it created, unless they hold a checkpoint.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

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
