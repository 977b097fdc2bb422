"""bf16-mixed vs 32-true on this CPU: training throughput (same run, interleaved) and dev F1 after training.

* CPU facts: oneDNN (mkldnn) availability, the ISA torch dispatches to, bf16 support as
  oneDNN reports it, AMX / AVX512-BF16 flags, and the dense matmul rate of fp32 vs bf16
  (2048x2048) measured here.
* Throughput: ``lightning.Trainer(precision=...)`` on the reference setting, rounds interleaved
  (32-true, bf16-mixed, 32-true, ...), median sentences/s (same clock as train_throughput.py).
* Accuracy: ``python -m ner_lit fit --config configs/reference.yaml --trainer.precision P`` for
  ``--epochs`` epochs (3 = the reference; the 32-true figure is then taken from
  bench/results/accuracy.json when that has the main run, which is the same command).

    python bench/precision.py [--epochs 3] [--rounds 3] [--no-fit] [--quick]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402

PRECISIONS = ("32-true", "bf16-mixed")


def cpu_facts() -> dict:
    import torch

    _, flags = common.cpu_flags()
    facts = {
        "mkldnn_available": torch.backends.mkldnn.is_available(),
        "mkldnn_enabled": torch.backends.mkldnn.enabled,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "amx_flags": sorted(f for f in flags if f.startswith("amx")),
        "avx512_bf16": "avx512_bf16" in flags,
        "avx512_fp16": "avx512_fp16" in flags,
    }
    for name in ("_is_mkldnn_bf16_supported", "_is_mkldnn_fp16_supported", "_is_mkldnn_acl_supported"):
        try:
            facts[name.strip("_")] = bool(getattr(torch.ops.mkldnn, name)())
        except Exception as exc:  # not every build has every probe
            facts[name.strip("_")] = f"n/a ({type(exc).__name__})"
    return facts


def fit(args, precision: str, model_dir: Path) -> dict:
    root = common.WORK / ("quick-precision" if args.quick else "precision") / precision
    cmd = [sys.executable, "-m", "ner_lit", "fit"] + common.reference_fit_args(args, model_dir, root)
    cmd += ["--trainer.precision", precision]
    if not args.quick:
        cmd += ["--trainer.max_epochs", str(args.epochs)]
    wall, version = common.run_fit(cmd, root, f"precision {precision}")
    epochs = common.per_epoch(version)
    return {"fit_wall_s": wall, "per_epoch": epochs, "final": epochs[-1], "source": "this run"}


def previous(args) -> dict:
    """The precision.json an earlier run wrote, if any."""
    path = common.results_dir(args) / "precision.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def throughput(args, model_dir: Path) -> dict:
    """CPU facts, matmul rates and training sentences/s per precision, rounds interleaved."""
    from bench import systems

    out: dict = {"cpu": cpu_facts()}
    # Without native bf16 a bf16 matmul is emulated and far too slow to time: skip it (recorded as None).
    native_bf16 = out["cpu"].get("is_mkldnn_bf16_supported") is True
    out["matmul_gflops_2048"] = {dt: common.matmul_gflops(dtype=dt, repeats=8) if dt == "float32" or native_bf16
                                 else None for dt in ("float32", "bfloat16")}
    rounds: dict[str, list[dict]] = {p: [] for p in PRECISIONS}
    for r in range(args.rounds):
        for p in PRECISIONS:
            clock = systems.Clock()
            systems.ner_lit_train(args, model_dir, args.warmup + args.window, clock, precision=p, seed=common.SEED + r)
            rounds[p].append(clock.window(args.warmup))
        print(f"round {r}: " + ", ".join(f"{p} {v[-1]['sentences_per_s']:.1f}/s" for p, v in rounds.items()), flush=True)
    med = {p: common.median([x["sentences_per_s"] for x in v]) for p, v in rounds.items()}
    out.update({"setting": {"rounds": args.rounds, "warmup_steps": args.warmup, "timed_steps": args.window,
                            "epochs": 1 if args.quick else args.epochs},
                "sentences_per_s": med, "rounds": rounds, "bf16_speedup": med["bf16-mixed"] / med["32-true"]})
    return out


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--window", type=int, default=60)
    ap.add_argument("--no-fit", action="store_true", help="throughput and CPU facts only")
    ap.add_argument("--fit-only", action="store_true",
                    help="the training runs only (kept with an earlier run's throughput figures in precision.json)")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.warmup, args.window, args.no_fit = 1, 1, 2, True
    common.quiet()
    record = common.start_record("precision", args)
    model_dir = common.reference_model(args)
    old = previous(args)
    if args.fit_only:
        if old:
            record.update({k: v for k, v in old.items() if k not in ("accuracy", "bf16_minus_fp32", "machine", "date", "command")})
            record["throughput_measured"] = {"date": old.get("date"), "command": old.get("command"), "machine": old.get("machine")}
        fit_all(args, record, model_dir)
        return
    if args.no_fit:  # throughput only: keep the earlier training runs
        record.update({k: old[k] for k in ("accuracy", "bf16_minus_fp32") if k in old})
    record.update(throughput(args, model_dir))
    common.write_record(record, args)
    if not args.no_fit:
        fit_all(args, record, model_dir)


def fit_all(args, record: dict, model_dir: Path) -> None:
    accuracy = dict(record.get("accuracy") or {})
    acc_json = common.results_dir(args) / "accuracy.json"
    for p in ("bf16-mixed", "32-true"):  # fp32 last: by then accuracy.py's main run (the same command) may exist
        if p == "32-true" and args.epochs == 3 and not args.quick and acc_json.is_file():
            main_run = json.loads(acc_json.read_text()).get("runs", {}).get("main")
            if main_run:
                accuracy[p] = {"fit_wall_s": main_run["fit_wall_s"], "per_epoch": main_run["per_epoch"],
                               "final": main_run["final"], "source": "bench/results/accuracy.json (main run, same command)"}
                continue
        print(f"fit {p} ...", flush=True)
        accuracy[p] = fit(args, p, model_dir)
        record["accuracy"] = accuracy
        common.write_record(record, args)
    record["accuracy"] = accuracy
    if "bf16-mixed" not in accuracy or "32-true" not in accuracy:
        return
    d = {m: accuracy["bf16-mixed"]["final"][m] - accuracy["32-true"]["final"][m] for m in ("F1c", "F1e")}
    record["bf16_minus_fp32"] = d
    common.write_record(record, args)


if __name__ == "__main__":
    main()
