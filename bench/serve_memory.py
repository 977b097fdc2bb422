"""Serving memory per runtime: what ``serve`` holds resident for the weights it runs.

multilingual-e5-small is built by the shared tool, made into a ner_lit checkpoint without real training (one optimizer step on 16 KLUE
sentences: the weights' size is what matters here, not their accuracy), then served once per
runtime (eager, torchscript, onnxruntime; packing on, as ``serve`` defaults). Each server is
started with ``python -m ner_lit serve`` in its own process; once ``/health`` answers and one
``/api`` request came back, its ``/proc/PID/status`` gives VmRSS (resident now) and VmHWM
(the peak, start-up included), with RssAnon/RssFile (private memory vs mapped files).

    python bench/serve_memory.py [--shared ../shared] [--code DIR]

``--code`` serves with another checkout's ner_lit (the tree before a change, for a before/after table).
Writes bench/results/serve_memory.json and serve_memory.md.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402

RUNTIMES = ("eager", "torchscript", "onnxruntime")
TRAIN_SENTENCES = 16
MAX_LENGTH = 128
#: What one request sends: a KLUE-like sentence.
TEXT = "김철수는 3월 5일 서울에서 삼성전자를 방문했다."
STATUS_KEYS = ("VmRSS", "VmHWM", "RssAnon", "RssFile")


def checkpoint(args, model: Path) -> Path:
    """A ner_lit checkpoint of multilingual-e5-small after one optimizer step (reused when present)."""
    root = common.WORK / "serve-memory"
    found = sorted(p for p in root.glob("version_*/checkpoints/*.ckpt") if p.name != "last.ckpt")
    if found:
        return found[-1]
    from ner_lit.corpus.klue import read_klue_tsv, write_klue_tsv

    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    klue = common.klue_dir(args)
    for name in ("train.tsv", "dev.tsv"):
        write_klue_tsv(read_klue_tsv(klue / name)[:TRAIN_SENTENCES], data / name, overwrite=True)
    cmd = [sys.executable, "-m", "ner_lit", "fit", "--config", str(common.REPO / "configs" / "me5.yaml"),
           "--model.pretrained", str(model), "--data.tokenizer", str(model), "--data.data_dir", str(data),
           "--data.max_length", str(MAX_LENGTH), "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
           "--trainer.precision", "32-true", "--trainer.default_root_dir", str(root),
           "--trainer.enable_progress_bar", "false", "--export.dirname", "null", "--data.cache_dir", str(root / "cache")]
    print("making the checkpoint (1 step):", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=str(common.REPO), stdout=subprocess.DEVNULL)
    found = sorted(p for p in root.glob("version_*/checkpoints/*.ckpt") if p.name != "last.ckpt")
    if not found:
        raise SystemExit(f"the fit under {root} left no best checkpoint")
    return found[-1]


def weight_bytes(path: Path) -> dict[str, int]:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)["state_dict"]
    tensors = [v for k, v in state.items() if k.startswith("model.") and isinstance(v, torch.Tensor)]
    return {"parameters": sum(t.numel() for t in tensors), "bytes": sum(t.numel() * t.element_size() for t in tensors),
            "checkpoint_file_bytes": path.stat().st_size}


def serve_once(ckpt: Path, runtime: str, code: Path) -> dict[str, Any]:
    """``serve --runtime RUNTIME`` with ``code``'s ner_lit, until one /api answer: its memory then."""
    from bench.serve_clients import Server

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PL_", "NER_LIT_"))}
    env["PYTHONPATH"] = str(code)
    cmd = [sys.executable, "-m", "ner_lit", "serve", "--ckpt_path", str(ckpt), "--host", "127.0.0.1", "--port", "0",
           "--runtime", runtime]
    logs = common.WORK / "serve-memory" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    server = Server(runtime, cmd, logs, startup_timeout_s=900, env=env, cwd=code)
    try:
        url = f"http://127.0.0.1:{server.wait_ready()}"
        with urllib.request.urlopen(url + "/health", timeout=60) as resp:
            health = json.loads(resp.read())
        request = urllib.request.Request(url + "/api", data=json.dumps({"text": TEXT}).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=120) as resp:
            answer = json.loads(resp.read())
        first_answer_s = time.monotonic() - started
        status = common.proc_status(server.proc.pid, STATUS_KEYS)
    finally:
        server.stop()
    device = next((line.split(":", 1)[1].strip() for line in server.banner if line.strip().startswith("device:")), "")
    return {"runtime": runtime, "banner_device": device, "first_answer_s": round(first_answer_s, 1),
            "answered": bool(answer.get("result")), "model": health.get("model"), **status}


def table(record: dict[str, Any]) -> str:
    mb = 1e6
    w = record["weights"]["bytes"]
    rows = ["| runtime | VmRSS | VmHWM (peak) | RssAnon | RssFile | RSS / weights | first answer |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for r in record["runs"]:
        rows.append(f"| {r['runtime']} | {r['VmRSS'] / mb:,.0f} MB | {r['VmHWM'] / mb:,.0f} MB | {r['RssAnon'] / mb:,.0f} MB "
                    f"| {r['RssFile'] / mb:,.0f} MB | {r['VmRSS'] / w:.2f}x | {r['first_answer_s']} s |")
    m = record["machine"]
    return (f"Serving memory, multilingual-e5-small ({record['weights']['parameters']:,} parameters, "
            f"{w / mb:,.0f} MB of float32 weights), one process per runtime after one /api answer; "
            f"{record['date']}, {m['cpu']}, {m['cores']} cores, load average {m['load_average_at_start'][0]:.2f} "
            f"at start; code: {record['code']}.\n\n" + "\n".join(rows) + "\n")


def main() -> None:
    ap = common.parser(__doc__.split("\n\n")[0])
    ap.add_argument("--code", type=Path, default=common.REPO, help="the checkout whose ner_lit serves (default: this one)")
    ap.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=RUNTIMES)
    args = ap.parse_args()
    record = common.start_record("serve_memory", args)
    model = common.me5_dir(args)
    ckpt = checkpoint(args, model)
    record.update({"code": str(args.code), "checkpoint": str(ckpt.relative_to(common.REPO)), "weights": weight_bytes(ckpt),
                   "text": TEXT, "runs": []})
    for runtime in args.runtimes:
        print(f"serving with --runtime {runtime} ...", flush=True)
        run = serve_once(ckpt, runtime, args.code)
        print(json.dumps(run), flush=True)
        record["runs"].append(run)
    path = common.write_record(record, args)
    common.write_text(path.with_suffix(".md"), table(record))
    print(table(record))


if __name__ == "__main__":
    main()
