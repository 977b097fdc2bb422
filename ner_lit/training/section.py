"""The ``ner_lit`` section NERModel writes into every checkpoint, and reads back without a Trainer.

The section is the tagger's spec (:class:`~ner_lit.checkpoint.spec.TaggerSpec`, with the
validation scores of the moment), the monitored score ``--ckpt_path best`` picks by, and the
digest of the weights as written, so that a damaged file is refused rather than loaded.
"""
from __future__ import annotations

from typing import Any, Optional

from ner_lit.checkpoint.format import CheckpointError, weights_digest
from ner_lit.checkpoint.spec import SECTION, SpecError, TaggerSpec


def write_section(checkpoint: dict[str, Any], spec: TaggerSpec, trainer: Any, crf: Optional[tuple] = None) -> None:
    """Put the section into ``checkpoint`` (its ``state_dict`` already there); ``trainer`` may be None.

    ``crf``: a CRF head's current (transitions, start) scores, recorded in the spec so that
    ``predict``, ``serve`` and exported directories decode with them.
    """
    metrics = trainer.callback_metrics if trainer is not None else {}
    spec = spec.with_scores({k: float(v) for k, v in metrics.items() if k.startswith("val_")})
    if crf is not None:
        spec = spec.with_crf(*crf)
    checkpoint[SECTION] = {
        **spec.to_dict(),
        "monitor": monitor_record(trainer, metrics),
        # Last, over the weights as they are written: load_checkpoint refuses a file whose tensors differ.
        "weights_sha256": weights_digest(checkpoint["state_dict"]),
    }


def monitor_record(trainer: Any, metrics: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The monitored score a checkpoint is saved with: ``--ckpt_path best`` picks by it."""
    callback = trainer.checkpoint_callback if trainer is not None else None
    name = getattr(callback, "monitor", None)
    if not name:
        return None
    score = metrics.get(name)
    return {"name": name, "mode": getattr(callback, "mode", "max"), "score": None if score is None else float(score)}


def read_section(checkpoint: dict[str, Any], where: str = "the checkpoint") -> TaggerSpec:
    """The checkpoint's spec, after the checks ``test``/``serve`` run on a file: the section is whole
    and of a known format, and the weights are the ones it was written with."""
    section = checkpoint.get(SECTION)
    try:
        spec = TaggerSpec.from_dict(section, where)
    except SpecError as exc:
        raise CheckpointError(str(exc)) from None
    recorded = section.get("weights_sha256")
    if recorded is not None and weights_digest(checkpoint["state_dict"]) != recorded:
        raise CheckpointError(f"{where}: its weights do not match the digest recorded when it was written "
                              "(the file is damaged)")
    return spec
