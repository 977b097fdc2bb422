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
* ``no_grouping``: ``--data.group_by_length false``;
* ``crf``: ``--model.head crf`` (a CRF head over the same network and budget);
* ``char`` and ``char_crf``: ``--data.tagging char``, with the softmax head and with the CRF head.

    python bench/accuracy.py [--runs main,pad_as_o,first_entity,constant_lr,no_grouping,crf,char,char_crf] [--quick]
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
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
    "crf": (["--model.head", "crf"], None),
    "char": (["--data.tagging", "char"], None),
    "char_crf": (["--data.tagging", "char", "--model.head", "crf"], None),
}


def train(args, name: str, cmd: list[str], root: Path) -> tuple[float, Path]:
    """The run's fit wall time and version directory: trained now, or (``--collect``) one already trained."""
    done = root / "bench_fit.json"
    if args.collect and sorted(root.glob("version_*/metrics.csv")):
        version = sorted(root.glob("version_*"))[0]
        if done.is_file():
            return json.loads(done.read_text())["fit_wall_s"], version
        # a run whose bench process was stopped: its files' times
        return (version / "metrics.csv").stat().st_mtime - (version / "hparams.yaml").stat().st_mtime, version
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    wall, version = common.run_fit(cmd, root, name, env)
    done.write_text(json.dumps({"fit_wall_s": wall, "command": common.shown(cmd), "threads": args.threads}))
    return wall, version


def test_scores(args, model_dir: Path, root: Path) -> dict:
    """``python -m ner_lit test --ckpt_path last`` of the main run (run once, or again with ``--rescore``):
    the per-type table, and F1c / F1e with the decoding the run used."""
    report = sorted(root.glob("version_*/test/*/*/test_report.json"))
    if not report or args.rescore:
        cmd = [sys.executable, "-m", "ner_lit", "test"] + common.reference_fit_args(args, model_dir, root) + ["--ckpt_path", "last"]
        proc = subprocess.run(cmd, cwd=common.REPO, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"test failed:\n{proc.stderr[-3000:]}")
        report = sorted(root.glob("version_*/test/*/*/test_report.json"))
    out: dict = {"per_type": json.loads(report[-1].read_text()) if report else None}
    if out["per_type"]:
        cfg_file = report[-1].parent / "config.yaml"
        cfg = cfg_file.read_text() if cfg_file.is_file() else ""
        decoding = "viterbi" if "decoding: viterbi" in cfg else ("argmax" if "decoding: argmax" in cfg else
                                                                 "argmax (before --data.decoding existed)")
        out["test"] = {"F1c": out["per_type"]["F1c (macro over characters)"]["f1"], "F1e": out["per_type"]["macro avg"]["f1"],
                       "checkpoint": "last", "run_dir": str(report[-1].parent.relative_to(common.REPO)), "decoding": decoding}
    return out


def fit(args, name: str, model_dir: Path) -> dict:
    extra, variant = RUNS[name]
    root = common.WORK / ("quick-accuracy" if args.quick else "accuracy") / name
    prefix = [sys.executable, str(common.BENCH / "_fit_variant.py"), variant] if variant else [sys.executable, "-m", "ner_lit"]
    cmd = prefix + ["fit"] + common.reference_fit_args(args, model_dir, root) + extra
    wall, version = train(args, name, cmd, root)
    epochs = common.per_epoch(version)
    res = {"command": common.shown(cmd), "fit_wall_s": wall, "per_epoch": epochs, "final": epochs[-1] if epochs else None,
           "run_dir": str(version.relative_to(common.REPO))}
    done = root / "bench_fit.json"
    if done.is_file() and json.loads(done.read_text()).get("threads"):
        res["threads"] = json.loads(done.read_text())["threads"]
    if name == "main":
        res.update(test_scores(args, model_dir, root))
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


def targets(main_run: dict) -> dict:
    """The F1e target on the main run: validation during fit, and ``test`` on its last checkpoint."""
    out = {"F1e": {"target": f">= {TARGET_F1E} (dev, epoch 3, validation during fit)",
                   "value": main_run["final"]["F1e"], "met": main_run["final"]["F1e"] >= TARGET_F1E}}
    if main_run.get("test"):
        t = main_run["test"]
        out["F1e_test"] = {"target": f">= {TARGET_F1E} (`test --ckpt_path last`, decoding {t['decoding']})",
                           "value": t["F1e"], "met": t["F1e"] >= TARGET_F1E}
    return out


def keep_earlier(args, record: dict) -> None:
    """The runs of an earlier invocation that this one does not redo (and its ceiling, with --no-ceiling)."""
    previous = common.results_dir(args) / "accuracy.json"
    if not previous.is_file():
        return
    try:
        old = json.loads(previous.read_text())
    except ValueError:
        return
    record["runs"] = old.get("runs", {})
    if args.no_ceiling and "alignment_ceiling" in old:
        record["alignment_ceiling"] = old["alignment_ceiling"]


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
    keep_earlier(args, record)
    for name in [r for r in args.runs.split(",") if r]:
        print(f"fit {name} ...", flush=True)
        record["runs"][name] = fit(args, name, model_dir)
        print(f"  {name}: {record['runs'][name]['final']} ({record['runs'][name]['fit_wall_s']:.0f} s)", flush=True)
        if record["runs"].get("main", {}).get("final"):
            record["targets"] = targets(record["runs"]["main"])
        common.write_record(record, args)  # after every run: partial results survive an interruption


if __name__ == "__main__":
    main()
