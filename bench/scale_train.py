"""Training data at scale: reading and encoding a large corpus, cold and cached,
its memory, and the memory of a few training steps on it.

Corpora are KLUE-NER train.tsv (5,000 sentences) repeated to N sentences (ids made unique),
written once under bench/work/scale-train. Every measurement is a child process of its own:

* ``setup cold``: ``NERDataModule.setup("fit")`` with an empty cache (read, encode, write the
  memory-mapped entry); ``setup cached``: the same again, loading the entry. Validation is
  KLUE dev (5,000 sentences) in both. The tokenizer is the reference model's (no scratch
  tokenizer training in the figures).
* ``fit``: ``python -m ner_lit fit`` with the reference model (4x256 BERT, untrained
  Hugging Face directory) on the cached corpus, ``limit_train_batches`` steps, one short
  validation.

Memory is the child's own: peak RSS (``VmHWM``), and the peak of its anonymous memory
(``RssAnon``, sampled every 20 ms), which leaves out the memory-mapped entry's pages (clean
file pages: the kernel's page cache, shared between processes and dropped under pressure).
``--baseline-repo DIR`` runs the setup children against another checkout too (e.g. the tree
before a change) for a before/after table.

    python bench/scale_train.py                          # 10k and 100k sentences
    python bench/scale_train.py --sizes 10000 100000 1000000
    python bench/scale_train.py --baseline-repo DIR --baseline-sizes 10000 100000
    python bench/scale_train.py --sizes 100000 --no-fit --baseline-repo DIR   # cold/cached setup only, both checkouts

Writes bench/results/scale_train.json and bench/results/scale_train.md.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402

SCALE = common.WORK / "scale-train"

#: Run inside every child: a thread that keeps the peak of RssAnon, and a report of /proc/self/status.
MONITOR = """
import json, sys, threading, time
def _status():
    out = {}
    for line in open('/proc/self/status'):
        key, _, value = line.partition(':')
        if key in ('VmRSS', 'VmHWM', 'RssAnon', 'RssFile'):
            out[key] = int(value.split()[0]) / 1024
    return out
_peak = {'RssAnon': 0.0}
def _watch():
    while True:
        _peak['RssAnon'] = max(_peak['RssAnon'], _status()['RssAnon'])
        time.sleep(0.02)
threading.Thread(target=_watch, daemon=True).start()
def report(**extra):
    s = _status()
    _peak['RssAnon'] = max(_peak['RssAnon'], s['RssAnon'])
    print('RESULT ' + json.dumps({'peak_rss_mb': s['VmHWM'], 'peak_anon_mb': _peak['RssAnon'],
                                  'end_rss_mb': s['VmRSS'], 'end_file_mb': s['RssFile'], **extra}), flush=True)
"""

SETUP_CHILD = MONITOR + """
opts = json.loads(sys.argv[1])
from ner_lit.data.datamodule import NERDataModule
before = _status()
dm = NERDataModule(**opts)
start = time.perf_counter()
dm.setup('fit')
seconds = time.perf_counter() - start
report(seconds=seconds, windows=len(dm.train_windows), val_sentences=len(dm.eval_items['validate']),
       import_rss_mb=before['VmRSS'], import_anon_mb=before['RssAnon'])
"""

FIT_CHILD = MONITOR + """
start = time.perf_counter()
from ner_lit.cli.lightning import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    if exc.code:
        raise
report(seconds=time.perf_counter() - start)
"""


def child_env(repo: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PL_", "NER_LIT_"))}
    env.update({"PYTHONPATH": str(repo), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "NER_LIT_CACHE": str(SCALE / "cache-default")})
    return env


def train_file(n: int, args) -> Path:
    """KLUE train.tsv repeated to ``n`` sentences: its blocks copied, each header's id prefixed by the round."""
    path = SCALE / f"train-{n}.tsv"
    if path.is_file():
        return path
    SCALE.mkdir(parents=True, exist_ok=True)
    raw = (common.klue_dir(args) / "train.tsv").read_text(encoding="utf-8")
    blocks = [b for b in raw.split("\n\n") if b.strip()]
    headed = []
    for block in blocks:
        lines = block.split("\n")
        last = max(i for i, line in enumerate(lines) if line.startswith("## "))
        headed.append((lines[last][3:], "\n".join(lines[last + 1:])))
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for i in range(n):
            header, body = headed[i % len(headed)]
            f.write(f"## r{i // len(headed)}-{header}\n{body}\n\n")
    os.replace(tmp, path)
    return path


