"""What makes a ner_lit checkpoint self-contained, and finding "best" and "last".

Lightning's checkpoint holds the weights and the init arguments. A model built from a
hub id, or a tokenizer trained at run time, would still need the hub or the training data
to be rebuilt, so ``NERModel.on_save_checkpoint`` adds a ``"ner_lit"`` section: the
model's :class:`~ner_lit.spec.TaggerSpec` (labels, Hugging Face model config, tokenizer
files as text, window settings, decoding, scores, provenance). ``test``, ``validate``,
``predict`` and ``serve`` rebuild everything from it.

The section holds only str/int/float/list/dict, so ``torch.load(weights_only=True)``
reads it (LightningCLI itself loads checkpoints that way): loading a checkpoint runs no
code from it. The section also records the monitored score the file was saved with
(``--ckpt_path best`` picks by it) and a sha256 digest of the weights, which
:func:`load_checkpoint` compares, together with the label list against the classifier and
the tokenizer files, before anything is built from the file.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from ner_lit.resources import cache_root
from ner_lit.spec import FORMAT as FORMAT
from ner_lit.spec import SECTION as SECTION
from ner_lit.spec import TOKENIZER_FILES as TOKENIZER_FILES
from ner_lit.spec import SpecError, TaggerSpec, check_format


class CheckpointError(SpecError):
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
    return cache_root()


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor of a state dict: names, dtypes, shapes and bytes, in name order.

    Stored in the ``ner_lit`` section when a checkpoint is written and compared when it is
    read, so that damaged weights (a flipped byte inside a tensor still unpickles) are
    refused instead of training or serving on with NaNs.
    """
    h = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name]
        if not isinstance(tensor, torch.Tensor):
            continue
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{name}\0{flat.dtype}\0{tuple(tensor.shape)}\0".encode())
        h.update(memoryview(flat.view(torch.uint8).numpy()))
    return h.hexdigest()


def _check_spec(section: dict[str, Any], path: Path, verify: bool) -> None:
    """The section's format first (a newer file is refused before anything else is read), then, with
    ``verify``, the whole record: labels against the model config, tokenizer files, windows."""
    try:
        check_format(section.get("format"), str(path))
        if verify:
            TaggerSpec.from_dict(section, str(path))
    except CheckpointError:
        raise
    except SpecError as exc:
        raise CheckpointError(str(exc)) from None


def _check_weights_fit(ckpt: dict[str, Any], path: Path) -> None:
    """Every tensor of the checkpoint must have the shape the model config gives it (checked on the meta device).

    A wrong classifier (labels of one run, head of another) would otherwise surface as a
    traceback from ``load_state_dict`` in test/predict/fit, or as answers that fail at serving time.
    """
    from transformers import AutoConfig, AutoModelForTokenClassification

    try:
        config = AutoConfig.for_model(**ckpt[SECTION]["model_config"])
        with torch.device("meta"):
            expected = AutoModelForTokenClassification.from_config(config).state_dict()
    except Exception as exc:  # noqa: BLE001 - an unknown model type or a config transformers rejects
        raise CheckpointError(f"{path}: its model config does not build a model ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200]})") from None
    weights = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    wrong = [f"{k} {tuple(v.shape)} (the config gives {tuple(expected[k].shape)})"
             for k, v in weights.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    missing = [k for k in expected if k not in weights and not k.endswith("position_ids")]
    unexpected = [k for k in weights if k not in expected]
    if wrong or missing or unexpected:
        parts = [f"{len(wrong)} with the wrong shape, e.g. {wrong[0]}" if wrong else "",
                 f"{len(missing)} missing, e.g. {missing[0]}" if missing else "",
                 f"{len(unexpected)} unexpected, e.g. {unexpected[0]}" if unexpected else ""]
        raise CheckpointError(f"{path}: its weights do not fit its model config: {'; '.join(p for p in parts if p)}")


def _check_digest(ckpt: dict[str, Any], path: Path) -> None:
    recorded = ckpt[SECTION].get("weights_sha256")
    if recorded is None:
        print(f"ner_lit: note: {path} carries no weights digest (written by an older ner_lit): "
              "its weights are loaded unverified", file=sys.stderr)
        return
    if weights_digest(ckpt["state_dict"]) != recorded:
        raise CheckpointError(
            f"{path}: its weights do not match the digest recorded when it was written (the file is damaged); "
            "use another checkpoint of the run"
        )


def load_checkpoint(path: str | Path, verify: bool = True) -> dict[str, Any]:
    """Load a checkpoint on the CPU and check that it is a whole, consistent ner_lit checkpoint.

    ``weights_only=True`` keeps loading safe for files of unknown origin (no code runs). With
    ``verify`` the weights' digest, the label list against the classifier and the tokenizer
    files are checked here, so that every user of a checkpoint (test, predict, serve, resume)
    fails on a bad one with one line naming the file, before a model is built.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # torch raises many kinds for a damaged or foreign file
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get(SECTION), dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(
            f"{path}: not a ner_lit checkpoint (it has no '{SECTION}' section with labels, model config and "
            "tokenizer); pass a .ckpt written by `python -m ner_lit fit`"
        )
    _check_spec(ckpt[SECTION], path, verify)
    if verify:
        _check_digest(ckpt, path)
        _check_weights_fit(ckpt, path)
    return ckpt


def spec_of(path: str | Path) -> TaggerSpec:
    """The tagger spec of a checkpoint file, after every check of :func:`load_checkpoint`."""
    return TaggerSpec.from_dict(load_checkpoint(path)[SECTION], str(path))


_VERSION = re.compile(r"^version_(\d+)$")
_LAST = re.compile(r"^last(-v\d+)?\.ckpt$")
#: Marks the temporary file a checkpoint is written to before it is renamed into place:
#: ``.<name>.ner_lit-tmp.<pid>`` beside the final file (see :mod:`ner_lit.ckpt_io`).
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
