"""The optimizer step's share of a training step, per AdamW implementation (``--model.adamw``).

Lightning fits of configs/me5.yaml's model and hyperparameters (multilingual-e5-small, frozen
word embeddings, head rate 2e-3, gradient clipping at 1.0, batch 16, max_length 128, fp32) on
the same KLUE train batches, one fit per implementation, in the order fused, foreach, for_loop
and back again (``--rounds``), so the machine's drift hits all three alike. Per step, callbacks
time forward + backward (batch start to ``on_before_optimizer_step``) and the optimizer part
(from there to the batch's end: clipping and ``optimizer.step``); medians over the steps after
the warm-up.

    python bench/adamw_step.py [--steps 20] [--warmup 5] [--rounds 2] [--layer-decay 0.9] [--word-embeddings]
                               [--implementations fused foreach for_loop] [--quick]

``--layer-decay F`` adds a fit to each round, fused AdamW with ``--model.layer_decay F``
(per-layer parameter groups), and records what the groups add to a step. ``--word-embeddings``
adds two, fused AdamW with the word embeddings trained: row by row
(``--model.sparse_word_embeddings true``: a sparse gradient and its own lazy Adam) and dense
(``--model.freeze_word_embeddings false``: AdamW over the whole table); the table's own step
then counts in the optimizer part. ``--implementations fused`` leaves the other two out.

``--quick`` uses the tiny reference model and a few steps (a smoke test; the figures mean nothing).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402

IMPLEMENTATIONS = ("fused", "foreach", "for_loop")


def step_clock():
    """A callback timing, per training step, forward + backward and clipping + the optimizer step."""
    from lightning.pytorch.callbacks import Callback

    class StepClock(Callback):
        def __init__(self) -> None:
            self.backward: list[float] = []
            self.optimizer: list[float] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self._start = time.perf_counter()

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            self._after_backward = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            end = time.perf_counter()
            self.backward.append(self._after_backward - self._start)
            self.optimizer.append(end - self._after_backward)

    return StepClock()


def fit(args, model_dir: Path, adamw: str, **settings: Any) -> dict[str, float]:
    """One fit with this AdamW implementation (and ``settings`` unlike the recipe's): medians over the steps after the warm-up."""
    import lightning.pytorch as pl

    pl.seed_everything(common.SEED, verbose=False)
    dm = common.make_datamodule(args, model_dir, batch_size=16)
    rates = common.recipe(common.REPO / "configs" / "me5.yaml")["model"]  # the rates change no cost, but stay the recipe's
    model = common.make_model(model_dir, **{"learning_rate": rates["learning_rate"], "head_learning_rate": rates["head_learning_rate"],
                                            "freeze_word_embeddings": True, "adamw": adamw, **settings})
    clock = step_clock()
    trainer = common.pl_trainer(max_steps=args.warmup + args.steps, limit_val_batches=0, gradient_clip_val=1.0,
                                callbacks=[clock])
    trainer.fit(model, datamodule=dm)
    backward, optimizer = clock.backward[args.warmup:], clock.optimizer[args.warmup:]
    step = [b + o for b, o in zip(backward, optimizer)]
    return {"forward_backward_s": common.median(backward), "optimizer_s": common.median(optimizer),
            "step_s": common.median(step), "optimizer_share": common.median([o / s for o, s in zip(optimizer, step)])}


LAYER_DECAY = "fused_layer_decay"
#: The word-embedding variants (``--word-embeddings``): their settings unlike the recipe's frozen table.
EMBEDDINGS = {"fused_sparse_embeddings": {"freeze_word_embeddings": False, "sparse_word_embeddings": True},
              "fused_trained_embeddings": {"freeze_word_embeddings": False}}


def variants(args) -> dict[str, dict[str, Any]]:
    """Each fit of a round by name: its AdamW implementation and settings."""
    out: dict[str, dict[str, Any]] = {name: {"adamw": name} for name in args.implementations}
    if args.layer_decay:
        out[LAYER_DECAY] = {"adamw": "fused", "layer_decay": args.layer_decay}
    if args.word_embeddings:
        out.update({name: {"adamw": "fused", **settings} for name, settings in EMBEDDINGS.items()})
    return out


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per implementation (and the layer-decay variant), the median of its fits' figures."""
    summary = {}
    for adamw in dict.fromkeys(run["adamw"] for run in runs):
        mine = [run for run in runs if run["adamw"] == adamw]
        summary[adamw] = {k: round(common.median([run[k] for run in mine]), 4)
                          for k in ("forward_backward_s", "optimizer_s", "step_s", "optimizer_share")}
    return summary


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per fit")
    ap.add_argument("--warmup", type=int, default=5, help="steps per fit before the timed ones")
    ap.add_argument("--rounds", type=int, default=2, help="fits per implementation (orders alternate)")
    ap.add_argument("--layer-decay", type=float, default=None,
                    help="also fit fused AdamW with --model.layer_decay F (per-layer groups) in every round")
    ap.add_argument("--word-embeddings", action="store_true",
                    help="also fit fused AdamW with the word embeddings trained row by row (sparse) and dense, in every round")
    ap.add_argument("--implementations", nargs="+", choices=IMPLEMENTATIONS, default=list(IMPLEMENTATIONS),
                    help="the AdamW implementations fitted with the recipe's frozen table (default: all three)")
    ap.add_argument("--cache", type=Path, default=None, help="the pretrained-me5 build tool's wheel cache")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.warmup, args.rounds = 2, 1, 1
    common.quiet()
    model_dir = common.reference_model(args) if args.quick else common.me5_dir(args)
    record = common.start_record("adamw_step", args)
    runs: list[dict] = []
    for r in range(args.rounds):
        names = list(variants(args))
        for adamw in (names if r % 2 == 0 else names[::-1]):
            result = fit(args, model_dir, **variants(args)[adamw])
            runs.append({"adamw": adamw, "round": r, **{k: round(v, 4) for k, v in result.items()}})
            print(json.dumps(runs[-1]))
    summary = summarize(runs)
    record.update(model=str(model_dir), setting={"batch_size": 16, "max_length": common.MAX_LENGTH, "precision": "fp32",
                                                 "gradient_clip_val": 1.0, "freeze_word_embeddings": True,
                                                 "warmup_steps": args.warmup, "timed_steps": args.steps,
                                                 "rounds": args.rounds, "layer_decay": args.layer_decay},
                  runs=runs, summary=summary)
    if {"for_loop", "fused"} <= set(summary):
        record["optimizer_speedup_fused_over_for_loop"] = round(summary["for_loop"]["optimizer_s"] / summary["fused"]["optimizer_s"], 2)
    if args.word_embeddings and "fused" in summary:
        record["step_over_frozen"] = {name: round(summary[name]["step_s"] / summary["fused"]["step_s"], 2) for name in EMBEDDINGS}
    if args.layer_decay and "fused" in summary:
        record["layer_decay_adds_to_the_optimizer_part_s"] = round(summary[LAYER_DECAY]["optimizer_s"]
                                                                   - summary["fused"]["optimizer_s"], 4)
    print(json.dumps(summary, indent=2))
    common.write_record(record, args)


if __name__ == "__main__":
    main()