def run_monitored(code: str, argv: list[str], repo: Path) -> dict[str, Any]:
    """``code`` (MONITOR + a child script) in a child process of ``repo``: the RESULT it reports, and its wall time."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *argv], cwd=repo, env=child_env(repo), capture_output=True, text=True)
    wall = time.perf_counter() - start
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not line:
        sys.exit(f"child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(line[0][7:])
    result["wall_s"] = wall
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}


def setup_options(n: int, cache: Path, ref: Path, args) -> dict[str, Any]:
    return {"data_dir": str(SCALE), "train_file": train_file(n, args).name, "val_file": str(common.klue_dir(args) / "dev.tsv"),
            "tokenizer": str(ref), "labels": common.REFERENCE_LABELS, "max_length": 128, "stride": 32, "cache_dir": str(cache)}


def measure_setup(n: int, repo: Path, ref: Path, args, label: str) -> list[dict[str, Any]]:
    """Cold (empty cache) then cached setup('fit') of n sentences, each in its own child."""
    cache = SCALE / f"cache-{label}-{n}"
    shutil.rmtree(cache, ignore_errors=True)
    runs = []
    for phase in ("cold", "cached"):
        r = run_monitored(SETUP_CHILD, [json.dumps(setup_options(n, cache, ref, args))], repo)
        r.update(code=label, sentences=n, phase=f"setup {phase}")
        r["anon_bytes_per_sentence"] = round((r["peak_anon_mb"] - r["import_anon_mb"]) * 2**20 / n)
        print(json.dumps(r), flush=True)
        runs.append(r)
    entry_bytes = train_entry_bytes(cache / "encoded", n)
    for r in runs:
        if entry_bytes is not None:
            r["cache_bytes_per_sentence"] = round(entry_bytes / n)
    return runs


def train_entry_bytes(encoded: Path, n: int) -> int | None:
    """The bytes of the training file's cache entry (its manifest counts n sentences); None for another layout."""
    for manifest in encoded.glob("*/manifest.json") if encoded.is_dir() else ():
        if json.loads(manifest.read_text())["counts"]["sentences"] == n:
            return sum(p.stat().st_size for p in manifest.parent.iterdir())
    return None


def measure_fit(n: int, ref: Path, args) -> dict[str, Any]:
    cache = SCALE / f"cache-this-{n}"
    opts = setup_options(n, cache, ref, args)
    root = SCALE / "runs" / f"fit-{n}-{time.time_ns()}"
    argv = ["fit", "--model.pretrained", str(ref), "--data.tokenizer", str(ref), "--data.labels", json.dumps(common.REFERENCE_LABELS),
            "--data.data_dir", opts["data_dir"], "--data.train_file", opts["train_file"], "--data.val_file", opts["val_file"],
            "--data.cache_dir", str(cache), "--trainer.accelerator", "cpu", "--trainer.max_epochs", "1",
            "--trainer.limit_train_batches", str(args.train_batches), "--trainer.limit_val_batches", str(args.val_batches),
            "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
            "--trainer.num_sanity_val_steps", "0"]
    r = run_monitored(FIT_CHILD, argv, common.REPO)
    shutil.rmtree(root, ignore_errors=True)
    r.update(code="this", sentences=n, phase=f"fit {args.train_batches} steps")
    print(json.dumps(r), flush=True)
    return r


def table(runs: list[dict[str, Any]]) -> str:
    head = ("| code | sentences | step | time (s) | peak RSS (MB) | peak anon (MB) | anon bytes/sentence | cache bytes/sentence |\n"
            "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |\n")
    rows = []
    for r in runs:
        rows.append(f"| {r['code']} | {r['sentences']:,} | {r['phase']} | {r.get('seconds', r['wall_s']):.1f} | "
                    f"{r['peak_rss_mb']:,.0f} | {r['peak_anon_mb']:,.0f} | {r.get('anon_bytes_per_sentence', '')} | "
                    f"{r.get('cache_bytes_per_sentence', '')} |")
    return head + "\n".join(rows) + "\n"


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="training sentences per run")
    ap.add_argument("--baseline-repo", type=Path, default=None,
                    help="another checkout whose setup is measured too (e.g. the tree before a change)")
    ap.add_argument("--baseline-sizes", type=int, nargs="+", default=None, help="sizes for the baseline (default --sizes)")
    ap.add_argument("--train-batches", type=int, default=20, help="training steps of the fit run")
    ap.add_argument("--val-batches", type=int, default=5, help="validation batches of the fit run")
    ap.add_argument("--no-fit", action="store_true", help="measure the setup children only (encoding before/after)")
    ap.add_argument("--note", default="", help="a remark stored with the results (e.g. what else ran on the machine)")
    args = ap.parse_args()
    sizes = [300, 1200] if args.quick else args.sizes
    if args.quick:
        args.train_batches, args.val_batches = 2, 1
    record = common.start_record("scale_train", args)
    record["note"] = args.note
    ref = common.reference_model(args)
    runs: list[dict[str, Any]] = []
    for n in sizes:
        runs += measure_setup(n, common.REPO, ref, args, "this")
        if not args.no_fit:
            runs.append(measure_fit(n, ref, args))
    if args.baseline_repo:
        for n in args.baseline_sizes or sizes:
            runs += measure_setup(n, args.baseline_repo.resolve(), ref, args, "baseline")
    record["runs"] = runs
    record["baseline_repo"] = str(args.baseline_repo) if args.baseline_repo else None
    out = common.results_dir(args)
    common.write_record(record, args)
    md = (f"# Training data at scale\n\n{record['date']}, {record['machine']['cpu']}, {record['machine']['cores']} cores, "
          f"load {record['machine']['load_average_at_start']} at start, {record['machine']['load_average_at_end']} at end. "
          f"{args.note}\n\n" + table(runs))
    common.write_text(out / "scale_train.md", md)
    print(md)


if __name__ == "__main__":
    main()
