"""Best dev F1e within 10 minutes of training: ner_lit (configs/budget10.yaml) vs HF Trainer 16 epochs.

ner_lit: ``python -m ner_lit fit --config configs/budget10.yaml`` (the reference WordPiece model,
lr 1e-3, linear decay, bf16-mixed) with ``--trainer.max_time 00:00:10:00`` as a hard cap (validation
included in the 10 minutes); the number of epochs is chosen so that the linear schedule ends
inside the budget, from this machine's measured throughput (bench/results/train_throughput.json,
precision.json's bf16 speed-up and eval_speed.json; ``--epochs`` overrides). The best epoch's dev F1e counts.

HF Trainer: the usual recipe (DataCollatorForTokenClassification, linear decay, lr 5e-4,
batch 32) for 16 epochs (however long that takes; its time is reported), then scored on dev
with the same character decoding and sklearn + seqeval.

    python bench/budget.py [--epochs N] [--budget-min 10] [--skip-hf | --skip-ner-lit] [--quick]

The two sides can run apart (the HF side's F1e does not depend on the machine's load):
``--skip-ner-lit`` keeps the ner_lit run already in budget.json (with the date and command that
produced it) and adds the HF side; ``--skip-hf`` the other way round.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402


def choose_epochs(args) -> int:
    if args.epochs:
        return args.epochs
    res = common.results_dir(args)
    try:
        sps = json.loads((res / "train_throughput.json").read_text())["sentences_per_s"]["ner_lit"]
        ev = json.loads((res / "eval_speed.json").read_text())["seconds"]["ner_lit"]
    except (OSError, KeyError, ValueError):
        return 12
    import yaml

    recipe = yaml.safe_load((common.REPO / "configs" / "budget10.yaml").read_text())
    if recipe["trainer"].get("precision") == "bf16-mixed":
        try:  # the recipe trains and validates in bf16: scale by what precision.py / eval_speed.py measured
            sps *= json.loads((res / "precision.json").read_text())["bf16_speedup"]
            ev = json.loads((res / "eval_speed.json").read_text())["seconds"]["ner_lit_bf16"]
        except (OSError, KeyError, ValueError):
            pass
    per_epoch = 5000 / sps + ev + 3  # + a little Lightning overhead per epoch
    return max(1, int(args.budget_min * 60 * 0.9 // per_epoch))


def _previous_runs(args) -> dict:
    """Runs of an earlier budget.json, each stamped with the date and command that produced it."""
    try:
        old = json.loads((common.results_dir(args) / "budget.json").read_text())
    except (OSError, ValueError):
        return {}
    return {k: {**v, "measured": v.get("measured") or {"date": old["date"], "command": old["command"]}}
            for k, v in old.get("runs", {}).items()}


NER_LIT = "ner_lit (configs/budget10.yaml)"


def _ner_lit_run(args, model_dir) -> dict:
    epochs = 1 if args.quick else choose_epochs(args)
    root = common.WORK / ("quick-budget" if args.quick else "budget") / "ner_lit"
    cmd = [sys.executable, "-m", "ner_lit", "fit"] + common.reference_fit_args(args, model_dir, root)
    cmd[cmd.index("--config") + 1] = str(common.REPO / "configs" / "budget10.yaml")
    cmd += ["--trainer.max_time", f"00:00:{int(args.budget_min):02d}:00"]
    if not args.quick:
        cmd += ["--trainer.max_epochs", str(epochs)]
    wall, version = common.run_fit(cmd, root, "budget")
    ep = common.per_epoch(version)
    best = max(ep, key=lambda e: e["F1e"])
    return {"train_s": wall, "epochs": len(ep), "planned_epochs": epochs,
            "F1c": best["F1c"], "F1e": best["F1e"], "per_epoch": ep}


def _hf_run(args, model_dir) -> tuple[str, dict]:
    """The HF Trainer's epochs, then its dev F1 with the same character decoding and sklearn + seqeval."""
    from bench import eval_speed, systems
    from ner_lit.corpus.klue import read_klue_tsv

    dm = systems.prepared_data(args, model_dir)
    hf_epochs = 1 if args.quick else args.hf_epochs
    hf_s, (_, model) = common.timed(lambda: systems.hf_train(args, model_dir, steps=2 if args.quick else -1, dm=dm,
                                                             epochs=hf_epochs))
    out = common.WORK / "budget" / "hf_model"
    model.save_pretrained(out)
    dm.tokenizer.save_pretrained(out)
    sentences = read_klue_tsv(common.data_dir(args) / "dev.tsv")
    score = eval_speed.run_hf(args, out, model_dir, list(dm.labels), sentences)
    return f"HF Trainer {hf_epochs} epochs", {"train_s": hf_s, "epochs": hf_epochs, "F1c": score["F1c"], "F1e": score["F1e"]}


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--budget-min", type=float, default=10.0)
    ap.add_argument("--hf-epochs", type=int, default=16)
    ap.add_argument("--skip-hf", action="store_true", help="keep the HF run already in budget.json, if any")
    ap.add_argument("--skip-ner-lit", action="store_true", help="keep the ner_lit run already in budget.json")
    args = ap.parse_args()
    common.quiet()
    record = common.start_record("budget", args)
    model_dir = common.reference_model(args)
    previous = _previous_runs(args)
    if args.skip_ner_lit and NER_LIT not in previous:
        raise SystemExit("--skip-ner-lit: no ner_lit run in budget.json yet; run without it first")
    runs = {NER_LIT: previous[NER_LIT] if args.skip_ner_lit else _ner_lit_run(args, model_dir)}
    if args.skip_hf:
        runs.update({k: v for k, v in previous.items() if k.startswith("HF")})
    record["runs"] = runs
    common.write_record(record, args)
    if not args.skip_hf:
        name, run = _hf_run(args, model_dir)
        runs[name] = run
    hf = [v["F1e"] for k, v in runs.items() if k.startswith("HF")]
    if hf:
        best_ner = runs[NER_LIT]["F1e"]
        record["targets"] = {"vs_hf_16_epochs": {"target": "ner_lit in 10 min >= HF Trainer 16 epochs (dev F1e)",
                                                 "value": best_ner - hf[0], "met": best_ner >= hf[0]}}
    common.write_record(record, args)


if __name__ == "__main__":
    main()
