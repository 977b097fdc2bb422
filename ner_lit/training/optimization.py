"""AdamW over a token classifier: its parameter groups, its learning-rate schedule, clipping without a scaler."""
from __future__ import annotations

import math
import re
from typing import Any, Optional

import torch

from ner_lit.training.settings import ADAMW_IMPLEMENTATIONS, OptimizerSettings

#: Parameters AdamW does not decay.
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "LayerNorm.bias")


#: A transformer layer's parameters: ``encoder.layer.3.``, ``transformer.layer.3.``, ``layers.3.`` ...
LAYER = re.compile(r"(?:^|\.)layers?\.(\d+)\.")


def encoder_rates(base: torch.nn.Module, settings: OptimizerSettings) -> dict[int, tuple[int, str, float]]:
    """Each encoder parameter's (depth, group name, peak rate), by ``id``.

    Without ``layer_decay`` all of them share ``learning_rate``. With it, layer k of L runs at
    ``learning_rate * layer_decay ** (L - 1 - k)`` and the embeddings one step below layer 0;
    parameters in neither (a final LayerNorm, a pooler) go with the top layer.
    """
    if settings.layer_decay is None:
        return {id(p): (0, "encoder", settings.learning_rate) for p in base.parameters()}
    named = list(base.named_parameters())
    layer = {name: int(m.group(1)) for name, _ in named if (m := LAYER.search(name))}
    top = max(layer.values(), default=0)
    rates = {}
    for name, p in named:
        if name in layer:
            depth, group = layer[name] + 1, f"layer_{layer[name]}"
        elif name.startswith("embeddings"):
            depth, group = 0, "embeddings"
        else:
            depth, group = top + 1, f"layer_{top}"
        rates[id(p)] = (depth, group, settings.learning_rate * settings.layer_decay ** (top + 1 - depth))
    return rates


def param_groups(model: torch.nn.Module, settings: OptimizerSettings,
                 extra_head: Optional[torch.nn.Module] = None) -> list[dict[str, Any]]:
    """AdamW groups of the trainable parameters: weight decay except on biases and LayerNorms; with
    ``head_learning_rate`` the head (what lies outside ``base_model``) in groups of its own; with
    ``layer_decay`` each encoder layer (and the embeddings) in groups of its own, at its own rate.

    ``extra_head``: parameters outside the network that belong to the head (a CRF's transition
    scores): the head's rate, no weight decay. Frozen parameters are left out, so AdamW keeps no
    state for them. With neither option the groups are the two unnamed ones of earlier runs,
    whose optimizer state still resumes.
    """
    named = settings.head_learning_rate is not None or settings.layer_decay is not None
    head_rate = settings.learning_rate if settings.head_learning_rate is None else settings.head_learning_rate
    head = (1 << 30, "head", head_rate) if named else (0, "encoder", settings.learning_rate)
    encoder = encoder_rates(model.base_model, settings)
    # a table trained row by row has its own optimizer (training.sparse_embeddings)
    apart = {id(model.get_input_embeddings().weight)} if settings.sparse_word_embeddings else set()
    groups: dict[tuple[int, str, float, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad and id(p) not in apart:
            groups.setdefault((*encoder.get(id(p), head), name.endswith(NO_DECAY)), []).append(p)
    if extra_head is not None:
        groups.setdefault((*head, True), []).extend(p for p in extra_head.parameters() if p.requires_grad)
    result = []
    for (_, group_name, rate, plain), params in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][3])):
        group: dict[str, Any] = {"params": params, "weight_decay": 0.0 if plain else settings.weight_decay}
        if named:
            group["name"] = group_name + ("_no_decay" if plain else "")
            group["lr"] = rate
        result.append(group)
    return [g for g in result if g["params"]]


def schedule_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    """The fraction of each group's peak rate at ``step``: step k of a warmup of w runs at (k+1)/(w+1),
    then ``linear`` decays to 0 at ``total``, ``cosine`` follows half a cosine down to 0 at ``total``
    (as the HF Trainer's ``cosine``: slower than linear early, faster late) and ``constant`` stays at 1."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    remaining = max(0.0, (total - step) / max(1, total - warmup))
    if schedule == "cosine":
        return 0.5 * (1.0 - math.cos(math.pi * remaining))
    return remaining


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
    """Clip the gradients of the optimizer's parameters as they are (no loss scaler has scaled them).

    Lightning refuses to clip gradients under mixed precision for an optimizer that could unscale
    them itself (the fused AdamW declares it can), because an fp16 loss scaler's gradients would be
    clipped while still scaled. bf16 has no scaler: the gradients are the true ones, so
    ``NERModel`` clips them here over the optimizer's parameters, as Lightning clips them in fp32.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if algorithm == "value":
        torch.nn.utils.clip_grad_value_(params, value)
    else:
        torch.nn.utils.clip_grad_norm_(params, value)
