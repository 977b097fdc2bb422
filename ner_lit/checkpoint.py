"""What makes a ner_lit checkpoint self-contained, and finding "best" and "last".

Lightning's checkpoint holds the weights and the init arguments. A model built from a
hub id, or a tokenizer trained at run time, would still need the hub or the training data
to be rebuilt, so ``NERModel.on_save_checkpoint`` adds a ``"ner_lit"`` section: the
labels, the Hugging Face model config, the tokenizer's files (as text) and the window
settings. ``test``, ``validate``, ``predict`` and ``serve`` rebuild everything from it.

The section holds only str/int/float/list/dict, so ``torch.load(weights_only=True)``
reads it (LightningCLI itself loads checkpoints that way).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

SECTION = "ner_lit"
FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or not ner_lit's."""


def tokenizer_files(tokenizer) -> dict[str, str]:
    """The files ``save_pretrained`` writes for a tokenizer, as text."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        return {p.name: p.read_text(encoding="utf-8") for p in sorted(Path(tmp).iterdir()) if p.is_file()}


def materialize_tokenizer(files: dict[str, str], cache_dir: str | Path | None = None) -> Path:
    """Write tokenizer files to a content-addressed directory (reused across runs) and return it."""
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(cache_dir) if cache_dir else default_cache_dir() / "tokenizers"
    target = root / digest
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    for name, text in files.items():
        (tmp / name).write_text(text, encoding="utf-8")
    try:
        os.replace(tmp, target)
    except OSError:  # another process won the race: its copy is identical
        for p in tmp.iterdir():
            p.unlink()
        tmp.rmdir()
    return target


def default_cache_dir() -> Path:
    return Path(os.environ.get("NER_LIT_CACHE", Path.home() / ".cache" / "ner_lit"))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint on the CPU and check that it is ner_lit's."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # torch raises many kinds for a damaged or foreign file
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or SECTION not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(
            f"{path}: not a ner_lit checkpoint (it has no '{SECTION}' section with labels, model config and "
            "tokenizer); pass a .ckpt written by `python -m ner_lit fit`"
        )
    return ckpt


def payload(path: str | Path) -> dict[str, Any]:
    return load_checkpoint(path)[SECTION]


_VERSION = re.compile(r"^version_(\d+)$")


def run_dirs(root: str | Path) -> list[Path]:
    """The ``version_N`` run directories under a root, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _VERSION.match(p.name))]
    return [p for _, p in sorted(found)]


def resolve_checkpoint(spec: str, root: str | Path) -> Path:
    """Turn ``best``/``last`` (or a path) into a checkpoint file.

    ``root`` is either one run directory (``.../version_3``) or the directory holding the
    runs (``trainer.default_root_dir``), in which case the newest run with checkpoints is
    used. ``best`` is the file that ModelCheckpoint recorded as best in the run's
    ``last.ckpt`` (the callback's own state, so it is what the monitor chose).
    """
    if spec not in ("best", "last"):
        path = Path(spec)
        if not path.is_file():
            raise CheckpointError(f"{path}: no such checkpoint file")
        return path
    root = Path(root)
    candidates = [root] if (root / "checkpoints").is_dir() else list(reversed(run_dirs(root)))
    for run in candidates:
        last = run / "checkpoints" / "last.ckpt"
        if not last.is_file():
            continue
        if spec == "last":
            return last
        ckpt = load_checkpoint(last)
        for key, state in ckpt.get("callbacks", {}).items():
            if key.startswith("ModelCheckpoint") and isinstance(state, dict) and state.get("best_model_path"):
                recorded = Path(state["best_model_path"])
                # The file beside last.ckpt first: a run directory that was moved or copied
                # records the path it had when it was written.
                for best in (last.parent / recorded.name, recorded):
                    if best.is_file():
                        return best
        raise CheckpointError(f"{last}: ModelCheckpoint recorded no best checkpoint in this run")
    raise CheckpointError(
        f"no run with checkpoints/last.ckpt under {root}: train first (`python -m ner_lit fit --config ...`) "
        "or pass a checkpoint file"
    )
