"""The multilingual-e5-small recipe runs: started by one command each, collected into one table.

``run`` starts ``python -m ner_lit fit --config configs/me5.yaml`` with the settings given
(``--set model.learning_rate=1e-4`` ...) into ``runs/me5-search/<name>``, resumable: if that
folder holds a ``last.ckpt``, the run is resumed from it (``--ckpt_path last``), so a run longer
than a session goes on in the next. ``collect`` reads every run folder under that root: its saved
config (the settings that differ from configs/me5.yaml), dev F1c / F1e after every epoch and the
training minutes the run's own clock logged (``train_minutes``: the time inside training epochs,
validation excluded), and writes bench/results/me5_runs.json, me5_runs.md and me5_frontier.png
(dev F1e after each epoch of each run against idle minutes, the published scores drawn in).

Training minutes are wall-clock minutes: on a shared 2-core machine other work inflates them,
so the table also gives each run's minutes per epoch, and the frontier is drawn against
epochs x the idle per-epoch time of the recipe (``--idle-epoch-minutes``, measured on idle
epochs of a run), scaled by the share of the sentences a run trains on.

``run --train-sentences N`` trains on a seeded sample of N of the recipe's training sentences
(written into the run folder, with ``subset.json``): what more data would give is measured with less.

    python bench/me5_runs.py run --name e10-s8 --set trainer.max_epochs=10 --set seed_everything=8
    python bench/me5_runs.py run --name e10-n2500 --train-sentences 2500 --set trainer.max_epochs=10
    python bench/me5_runs.py collect
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench import common  # noqa: E402

ROOT = REPO / "runs" / "me5-search"
RECIPE = REPO / "configs" / "me5.yaml"
#: The settings a run's table row shows (section, key).
SHOWN = [("seed_everything", None), ("data", "train_file"), ("trainer", "max_epochs"), ("trainer", "precision"), ("model", "head"),
         ("model", "learning_rate"), ("model", "head_learning_rate"), ("model", "layer_decay"), ("model", "warmup_ratio"), ("model", "schedule"),
         ("model", "freeze_word_embeddings"), ("model", "sparse_word_embeddings"), ("model", "dropout"),
         ("data", "batch_size"), ("data", "max_length")]


SUBSET = "subset.json"


def recipe_train_file() -> Path:
    data = common.recipe(RECIPE)["data"]
    return REPO / data["data_dir"] / data["train_file"]


def train_subset(root: Path, sentences: int, source: Path, seed: int = 7) -> Path:
    """A seeded sample of ``sentences`` of the recipe's training sentences (in file order), written
    into the run folder with a ``subset.json`` that says what it is: the data-size question (what
    would more than KLUE's 5,000 sentences give?) is answered by fewer."""
    import random

    from ner_lit.corpus.klue import read_klue_tsv, write_klue_tsv

    everything = read_klue_tsv(source)
    if not 0 < sentences < len(everything):
        raise SystemExit(f"--train-sentences {sentences}: expected 1 to {len(everything) - 1} ({source} has {len(everything)})")
    keep = sorted(random.Random(seed).sample(range(len(everything)), sentences))
    target = root / f"train-{sentences}.tsv"
    if not target.exists():
        root.mkdir(parents=True, exist_ok=True)
        write_klue_tsv((everything[i] for i in keep), target)
    common.write_json(root / SUBSET, {"sentences": sentences, "of": len(everything), "seed": seed, "source": common.rel(source.resolve())})
    return target


def run(args: argparse.Namespace) -> None:
    root = args.root / args.name
    last = sorted(root.glob("version_*/checkpoints/last.ckpt"), key=lambda c: version_number(c.parents[1]))
    cmd = [sys.executable, "-m", "ner_lit", "fit", "--config", str(RECIPE), "--trainer.default_root_dir", str(root)]
    if args.train_sentences and not last:
        cmd += ["--data.train_file", str(train_subset(root, args.train_sentences, recipe_train_file()).resolve())]
    for item in args.set:
        key, _, value = item.partition("=")
        cmd += [f"--{key}", value]
    if last:
        cmd = [sys.executable, "-m", "ner_lit", "fit", "--config", str(last[-1].parents[1] / "config.yaml"),
               "--ckpt_path", str(last[-1])]
    print(common.shown(cmd), flush=True)
    raise SystemExit(subprocess.call(cmd, cwd=REPO))


def version_number(version: Path) -> int:
    """``version_10`` comes after ``version_9``: Lightning numbers a resumed run's folders in order."""
    return int(version.name.rpartition("_")[2] or 0)


def setting(cfg: dict[str, Any], section: str, key: Optional[str]) -> Any:
    return cfg.get(section) if key is None else (cfg.get(section) or {}).get(key)


def epochs(version: Path) -> list[dict[str, Any]]:
    with (version / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        if r.get("val_F1e"):
            minutes = next((float(x["train_minutes"]) for x in rows if x.get("train_minutes")
                            and x["epoch"] == r["epoch"]), None)
            out.append({"epoch": int(float(r["epoch"])), "F1c": float(r["val_F1c"]), "F1e": float(r["val_F1e"]),
                        "train_minutes": minutes})
    return out


def collect(args: argparse.Namespace) -> None:
    recipe = common.recipe(RECIPE)
    record = common.start_record("me5_runs", argparse.Namespace(quick=False))
    here = machine_summary(record["machine"])
    runs = []
    for folder in sorted(p for p in args.root.iterdir() if p.is_dir()) if args.root.is_dir() else []:
        # a resumed run logs into a new version folder: its epochs continue the earlier ones'
        versions = sorted(folder.glob("version_*"), key=version_number)
        if not versions:
            continue
        version = versions[0]
        cfg = common.recipe(version / "config.yaml")
        merged = {e["epoch"]: e for v in versions if (v / "metrics.csv").exists() for e in epochs(v)}
        per_epoch = [merged[k] for k in sorted(merged)]
        if not per_epoch:
            continue
        # a model option the saved config does not hold did not exist yet: the run had its default
        settings = {f"{s}.{k}" if k else s: setting(cfg, s, k) for s, k in SHOWN if s != "model" or k in cfg["model"]}
        if "sparse_word_embeddings" not in cfg["model"] and cfg["model"].get("pretrained"):
            settings["model.dropout"] = None  # saved before --model.dropout reached pretrained encoders: theirs ran
        if str(settings["trainer.precision"]).startswith("bf16") and not here["bf16"]:
            settings["trainer.precision"] = "32-true"  # what the CLI falls back to without native bf16
        subset = json.loads((folder / SUBSET).read_text(encoding="utf-8")) if (folder / SUBSET).exists() else None
        if subset:  # the sample's own path names the run folder: what differs is its size
            settings["data.train_file"] = f"{subset['sentences']} of {subset['of']} sentences"
        differs = differs_from(settings, recipe)
        best = max(per_epoch, key=lambda e: e["F1c"])  # what ModelCheckpoint keeps (val_F1c, max)
        runs.append({"name": version.parent.name, "version": version.name, "settings": settings,
                     "differs_from_recipe": differs, "epochs": per_epoch, "best_by_F1c": best,
                     "train_fraction": subset["sentences"] / subset["of"] if subset else 1.0,
                     "finished": len(per_epoch) == settings["trainer.max_epochs"]})
    for r in runs:
        r.update(machine=here, collected=record["date"])
    runs = sorted(runs + kept_runs(common.results_dir(args) / "me5_runs.json", {r["name"] for r in runs}, recipe),
                  key=lambda r: r["name"])
    record.update(root=common.rel(args.root), idle_epoch_minutes=args.idle_epoch_minutes, runs=runs,
                  recipes=over_seeds(runs), against_recipe=against_recipe(runs),
                  frontier=frontier(runs, args.idle_epoch_minutes))
    common.write_record(record, args)
    why = frontier_png(record, common.results_dir(args) / "me5_frontier.png")
    if why:
        print(f"no frontier picture: {why}")
    common.write_text(common.results_dir(args) / "me5_runs.md", markdown(record))
    print(markdown(record))


def differs_from(settings: dict[str, Any], recipe: dict[str, Any]) -> dict[str, Any]:
    """The shown settings whose value is not the recipe's (a run collected earlier is compared with today's recipe;
    a setting it did not record is left out). Where the recipe leaves a model option out, its default is the recipe's."""
    out = {}
    for section, key in SHOWN:
        name = f"{section}.{key}" if key else section
        if name not in settings:
            continue
        expected = setting(recipe, section, key)
        if section == "model" and key not in (recipe.get("model") or {}):
            expected = model_default(key)
        if settings[name] != expected:
            out[name] = settings[name]
    return out


def model_default(option: str) -> Any:
    """``NERModel``'s default for ``--model.<option>`` (what a run's saved config writes when the recipe is silent)."""
    import inspect

    from ner_lit.training.model import NERModel

    return inspect.signature(NERModel.__init__).parameters[option].default


def machine_summary(machine: dict[str, Any]) -> dict[str, Any]:
    """What a run's minutes and precision depend on: the CPU, its cores and whether it has native bf16."""
    return {"cpu": machine.get("cpu"), "cores": machine.get("cores"), "bf16": "avx512_bf16" in machine.get("isa", []),
            "torch": machine.get("torch")}


def kept_runs(previous: Path, present: set[str], recipe: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs an earlier ``collect`` recorded whose folders are not under ``--root`` now (run folders are
    gigabytes and never committed; a fresh machine has none): kept as recorded, with the machine and
    date of that record, so that a table and a frontier built over several machines lose no run."""
    if not previous.exists():
        return []
    earlier = json.loads(previous.read_text(encoding="utf-8"))
    kept = []
    for r in earlier.get("runs", []):
        if r["name"] in present:
            continue
        r = dict(r, differs_from_recipe=differs_from(r["settings"], recipe))
        r.setdefault("machine", machine_summary(earlier.get("machine", {})))
        r.setdefault("collected", earlier.get("date"))
        kept.append(r)
    return kept


def beyond_seed(run: dict[str, Any]) -> dict[str, Any]:
    """A run's settings unlike the recipe's, its seed aside: what makes it another recipe."""
    return {k: v for k, v in run["differs_from_recipe"].items() if k != "seed_everything"}


def over_seeds(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Finished runs that differ only in their seed, as one recipe: mean and sample std of the best
    checkpoint's dev F1, the figure a recipe is shipped on (never the best seed)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        if r["finished"]:
            key = json.dumps(beyond_seed(r), sort_keys=True)
            groups.setdefault(key, []).append(r)
    out = []
    for key, members in groups.items():
        f1e = [m["best_by_F1c"]["F1e"] for m in members]
        f1c = [m["best_by_F1c"]["F1c"] for m in members]
        out.append({"differs_from_recipe": json.loads(key), "runs": [m["name"] for m in members],
                    "seeds": [m["settings"]["seed_everything"] for m in members],
                    "F1e_mean": statistics.fmean(f1e), "F1e_std": statistics.stdev(f1e) if len(f1e) > 1 else None,
                    "F1c_mean": statistics.fmean(f1c), "F1c_std": statistics.stdev(f1c) if len(f1c) > 1 else None})
    return sorted(out, key=lambda g: -g["F1e_mean"])


def against_recipe(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each finished run that changes the recipe, against the recipe's finished run on the same seed (the
    same data order and head initialisation): the one-change-at-a-time view of the search, best first."""
    def seed(r: dict[str, Any]) -> Any:
        return r["settings"].get("seed_everything")

    reference = {seed(r): r for r in runs if r["finished"] and not beyond_seed(r)}
    out = []
    for r in runs:
        changes = beyond_seed(r)
        base = reference.get(seed(r))
        if r["finished"] and changes and base is not None:
            best, ref = r["best_by_F1c"], base["best_by_F1c"]
            out.append({"name": r["name"], "seed": seed(r), "changes": changes, "against": base["name"],
                        "F1e": best["F1e"], "F1c": best["F1c"], "F1e_gain": best["F1e"] - ref["F1e"],
                        "F1c_gain": best["F1c"] - ref["F1c"]})
    return sorted(out, key=lambda c: -c["F1e_gain"])


#: Published KLUE dev F1e (KLUE paper; full 21,008-sentence training set, GPUs): the frontier's yardsticks.
PUBLISHED = {"KLUE-RoBERTa-small": 83.65, "XLM-R-base": 80.37}
HOUR = 60.0
FLOOR = 60.0  # dev F1e at the picture's bottom edge


def idle_minutes(run: dict[str, Any], epoch: int, idle_epoch_minutes: float) -> float:
    """Where a run's epoch sits on the minutes axis: its own clock is inflated wherever other work shared
    the cores, so every run is drawn at the recipe's idle epoch time, scaled by its share of the data."""
    return round((epoch + 1) * idle_epoch_minutes * run["train_fraction"], 2)


def on_the_idle_clock(run: dict[str, Any]) -> bool:
    """Whether the minutes axis (the bf16 recipe's idle epoch) can place this run: an fp32 epoch takes
    several bf16 ones, so an fp32 run would sit far earlier than it ran."""
    return str(run["settings"].get("trainer.precision")).startswith("bf16")


def frontier(runs: list[dict[str, Any]], idle_epoch_minutes: float) -> list[dict[str, Any]]:
    """The best dev F1e any run's checkpoint had reached within each number of idle minutes: the
    points where that best rises, in order. A mid-schedule epoch counts: its model existed after
    that many minutes."""
    points = sorted(((idle_minutes(r, e["epoch"], idle_epoch_minutes), -e["F1e"], r["name"], e["epoch"] + 1)
                     for r in runs if on_the_idle_clock(r) for e in r["epochs"]))
    best: list[dict[str, Any]] = []
    for minutes, negative_f1e, name, epoch in points:
        if not best or -negative_f1e > best[-1]["F1e"]:
            best.append({"minutes": minutes, "F1e": -negative_f1e, "run": name, "epoch": epoch})
    return best


def frontier_png(rec: dict[str, Any], target: Path) -> Optional[str]:
    """Dev F1e after every epoch of every run against idle minutes of training, with the published
    scores and the hour drawn in: the picture the recipe search is judged by. None, or why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib)"
    drawn = [r for r in rec["runs"] if on_the_idle_clock(r)]
    if not drawn:
        return "no bf16 runs"
    fig, ax = plt.subplots(figsize=(10.5, 4.8), dpi=100)
    try:
        colours = plt.get_cmap("tab20").colors
        for i, r in enumerate(drawn):  # 20 colours, then the same ones dashed
            xs = [idle_minutes(r, e["epoch"], rec["idle_epoch_minutes"]) for e in r["epochs"]]
            ax.plot(xs, [e["F1e"] for e in r["epochs"]], marker="o", markersize=2.5, linewidth=0.9, label=r["name"],
                    color=colours[i % len(colours)], linestyle="-" if i < len(colours) else "--")
        edge = rec.get("frontier") or []
        if edge:  # the best reached so far holds until the next rise, and to the hour
            ax.step([p["minutes"] for p in edge] + [HOUR], [p["F1e"] for p in edge] + [edge[-1]["F1e"]], where="post",
                    color="black", linewidth=2.0, label="frontier: best F1e within the minutes")
        for name, f1e in PUBLISHED.items():
            ax.axhline(f1e, color="grey", linestyle="--", linewidth=0.8)
            ax.text(HOUR, f1e, f" {name} {f1e} (published, full data, GPU)", fontsize=7, va="bottom", ha="right")
        ax.axvline(HOUR, color="black", linewidth=0.8)
        ax.set_xlim(0, HOUR * 1.02)
        # the first epochs of small-data runs start near 0: drawn to scale they flatten where the runs differ
        below = sum(e["F1e"] < FLOOR for r in drawn for e in r["epochs"])
        ax.set_ylim(FLOOR, 86)
        left_out = [f"{below} epoch(s) below {FLOOR:g} F1e"] if below else []
        left_out += [f"{len(rec['runs']) - len(drawn)} fp32 run(s)"] if len(drawn) < len(rec["runs"]) else []
        if left_out:
            ax.text(0.5, FLOOR + 0.5, f" off the picture: {', '.join(left_out)} (me5_runs.md has them)", fontsize=7)
        ax.set_xlabel(f"minutes of training on 2 idle cores (epochs x {rec['idle_epoch_minutes']})")
        ax.set_ylabel("KLUE dev F1e")
        ax.set_title(f"multilingual-e5-small on KLUE train.tsv (5,000 sentences, or a sample: -nN), {rec['date'][:10]}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the curves, not over them
        fig.tight_layout()
        from ner_lit.files import atomic_writer

        with atomic_writer(target, "wb") as f:  # a kill never leaves half a picture
            fig.savefig(f, format="png")
    finally:
        plt.close(fig)
    return None


def collected_on(run: dict[str, Any]) -> str:
    machine = run.get("machine") or {}
    return f"{str(run.get('collected') or '?')[:10]}, {'bf16' if machine.get('bf16') else 'no bf16'}"


def markdown(rec: dict[str, Any]) -> str:
    date = _dt.date.fromisoformat(rec["date"][:10])
    lines = ["# multilingual-e5-small recipe runs (`bench/me5_runs.py collect`)", "",
             f"Generated {date} from `{rec['root']}`; {rec['machine']['cpu']}, {rec['machine']['cores']} cores. "
             "Dev F1 is KLUE dev (5,000 sentences) after each epoch, the checkpoint's own validation; "
             "'best' is the epoch ModelCheckpoint keeps (max val_F1c). Minutes are the run's own training clock "
             f"(validation excluded), inflated where other work shared the cores; idle, one epoch of the recipe "
             f"takes {rec['idle_epoch_minutes']} min.", "",
             "![dev F1e against idle minutes of training](me5_frontier.png)", "",
             "Runs collected earlier whose folders are gone (a fresh machine has none) are kept as recorded; "
             "'collected' says when and on what (bf16: the CPU has native bf16, so a bf16-mixed recipe ran in bf16).", "",
             "| run | settings unlike configs/me5.yaml | epochs | best F1c | its F1e | last F1e | train min | min/epoch | collected |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rec["runs"]:
        last = r["epochs"][-1]
        minutes = last["train_minutes"]
        per = None if minutes is None else minutes / len(r["epochs"])
        differs = ", ".join(f"{k} {v}" for k, v in r["differs_from_recipe"].items()) or "none"
        lines.append(f"| {r['name']} | {differs} | {len(r['epochs'])}{'' if r['finished'] else ' (unfinished)'} | "
                     f"{r['best_by_F1c']['F1c']:.2f} | {r['best_by_F1c']['F1e']:.2f} | {last['F1e']:.2f} | "
                     f"{'-' if minutes is None else f'{minutes:.1f}'} | "
                     f"{'-' if per is None else f'{per:.2f}'} | {collected_on(r)} |")
    lines += ["", "Recipes over seeds (finished runs that differ only in the seed; mean and sample std of the "
              "best checkpoint's dev F1):", "",
              "| settings unlike configs/me5.yaml | seeds | F1e mean (std) | F1c mean (std) |", "| --- | --- | ---: | ---: |"]
    for g in rec.get("recipes", []):
        differs = ", ".join(f"{k} {v}" for k, v in g["differs_from_recipe"].items()) or "none"
        spread = [f"{g[m + '_mean']:.2f}" + ("" if g[m + "_std"] is None else f" ({g[m + '_std']:.2f})") for m in ("F1e", "F1c")]
        lines.append(f"| {differs} | {', '.join(str(s) for s in g['seeds'])} | {spread[0]} | {spread[1]} |")
    spread = next((g["F1e_std"] for g in rec.get("recipes", []) if not g["differs_from_recipe"]), None)
    lines += ["", "One change at a time: each finished run that changes the recipe, against the recipe's run on the same "
              "seed (same data order and head initialisation), best checkpoint's dev F1"
              + ("" if spread is None else f"; the recipe's F1e varies by {spread:.2f} (sample std) from seed to seed, "
                 "so a gain within about twice that is not a result") + ":", "",
              "| run | changes | seed | F1e | F1e gain | F1c | F1c gain |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for c in rec.get("against_recipe", []):
        changes = ", ".join(f"{k} {v}" for k, v in c["changes"].items())
        lines.append(f"| {c['name']} | {changes} | {c['seed']} | {c['F1e']:.2f} | {c['F1e_gain']:+.2f} | "
                     f"{c['F1c']:.2f} | {c['F1c_gain']:+.2f} |")
    if rec.get("frontier"):
        lines += ["", "The frontier: the best dev F1e any bf16 run's checkpoint had reached within so many idle minutes of "
                  "training (each epoch at the recipe's idle epoch time, times the run's share of the data), at each "
                  "point where it rises; it holds from there to the next row:", "",
                  "| idle minutes | dev F1e | run | epoch |", "| ---: | ---: | --- | ---: |"]
        lines += [f"| {p['minutes']:.2f} | {p['F1e']:.2f} | {p['run']} | {p['epoch']} |" for p in rec["frontier"]]
    lines += ["", "Per epoch (dev F1e / F1c):", ""]
    width = max((len(r["epochs"]) for r in rec["runs"]), default=0)
    lines.append("| run | " + " | ".join(str(i + 1) for i in range(width)) + " |")
    lines.append("| --- |" + " ---: |" * width)
    for r in rec["runs"]:
        cells = [f"{e['F1e']:.2f} / {e['F1c']:.2f}" for e in r["epochs"]] + [""] * (width - len(r["epochs"]))
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    ap = common.parser(__doc__.split("\n")[0])
    ap.add_argument("action", choices=["run", "collect"])
    ap.add_argument("--root", type=Path, default=ROOT)
    ap.add_argument("--name", help="run: the run folder's name under --root")
    ap.add_argument("--train-sentences", type=int,
                    help="run: train on a seeded sample of this many of the recipe's training sentences")
    ap.add_argument("--set", action="append", default=[], help="run: KEY=VALUE, a fit option without its -- (repeatable)")
    ap.add_argument("--idle-epoch-minutes", type=float, default=2.44,
                    help="collect: one recipe epoch's training minutes on an idle machine, for the frontier "
                         "(default: the median of 12 idle epochs of the 20-epoch run, 2026-12-07)")
    return ap.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    if args.action == "run":
        if not args.name:
            raise SystemExit("run: --name is needed")
        return run(args)
    collect(args)


if __name__ == "__main__":
    main()
