"""Where a ner_lit training step and an evaluation pass spend their time, and the FLOP rate achieved.

* torch.profiler over a few training steps (Lightning fit: data loading, forward, backward,
  optimizer) and over one full dev evaluation (``trainer.validate``): top ops by self CPU time
  (JSON + text tables in bench/results/profile_step.txt).
* Achieved FLOP rate of training: forward+backward FLOPs of the real batches of a timed window
  (``torch.utils.flop_counter.FlopCounterMode`` on the same batch shapes) divided by the
  window's wall time, vs this machine's dense fp32 matmul rate measured in the same run
  (2048x2048 ``torch.mm``, and a matmul of the model's own FFN shape), before and after.

    python bench/profile_step.py [--steps 30] [--quick]
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402

TARGET_FRACTION = 0.40
MATMUL_OPS = ("aten::addmm", "aten::mm", "aten::bmm", "aten::matmul", "aten::linear", "aten::baddbmm",
              "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_scaled_dot_product_flash_attention_for_cpu_backward")


def top_ops(prof, n: int = 10) -> tuple[list[dict], str, float]:
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    rows = sorted(events, key=lambda e: -e.self_cpu_time_total)
    out = [{"op": e.key, "self_cpu_ms": e.self_cpu_time_total / 1000, "self_cpu_pct": 100 * e.self_cpu_time_total / total,
            "cpu_total_ms": e.cpu_time_total / 1000, "calls": e.count} for e in rows[:n]]
    matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS) / total
    table = events.table(sort_by="self_cpu_time_total", row_limit=n)
    return out, table, matmul


def probes(warmup: int, steps: int, profile_steps: int):
    """Callbacks: ``TrainProbe`` keeps the batches of the timed window and profiles the steps after it;
    ``EvalProbe`` profiles one validation pass and times it."""
    from lightning.pytorch.callbacks import Callback
    from torch.profiler import ProfilerActivity, profile

    first_prof = warmup + steps

    class TrainProbe(Callback):
        def __init__(self):
            self.batches = []
            self.prof = None
            self.step = 0  # global step (batch_idx restarts every epoch)

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if self.step == first_prof:
                self.prof = profile(activities=[ProfilerActivity.CPU])
                self.prof.__enter__()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if warmup <= self.step < first_prof:
                self.batches.append({k: batch[k].clone() for k in ("input_ids", "attention_mask", "labels")})
            if self.step == first_prof + profile_steps - 1:
                self.prof.__exit__(None, None, None)
            self.step += 1

    class EvalProbe(Callback):
        def on_validation_start(self, trainer, pl_module):
            self.prof = profile(activities=[ProfilerActivity.CPU])
            self.t = time.perf_counter()
            self.prof.__enter__()

        def on_validation_end(self, trainer, pl_module):
            self.prof.__exit__(None, None, None)
            self.t = time.perf_counter() - self.t

    return TrainProbe(), EvalProbe()


def window_flops(net, batches: list[dict]) -> tuple[int, int]:
    """Forward + backward FLOPs, and forward FLOPs alone, of ``net`` on the very ``batches`` of the timed window."""
    from torch.utils.flop_counter import FlopCounterMode

    net.train()
    flops = fwd_flops = 0
    for b in batches:
        with FlopCounterMode(display=False) as fc:
            out = net(**b)
        fwd_flops += fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            out.loss.backward()
        flops += fc.get_total_flops()
        net.zero_grad(set_to_none=True)
    return flops + fwd_flops, fwd_flops


def matmul_rates() -> tuple[float, float]:
    """FLOP/s of a 2048x2048 fp32 matmul and of one of the reference model's FFN shape."""
    return common.matmul_gflops() * 1e9, common.matmul_gflops(m=32 * 40, k=256, n=1024) * 1e9


def why(train_matmul: float, tokens_per_batch: float, ffn: float, peak: float) -> str:
    """Why the FLOP fraction falls short of the target, in the terms the profile gives."""
    return (
        f"matmul-type ops (mm/addmm/bmm/attention) take only {train_matmul:.0%} of the training steps' self CPU time; "
        f"the rest is memory-bound elementwise work (GELU, dropout, LayerNorm and their backward, softmax, the AdamW "
        f"update over all 5.3 M parameters, embedding gradients over the 8,000-row table) that does few FLOPs per byte; and "
        f"the model's matmuls are small (hidden 256, about {tokens_per_batch:.0f} tokens a batch), "
        f"where even a bare matmul of the FFN shape reaches {ffn / 1e9:.0f} GFLOP/s against {peak / 1e9:.0f} for 2048x2048.")


