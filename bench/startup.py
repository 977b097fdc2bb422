"""Start-up time of the command: --help and usage errors under 3 s.

Each command line runs ``--repeats`` times in a new process (``python -m ner_lit ...``,
cwd = the repository); the median wall time is recorded. The cases:

* answered by the light front (:mod:`ner_lit.cli.command`): ``--help``, an unknown subcommand or
  recipe, ``serve --help``;
* answered from the CLI answer cache (:mod:`ner_lit.cli.cache`, warmed by one real run first):
  a Lightning subcommand's ``--help``, a line of unknown options, a plain word given to a
  numeric option;
* answered by the real parser (LightningCLI, so Lightning imported): ``fit --help`` with the
  cache off, the first ``fit --help`` on an empty cache (real parser + recording),
  ``--warm-cache`` on an empty cache, a bad value the cache leaves to the parser (``1.5`` for an int).

The floor is measured too: ``python -c pass``, ``import torch``, ``import lightning.pytorch``
and ``import ner_lit.cli.lightning`` (what the real parser needs imported), each in a new process.

``--compare DIR`` runs every case in another checkout too (e.g. the tree before a change),
interleaved with this one run by run, so both see the same machine load. The heaviest imports
of the real ``fit --help`` (``python -X importtime``) are recorded too.

    python bench/startup.py [--repeats 5] [--compare DIR]
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import common

TARGET_S = 3.0
WORK = common.WORK / "startup"
#: name -> (arguments, cache state: "warm" | "cold" | "off")
CASES: dict[str, tuple[list[str], str]] = {
    "--help": (["--help"], "warm"),
    "usage error (unknown subcommand)": (["fti"], "warm"),
    "usage error (unknown recipe)": (["fit", "--config", "no-such-recipe"], "warm"),
    "serve --help": (["serve", "--help"], "warm"),
    "fit --help": (["fit", "--help"], "warm"),
    "predict --help": (["predict", "--help"], "warm"),
    "usage error (unknown option)": (["fit", "--model.learnig_rate", "1"], "warm"),
    "fit --help, cache off": (["fit", "--help"], "off"),
    "fit --help, first run (empty cache)": (["fit", "--help"], "cold"),
    "usage error (bad value of a known option)": (["fit", "--model.learning_rate", "abc"], "warm"),
    "usage error (bad value, Optional[int])": (["fit", "--trainer.max_epochs", "abc"], "warm"),
    "usage error (bad value the cache leaves to the parser)": (["fit", "--trainer.max_epochs", "1.5"], "warm"),
    "--warm-cache (empty cache)": (["--warm-cache"], "cold"),
}
#: name -> python arguments: what any answer of the real parser costs before it builds anything.
FLOOR: dict[str, list[str]] = {
    "python -c pass": ["-c", "pass"],
    "import torch": ["-c", "import torch"],
    "import lightning.pytorch": ["-c", "import lightning.pytorch"],
    "import ner_lit.cli.lightning": ["-c", "import ner_lit.cli.lightning"],
}
#: The cases with the 3 s target: every --help and every error the cache or the front answers.
TARGETED = ("--help", "usage error (unknown subcommand)", "usage error (unknown recipe)", "serve --help", "fit --help",
            "predict --help", "usage error (unknown option)", "usage error (bad value of a known option)",
            "usage error (bad value, Optional[int])")


def env_for(tree: Path, cache: str) -> dict[str, str]:
    """The environment of one run: this tree's code, and an answer cache of this tree's own (or none)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    env.pop("NER_LIT_CLI_CACHE", None)
    if cache == "off":
        env["NER_LIT_CLI_CACHE"] = "0"
    env["NER_LIT_CACHE"] = str(WORK / f"warm-{abs(hash(str(tree)))}") if cache != "cold" else tempfile.mkdtemp(dir=WORK)
    return env


def wall(tree: Path, args: list[str], cache: str, module: bool = True) -> float:
    env = env_for(tree, cache)
    start = time.perf_counter()
    subprocess.run([sys.executable, *(["-m", "ner_lit"] if module else []), *args], cwd=tree, env=env,
                   capture_output=True, timeout=300)
    elapsed = time.perf_counter() - start
    if cache == "cold":
        shutil.rmtree(env["NER_LIT_CACHE"], ignore_errors=True)
    return elapsed


def heaviest_imports(args: list[str], top: int = 12, depth: int = 3) -> list[dict[str, object]]:
    """The modules with the largest cumulative import time, down to ``depth`` levels of nesting."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "ner_lit", *args], cwd=common.REPO,
                          env=env_for(common.REPO, "off"), capture_output=True, text=True, timeout=300)
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|")
        level = (len(name) - len(name.lstrip()) - 1) // 2  # importtime indents each nested import by two spaces
        if level < depth:
            rows.append({"module": name.strip(), "level": level, "cumulative_s": round(int(cumulative) / 1e6, 3)})
    return sorted(rows, key=lambda r: -float(r["cumulative_s"]))[:top]


def summary(ts: list[float]) -> dict[str, object]:
    return {"median_s": round(common.median(ts), 3), "runs_s": [round(t, 3) for t in ts]}


def measure(trees: dict[str, Path], repeats: int) -> tuple[dict[str, dict[str, dict[str, object]]], dict[str, object]]:
    """Each tree's cases, and the floor (in this tree), interleaved run by run."""
    times: dict[str, dict[str, list[float]]] = {label: {name: [] for name in CASES} for label in trees}
    floor: dict[str, list[float]] = {name: [] for name in FLOOR}
    for tree in trees.values():
        wall(tree, ["fit", "--help"], "warm")  # warms the file cache, and this tree's answer cache
    for _ in range(repeats):
        for name, args in FLOOR.items():
            floor[name].append(wall(common.REPO, args, "off", module=False))
        for name, (args, cache) in CASES.items():
            for label, tree in trees.items():
                times[label][name].append(wall(tree, args, cache))
    figures = {label: {name: summary(ts) for name, ts in cases.items()} for label, cases in times.items()}
    return figures, {name: summary(ts) for name, ts in floor.items()}


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--compare", type=Path, default=None,
                    help="another checkout of ner_lit (e.g. the tree before a change), measured interleaved")
    args = ap.parse_args()
    record = common.start_record("startup", args)
    repeats = 1 if args.quick else args.repeats
    trees = {"this": common.REPO}
    compare: Optional[Path] = args.compare
    if compare is not None:
        trees["compare"] = compare.resolve()
        record["compare"] = str(compare)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    figures, floor = measure(trees, repeats)
    for name in CASES:
        row = "  ".join(f"{label} {figures[label][name]['median_s']:6.2f} s" for label in trees)
        print(f"{name:<56} {row}   (median of {repeats})")
    for name, figure in floor.items():
        print(f"floor: {name:<49} {figure['median_s']:6.2f} s   (median of {repeats})")
    record["figures"] = figures["this"]
    record["floor"] = floor
    if compare is not None:
        record["compare_figures"] = figures["compare"]
    record["fit_help_heaviest_imports"] = heaviest_imports(["fit", "--help"])
    record["targets"] = {name: {"target_s": TARGET_S, "met": figures["this"][name]["median_s"] < TARGET_S}
                         for name in TARGETED}
    shutil.rmtree(WORK, ignore_errors=True)
    common.write_record(record, args)


if __name__ == "__main__":
    main()
