"""AdamW over a token classifier: its parameter groups, its learning-rate schedule, clipping without a scaler."""
from __future__ import annotations

from typing import Any, Optional

import torch

from ner_lit.training.settings import ADAMW_IMPLEMENTATIONS, OptimizerSettings

#: Parameters AdamW does not decay.
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "LayerNorm.bias")


def param_groups(model: torch.nn.Module, settings: OptimizerSettings,
                 extra_head: Optional[torch.nn.Module] = None) -> list[dict[str, Any]]:
    """AdamW groups of the trainable parameters: weight decay except on biases and LayerNorms, and
    with ``head_learning_rate`` the head (what lies outside ``base_model``) in groups of its own.

    ``extra_head``: parameters outside the network that belong to the head (a CRF's transition
    scores): the head's rate, no weight decay. Frozen parameters are left out, so AdamW keeps no
    state for them. Without a head rate the groups are the two unnamed ones of earlier runs,
    whose optimizer state still resumes.
    """
    encoder = {id(p) for p in model.base_model.parameters()}
    split_head = settings.head_learning_rate is not None
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            head = split_head and id(p) not in encoder
            groups.setdefault((head, name.endswith(NO_DECAY)), []).append(p)
    if extra_head is not None:
        groups.setdefault((split_head, True), []).extend(p for p in extra_head.parameters() if p.requires_grad)
    result = []
    for head in ((False, True) if split_head else (False,)):
        for plain in (False, True):
            group: dict[str, Any] = {"params": groups.get((head, plain), []),
                                     "weight_decay": 0.0 if plain else settings.weight_decay}
            if split_head:
                group["name"] = ("head" if head else "encoder") + ("_no_decay" if plain else "")
                group["lr"] = settings.head_learning_rate if head else settings.learning_rate
            result.append(group)
    return [g for g in result if g["params"]]


def schedule_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    """The fraction of each group's peak rate at ``step``: step k of a warmup of w runs at (k+1)/(w+1),
    then ``linear`` decays to 0 at ``total`` and ``constant`` stays at 1."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    return max(0.0, (total - step) / max(1, total - warmup))


def configure_adamw(model: torch.nn.Module, settings: OptimizerSettings, total_steps: int,
                    extra_head: Optional[torch.nn.Module] = None) -> dict[str, Any]:
    """What ``configure_optimizers`` returns: AdamW and its schedule, stepped every optimizer step."""
    optimizer = torch.optim.AdamW(param_groups(model, settings, extra_head), lr=settings.learning_rate, eps=settings.adam_epsilon,
                                  **ADAMW_IMPLEMENTATIONS[settings.adamw])
    total = max(1, int(total_steps))
    warmup = int(total * settings.warmup_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(  # one factor, every group's own peak
        optimizer, lambda step: schedule_factor(step, warmup, total, settings.schedule))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def clip_unscaled(optimizer: torch.optim.Optimizer, value: float, algorithm: Optional[str]) -> None:
    """Clip the gradients of the optimizer's parameters as they are (no loss scaler has scaled them)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if algorithm == "value":
        torch.nn.utils.clip_grad_value_(params, value)
    else:
        torch.nn.utils.clip_grad_norm_(params, value)