def measure(args, model_dir: Path) -> dict[str, Any]:
    """Train under the probes, count the window's FLOPs, profile one evaluation; matmul rates before and after."""
    from bench import systems

    before = matmul_rates()
    probe, eval_probe = probes(args.warmup, args.steps, args.profile_steps)
    first_prof = args.warmup + args.steps
    clock = systems.Clock()
    _, model, dm = systems.ner_lit_train(args, model_dir, first_prof + args.profile_steps, clock, callbacks=[probe])
    # window: ends of steps warmup-1 .. first_prof-1
    t_window = clock.times[first_prof - 1] - clock.times[args.warmup - 1]
    flops, fwd_flops = window_flops(model.model, probe.batches)
    common.pl_trainer(callbacks=[eval_probe]).validate(model, datamodule=dm, verbose=False)
    after = matmul_rates()
    return {"probe": probe, "eval_probe": eval_probe, "t_window": t_window, "flops": flops, "fwd_flops": fwd_flops,
            "before": before, "after": after}


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--steps", type=int, default=30, help="timed steps (FLOP rate window)")
    ap.add_argument("--profile-steps", type=int, default=3)
    args = ap.parse_args()
    if args.quick:
        args.warmup, args.steps, args.profile_steps = 1, 2, 1
    common.quiet()
    record = common.start_record("profile_step", args)
    m = measure(args, common.reference_model(args))
    probe, ep = m["probe"], m["eval_probe"]
    train_ops, train_table, train_matmul = top_ops(probe.prof)
    eval_ops, eval_table, eval_matmul = top_ops(ep.prof)
    achieved = m["flops"] / m["t_window"]
    peak = common.median([m["before"][0], m["after"][0]])
    ffn = common.median([m["before"][1], m["after"][1]])
    frac = achieved / peak
    n_tok = sum(int(b["input_ids"].numel()) for b in probe.batches)
    record.update({
        "setting": {"warmup_steps": args.warmup, "timed_steps": args.steps, "profiled_train_steps": args.profile_steps,
                    "precision": "fp32", "batch_size": common.BATCH_SIZE},
        "train_window": {"seconds": m["t_window"], "steps": len(probe.batches), "padded_tokens": n_tok,
                         "mean_batch_shape": [common.BATCH_SIZE, n_tok / max(1, len(probe.batches)) / common.BATCH_SIZE],
                         "forward_backward_flops": m["flops"], "forward_flops": m["fwd_flops"]},
        "achieved_gflops": achieved / 1e9,
        "matmul_gflops": {"2048x2048": peak / 1e9, "ffn_shape_1280x256x1024": ffn / 1e9,
                          "before": m["before"][0] / 1e9, "after": m["after"][0] / 1e9},
        "fraction_of_matmul_peak": frac,
        "train_top_ops": train_ops,
        "train_matmul_share_of_self_cpu": train_matmul,
        "eval_seconds_under_profiler": ep.t,
        "eval_top_ops": eval_ops,
        "eval_matmul_share_of_self_cpu": eval_matmul,
        "targets": {"flop_fraction": {"target": f">= {TARGET_FRACTION:.0%} of the 2048x2048 fp32 matmul rate",
                                      "value": frac, "met": frac >= TARGET_FRACTION}},
    })
    if frac < TARGET_FRACTION:
        record["why"] = why(train_matmul, n_tok / max(1, len(probe.batches)), ffn, peak)
    common.write_text(common.results_dir(args) / "profile_step.txt",
                      f"# training steps ({args.profile_steps}), top ops by self CPU time\n{train_table}\n\n"
                      f"# one dev evaluation (trainer.validate), top ops by self CPU time\n{eval_table}\n")
    print(f"achieved {achieved/1e9:.1f} GFLOP/s vs matmul {peak/1e9:.1f} GFLOP/s = {frac:.0%}; matmul share {train_matmul:.0%}")
    common.write_record(record, args)


if __name__ == "__main__":
    main()
