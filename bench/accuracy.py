"""Dev accuracy of the reference model trained 3 epochs by ner_lit, plus ablations.

Main run: ``python -m ner_lit fit --config configs/reference.yaml`` (data and model paths
passed on the command line), then ``test --ckpt_path last`` for the per-type table.
Collected: dev F1c / F1e / token accuracy per epoch (metrics.csv), the per-type table, the
alignment ceiling (gold char tags -> token labels -> chars, ``Aligner.decode_labels``),
and, per ablation (each 3 epochs, same seed):

* ``pad_as_o``: training batches padded to 128 with special/padding tokens trained as O
  (a NERDataModule subclass, bench/_fit_variant.py: the CLI has no switch for it);
* ``first_entity``: ``--data.label_rule first_entity``;
* ``constant_lr``: ``--model.warmup_ratio 0 --model.schedule constant``;
* ``no_grouping``: ``--data.group_by_length false``.

    python bench/accuracy.py [--runs main,pad_as_o,first_entity,constant_lr,no_grouping] [--quick]
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402

TARGET_F1E = 41.9
RUNS = {
    "main": ([], None),
    "pad_as_o": ([], "pad_as_o"),
    "first_entity": (["--data.label_rule", "first_entity"], None),
    "constant_lr": (["--model.warmup_ratio", "0", "--model.schedule", "constant"], None),
    "no_grouping": (["--data.group_by_length", "false"], None),
}


def cli_args(args, model_dir: Path, root: Path) -> list[str]:
    """The reference recipe's ``fit`` arguments. Token tagging, as the systems these figures stand beside
    (the original loop, the Hugging Face Trainer) label tokens; bench/boundaries.py compares the taggings."""
    out = ["--config", str(common.REPO / "configs" / "reference.yaml"), "--data.tagging", "token",
           "--data.data_dir", str(common.data_dir(args)), "--model.pretrained", str(model_dir),
           "--data.tokenizer", str(model_dir), "--data.cache_dir", str(common.cache_dir()),
           "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false"]
    if args.quick:
        out += ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2"]
    return out


def run_fit(cmd: list[str], root: Path, what: str, env: dict | None = None) -> tuple[float, Path]:
    """Run a ``fit`` command into a fresh ``root``: its wall time and run (version) directory."""
    if root.exists():
        import shutil

        shutil.rmtree(root)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=common.REPO, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{what}: fit failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, sorted(root.glob("version_*"))[0]


def per_epoch(version_dir: Path) -> list[dict]:
    rows = list(csv.DictReader((version_dir / "metrics.csv").open()))
    out = []
    for r in rows:
        if r.get("val_F1e"):
            out.append({"epoch": int(float(r["epoch"])), "step": int(float(r["step"])),
                        "F1c": float(r["val_F1c"]), "F1e": float(r["val_F1e"]), "token_acc": float(r["val_acc"]) * 100,
                        "loss": float(r["val_loss"])})
    return out


def fit(args, name: str, model_dir: Path) -> dict:
    extra, variant = RUNS[name]
    root = common.WORK / ("quick-accuracy" if args.quick else "accuracy") / name
    prefix = [sys.executable, str(common.BENCH / "_fit_variant.py"), variant] if variant else [sys.executable, "-m", "ner_lit"]
    cmd = prefix + ["fit"] + cli_args(args, model_dir, root) + extra
    shown = " ".join(["python"] + cmd[1:]).replace(str(common.REPO) + "/", "")
    done = root / "bench_fit.json"
    if args.collect and sorted(root.glob("version_*/metrics.csv")):
        version = sorted(root.glob("version_*"))[0]
        if done.is_file():
            wall = json.loads(done.read_text())["fit_wall_s"]
        else:  # a run whose bench process was stopped: its files' times
            wall = (version / "metrics.csv").stat().st_mtime - (version / "hparams.yaml").stat().st_mtime
    else:
        env = dict(os.environ)
        if args.threads:
            env["OMP_NUM_THREADS"] = str(args.threads)
        wall, version = run_fit(cmd, root, name, env)
        done.write_text(json.dumps({"fit_wall_s": wall, "command": shown, "threads": args.threads}))
    epochs = per_epoch(version)
    res = {"command": shown, "fit_wall_s": wall, "per_epoch": epochs, "final": epochs[-1] if epochs else None,
           "run_dir": str(version.relative_to(common.REPO))}
    if done.is_file() and json.loads(done.read_text()).get("threads"):
        res["threads"] = json.loads(done.read_text())["threads"]
    if name == "main":
        report = sorted(root.glob("version_*/test/*/*/test_report.json"))
        if not report or args.rescore:
            cmd = [sys.executable, "-m", "ner_lit", "test"] + cli_args(args, model_dir, root) + ["--ckpt_path", "last"]
            proc = subprocess.run(cmd, cwd=common.REPO, capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(f"test failed:\n{proc.stderr[-3000:]}")
            report = sorted(root.glob("version_*/test/*/*/test_report.json"))
        res["per_type"] = json.loads(report[-1].read_text()) if report else None
        if res["per_type"]:
            cfg = (report[-1].parent / "config.yaml").read_text() if (report[-1].parent / "config.yaml").is_file() else ""
            res["test"] = {"F1c": res["per_type"]["F1c (macro over characters)"]["f1"], "F1e": res["per_type"]["macro avg"]["f1"],
                           "checkpoint": "last", "run_dir": str(report[-1].parent.relative_to(common.REPO)),
                           "decoding": "viterbi" if "decoding: viterbi" in cfg else ("argmax" if "decoding: argmax" in cfg else "argmax (before --data.decoding existed)")}
    return res


def alignment_ceiling(args, model_dir: Path, label_rule: str) -> dict:
    """Gold tags -> token labels (label_rule) -> character tags, scored by ner_lit's metrics and sklearn/seqeval."""
    from ner_lit.training.metrics import CharMacroF1, EntityMacroF1

    dm = common.make_datamodule(args, model_dir, label_rule=label_rule)
    dm.setup("fit")
    items = dm.eval_items["validate"]
    al = dm.aligner
    chars = al.decode_labels([it.encoded for it in items], [al.token_labels(it.encoded) for it in items])
    preds = [c[it.scored] for c, it in zip(chars, items)]
    gold = [it.gold for it in items]
    f1c, f1e = CharMacroF1(dm.labels), EntityMacroF1(dm.labels)
    f1c.update(preds, gold)
    f1e.update(preds, gold)
    names = dm.labels
    ref = common.sklearn_seqeval([[names[i] for i in g.tolist()] for g in gold], [[names[i] for i in p.tolist()] for p in preds], names)
    return {"label_rule": label_rule, "F1c": float(f1c.compute()), "F1e": float(f1e.compute()),
            "sklearn_seqeval": {"F1c": ref[0], "F1e": ref[1]}}


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--collect", action="store_true",
                    help="collect runs already trained under bench/work/accuracy instead of training them again")
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the training processes")
    ap.add_argument("--rescore", action="store_true", help="run `test` on main's last checkpoint again (current decoding)")
    ap.add_argument("--no-ceiling", action="store_true", help="skip the alignment ceiling")
    ap.add_argument("--runs", default=None, help="comma-separated, default all (--quick: main): " + ", ".join(RUNS))
    args = ap.parse_args()
    args.runs = args.runs or ("main" if args.quick else ",".join(RUNS))
    common.quiet()
    record = common.start_record("accuracy", args)
    model_dir = common.reference_model(args)
    record["setting"] = {"config": "configs/reference.yaml", "epochs": 1 if args.quick else 3, "batch_size": common.BATCH_SIZE,
                         "lr": common.LEARNING_RATE, "max_length": common.MAX_LENGTH, "seed": common.SEED, "precision": "fp32"}
    if not args.no_ceiling:
        record["alignment_ceiling"] = [alignment_ceiling(args, model_dir, r) for r in ("first_char", "first_entity")]
    record["runs"] = {}
    previous = common.results_dir(args) / "accuracy.json"
    if previous.is_file():  # keep the runs of an earlier invocation that this one does not redo
        try:
            old = json.loads(previous.read_text())
            record["runs"] = old.get("runs", {})
            if args.no_ceiling and "alignment_ceiling" in old:
                record["alignment_ceiling"] = old["alignment_ceiling"]
        except ValueError:
            pass
    for name in [r for r in args.runs.split(",") if r]:
        print(f"fit {name} ...", flush=True)
        record["runs"][name] = fit(args, name, model_dir)
        final = record["runs"][name]["final"]
        print(f"  {name}: {final} ({record['runs'][name]['fit_wall_s']:.0f} s)", flush=True)
        main_run = record["runs"].get("main", {})
        if main_run.get("final"):
            record["targets"] = {"F1e": {"target": f">= {TARGET_F1E} (dev, epoch 3, validation during fit)",
                                         "value": main_run["final"]["F1e"], "met": main_run["final"]["F1e"] >= TARGET_F1E}}
            if main_run.get("test"):
                t = main_run["test"]
                record["targets"]["F1e_test"] = {"target": f">= {TARGET_F1E} (`test --ckpt_path last`, decoding {t['decoding']})",
                                                 "value": t["F1e"], "met": t["F1e"] >= TARGET_F1E}
        common.write_record(record, args)  # after every run: partial results survive an interruption


if __name__ == "__main__":
    main()
