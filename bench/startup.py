"""Start-up time of the command (issue 11, item 8): --help and usage errors under 3 s.

Each command line runs ``--repeats`` times in a new process (``python -m ner_lit ...``,
cwd = the repository); the median wall time is recorded. ``fit --help`` needs LightningCLI
and so Lightning; it is measured too, with the imports that dominate it (``python -X importtime``).

    python bench/startup.py [--repeats 5]
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import common

TARGET_S = 3.0
LIGHT = {
    "--help": ["--help"],
    "usage error (unknown subcommand)": ["fti"],
    "usage error (unknown recipe)": ["fit", "--config", "no-such-recipe"],
    "serve --help": ["serve", "--help"],
}
FULL = {"fit --help": ["fit", "--help"]}


def wall(args: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(common.REPO)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ner_lit", *args], cwd=common.REPO, env=env, capture_output=True, timeout=300)
    return time.perf_counter() - start


def heaviest_imports(args: list[str], top: int = 12, depth: int = 3) -> list[dict[str, object]]:
    """The modules with the largest cumulative import time, down to ``depth`` levels of nesting."""
    env = {**os.environ, "PYTHONPATH": str(common.REPO)}
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "ner_lit", *args], cwd=common.REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|")
        level = (len(name) - len(name.lstrip()) - 1) // 2  # importtime indents each nested import by two spaces
        if level < depth:
            rows.append({"module": name.strip(), "level": level, "cumulative_s": round(int(cumulative) / 1e6, 3)})
    return sorted(rows, key=lambda r: -float(r["cumulative_s"]))[:top]


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    record = common.start_record("startup", args)
    repeats = 1 if args.quick else args.repeats
    figures = {}
    for name, argv in {**LIGHT, **FULL}.items():
        wall(argv)  # warm the file cache once
        times = [wall(argv) for _ in range(repeats)]
        figures[name] = {"median_s": round(common.median(times), 3), "runs_s": [round(t, 3) for t in times]}
        print(f"{name:<36} median {figures[name]['median_s']:.2f} s over {repeats}")
    record["figures"] = figures
    record["fit_help_heaviest_imports"] = heaviest_imports(FULL["fit --help"])
    record["targets"] = {name: {"target_s": TARGET_S, "met": figures[name]["median_s"] < TARGET_S} for name in LIGHT}
    common.write_record(record, args)


if __name__ == "__main__":
    main()
