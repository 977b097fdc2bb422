"""``serve`` started again and again on one checkpoint: time to the first answer and memory, per quantization.

For each ``--quantize`` kind, a fresh cache folder (``NER_LIT_CACHE``) and ``--starts`` starts of
``python -m ner_lit serve --ckpt_path CKPT --quantize KIND``, one after the other, each stopped
after its first answer: the first has a helper process export (and quantize) and check
everything and then loads the graph kept, the later ones load that graph at once (the banner's
``start-up:`` line says which). Per start: seconds from the process start to the first ``/api``
answer, the server's VmRSS after it and its peak (VmHWM; a helper's own is not included), and
how its graph was made.

    python bench/serve_restart.py --ckpt runs/me5-search/e10-s7/version_0/checkpoints/best.ckpt
    python bench/serve_restart.py --quick   # the tiny random test model; figures mean nothing

Results: bench/results/serve_restart.json and .md (``--quick``: bench/work/quick-results).
"""
from __future__ import annotations

import argparse
import http.client
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench import common  # noqa: E402

TEXT = "김철수는 3월 5일 서울에서 삼성전자를 방문했다."
MIB = 2**20


def start(name: str, argv: list[str], cache: Path, logs: Path) -> dict[str, Any]:
    from bench.serve_clients import Server, post

    t0 = time.perf_counter()
    server = Server(name, argv, logs, startup_timeout_s=900, env={**os.environ, "NER_LIT_CACHE": str(cache)})
    try:
        server.wait_ready()
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)
        status, body = post(conn, {"text": TEXT})
        first = time.perf_counter() - t0
        conn.close()
        if status != 200:
            raise SystemExit(f"{name}: first request answered {status}: {body[:300]!r}")
        memory = common.proc_status(server.proc.pid)
    finally:
        server.stop()
    banner = "\n".join(server.banner)
    return {"first_answer_s": first, "rss_bytes": memory.get("VmRSS"), "peak_rss_bytes": memory.get("VmHWM"),
            "kept": "start-up:    the graph an earlier start made" in banner,
            "helper": "start-up:    the graph a helper process made" in banner,
            "runtime": next((line.split("device:", 1)[1].strip() for line in server.banner if "device:" in line), "")}


def markdown(rec: dict[str, Any]) -> str:
    m = rec["machine"]
    lines = [f"# `serve` restarts (`bench/serve_restart.py`){' (QUICK: figures mean nothing)' if rec['quick'] else ''}", "",
             f"{rec['date']} · {m['cpu']} ({', '.join(m['isa'])}) · {m['cores']} cores · load average at start "
             f"{m['load_average_at_start'][0]:.2f}, at end {m['load_average_at_end'][0]:.2f} · checkpoint "
             f"`{rec['checkpoint']}`. Each start is a new process, stopped after its first answer; start 1 of "
             "each kind has an empty cache folder.", "",
             "| --quantize | start | graph | first answer, s | RSS after it, MiB | peak, MiB |",
             "| --- | ---: | --- | ---: | ---: | ---: |"]
    for kind, starts in rec["starts"].items():
        for i, s in enumerate(starts, 1):
            made = "kept" if s["kept"] else "a helper's" if s.get("helper") else "made here"
            lines.append(f"| {kind} | {i} | {made} | {s['first_answer_s']:.1f} | "
                         f"{s['rss_bytes'] / MIB:,.0f} | {s['peak_rss_bytes'] / MIB:,.0f} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    ap = common.parser(__doc__.split("\n")[0])
    ap.add_argument("--ckpt", type=Path, help="the checkpoint to serve (a configs/me5.yaml run's best)")
    ap.add_argument("--quantize", nargs="+", default=["none", "int8", "int8-small"])
    ap.add_argument("--starts", type=int, default=3)
    return ap.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    work = common.WORK / ("serve-restart-quick" if args.quick else "serve-restart")
    shutil.rmtree(work, ignore_errors=True)
    (work / "logs").mkdir(parents=True)
    ckpt = args.ckpt
    if args.quick:  # the offline quickstart recipe, a few batches
        import subprocess

        root = work / "tiny-run"
        subprocess.run([sys.executable, "-m", "ner_lit", "fit", "--config", "configs/tiny.yaml", "--trainer.max_epochs", "1",
                        "--trainer.limit_train_batches", "3", "--trainer.default_root_dir", str(root)],
                       cwd=REPO, check=True, capture_output=True, env={**os.environ, "NER_LIT_CACHE": str(work / "fit-cache")})
        from ner_lit.checkpoint.runs import resolve_checkpoint

        ckpt = resolve_checkpoint("best", root)
        args.starts = 2
    elif ckpt is None or not ckpt.is_file():
        raise SystemExit(f"--ckpt: a checkpoint is needed (got {ckpt})")
    record = common.start_record("serve_restart", args, common.serving_machine(["onnxruntime", "torch"]))
    record["checkpoint"] = common.rel(ckpt)
    record["starts"] = {}
    for kind in args.quantize:
        cache = work / f"cache-{kind}"
        argv = [sys.executable, "-m", "ner_lit", "serve", "--ckpt_path", str(ckpt), "--port", "0", "--quantize", kind]
        record["starts"][kind] = [start(f"{kind}-{i}", argv, cache, work / "logs") for i in range(args.starts)]
    common.write_record(record, args)
    text = markdown(record)
    common.write_text(common.results_dir(args) / "serve_restart.md", text)
    print(text)


if __name__ == "__main__":
    main()
