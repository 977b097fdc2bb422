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
import sys
from pathlib import Path
from typing import Any

import torch

from ner_lit.checkpoint.spec import FORMAT as FORMAT
from ner_lit.checkpoint.spec import SECTION as SECTION
from ner_lit.checkpoint.spec import TOKENIZER_FILES as TOKENIZER_FILES
from ner_lit.checkpoint.spec import SpecError, TaggerSpec, check_format


class CheckpointError(SpecError):
    """A checkpoint that is missing, unreadable or not ner_lit's."""


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


def check_weights_digest(ckpt: dict[str, Any], path: str | Path) -> None:
    """A :class:`CheckpointError` where the weights do not match the digest recorded when they were written."""
    _check_digest(ckpt, Path(path))


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
