"""Serving speed: ner_lit's server against the original system's way (issue 4).

Two real server processes answer ``POST /api`` on 127.0.0.1 with the same weights:

* ``ner_lit``: ``python -m ner_lit serve --ckpt_path <ckpt> --port 0`` (waitress, 8 request
  threads, micro-batching: concurrent requests share a forward pass, several short texts
  packed into one 128-token row; the model runs under ONNX Runtime, ``--runtime
  onnxruntime``, the default; request threads tokenize and build their answers, the batch
  worker runs the model and decodes the whole batch);
* ``ner_lit-torchscript``: the same with ``--runtime torchscript`` (a TorchScript trace, the
  default before ONNX Runtime), for the runtime's share of the gain (information);
* ``ner_lit-t1-w2`` (with a 1-thread setting): ``--model_workers 2`` and one torch thread,
  two forward passes at once (information; the targets compare the pairs above);
* ``naive``: the original system's way, a small Flask app in this file run by the Flask
  development server with ``threaded=False`` (one request at a time, every request a new
  TCP connection since that server speaks HTTP/1.0), every text padded (and truncated) to
  128 tokens, one forward pass per request, the per-token top-1 label/probability answer.
  The model and tokenizer are ``ner_lit.inference.predictor.Predictor.from_checkpoint(ckpt)``'s.

Two no-op servers give the ceiling of the HTTP stack and of this load generator on this
machine: the same stacks (waitress + Flask, Flask development server) answering a fixed
JSON without a model.

The load: the first 300 sentences of dev.tsv, sent as the original clients did (a bare JSON
string body), by 1 and by 8 client threads of this process, each over one keep-alive
``http.client`` connection (re-opened whenever the server closes it), every client going
through all 300 sentences from its own offset. Servers run side by side and the rounds are
interleaved (round r: every server, every client count), so a drift of the machine's load
hits every configuration alike. Latency is measured per request at the client (send to
last byte read); requests/s is successful requests over the wall time from the start
barrier to the last client finishing; the CPU used by this process (the load generator),
by the server process and by the whole machine during each measurement is recorded, so a
load generator or another process eating the 2 cores shows in the figures (a target judged
while other processes used more than 0.2 cores is flagged "distorted").

Torch's intra-op threads: each model server runs twice, with torch's default (one thread per
core; what ``python -m ner_lit serve`` does out of the box) and with ``OMP_NUM_THREADS=1``
(``-t1``). On 2 cores shared with the clients, or with anything else, a 2-thread torch can
stall in its parallel regions; the pair shows how much. Targets are judged on the first
setting of ``--torch-threads`` (default: torch's default).

Every measurement is bounded (``--max-seconds``, default 20): clients send no new request
after it, so a server slowed down by other load can not stretch the run.

    python bench/serve_bench.py [--ckpt PATH] [--shared ../shared] [--rounds 3] [--max-seconds 20]
                                [--torch-threads default,1] [--wait-until HH:MM]
    python bench/serve_bench.py --quick   # 20 requests, 1 and 2 clients, a tiny random model, 1 torch thread

Without ``--ckpt`` the checkpoint is the best one of a run of the reference model fine-tuned
by ner_lit that bench/work already holds (bench/accuracy.py's runs, or an earlier run of
this script); failing that, the reference model is fine-tuned for 1 epoch into
bench/work/serve-runs. The checkpoint used is copied to bench/work/serve/ first, so a run
still writing its checkpoints can not delete it under the servers.

Results: bench/results/serve.json and serve.md (``--quick``: bench/work/quick-results).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import http.client
import json
import os
import platform
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench import common  # noqa: E402

WORK = REPO / "bench" / "work"
RESULTS = REPO / "bench" / "results"

NAIVE_MAX_LENGTH = 128
FULL_SENTENCES = 300
FULL_CLIENTS = (1, 8)
QUICK_SENTENCES = 20
QUICK_CLIENTS = (1, 2)
HEADERS = {"Content-Type": "application/json"}
TARGET_THROUGHPUT_RATIO = 3.0
AIM_THROUGHPUT_RATIO = 5.0
TARGET_P50_RATIO = 0.5
#: Above this many cores used by other processes during a measurement, its figures are flagged distorted.
MAX_OTHER_CPU_CORES = 0.2
#: The original system, measured on this machine class (from the issue), for scale.
ORIGINAL_SYSTEM = {
    "one_client": {"requests_per_s": [73, 81], "p50_ms": [12, 14]},
    "four_clients": {"requests_per_s": [97, 99], "p50_ms": 40},
}
_OTHER_BENCH = re.compile(r"bench/[\w./-]*\.py")  # what `pgrep -f "bench/.*\.py"` shows
_OTHER_LOAD = re.compile(r"-m ner_lit (fit|validate|test|predict)|pytest")


# =============================================================================== servers
# Each server is this file run with --_role; it prints "Serving on http://HOST:PORT" once it
# listens, like `python -m ner_lit serve` does.
def _naive_app(ckpt: Optional[str], model_dir: Optional[str]):
    """The original system's API: one text in, the forward pass over it padded to 128."""
    import flask
    import torch

    from ner_lit.inference.predictor import Predictor

    pred = Predictor.from_checkpoint(ckpt) if ckpt else Predictor.from_pretrained(model_dir)
    model, tokenizer, labels = pred.model.eval(), pred.tokenizer, list(pred.labels)
    app = flask.Flask("naive")

    @app.route("/api", methods=["POST"])
    def api():
        body = flask.request.get_json(force=True)
        text = body["text"] if isinstance(body, dict) else body
        enc = tokenizer(text, padding="max_length", truncation=True, max_length=NAIVE_MAX_LENGTH,
                        return_special_tokens_mask=True, return_tensors="pt")
        with torch.no_grad():
            logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits[0]
        prob, top = logits.softmax(-1).max(-1)
        pieces = tokenizer.convert_ids_to_tokens(enc["input_ids"][0].tolist())
        special = enc["special_tokens_mask"][0].tolist()
        result = [{"token": p, "label": labels[int(t)], "prob": float(q)}
                  for p, t, q, s in zip(pieces, top.tolist(), prob.tolist(), special) if not s]
        return flask.jsonify(text=text, result=result)

    return app


def _noop_app():
    import flask

    app = flask.Flask("noop")

    @app.route("/api", methods=["POST"])
    def api():
        body = flask.request.get_json(force=True)
        text = body["text"] if isinstance(body, dict) else body
        return flask.jsonify(text=text, result=[])

    return app


def run_role(role: str, ckpt: Optional[str], model_dir: Optional[str]) -> None:
    if role == "naive":
        app, server = _naive_app(ckpt, model_dir), "flask"
    elif role == "noop-flask":
        app, server = _noop_app(), "flask"
    elif role == "noop-waitress":
        app, server = _noop_app(), "waitress"
    else:
        raise SystemExit(f"unknown role {role}")
    serve_app(app, server)


def serve_app(app, server: str) -> None:
    """Serve a Flask ``app`` on 127.0.0.1, a port the OS picks, announced by a "Serving on" line:
    ``server`` "flask" is the development server one request at a time, "waitress" 8 threads."""
    if server == "flask":  # what app.run(threaded=False) runs, on a port the OS picks
        from werkzeug.serving import make_server

        srv = make_server("127.0.0.1", 0, app, threaded=False)
        print(f"Serving on http://127.0.0.1:{srv.port}", flush=True)
        srv.serve_forever()
    else:
        import waitress.server

        srv = waitress.server.create_server(app, host="127.0.0.1", port=0, threads=8)
        print(f"Serving on http://127.0.0.1:{srv.effective_port}", flush=True)
        srv.run()


class Server:
    """A server child process on 127.0.0.1; ``port`` read from its "Serving on" line."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, torch_threads: Optional[int] = None,
                 startup_timeout_s: float = 180.0) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_dir / f"server-{name}.log"
        env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
        if torch_threads is not None:  # torch takes its intra-op thread count from OMP_NUM_THREADS at start
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(torch_threads)
        with open(self.log_path, "wb") as err:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, env=env, cwd=str(REPO))
        self.port: Optional[int] = None
        self.banner: list[str] = []
        self._startup_timeout_s = startup_timeout_s
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._started = threading.Event()
        self._reader.start()

    def _read(self) -> None:
        for raw in self.proc.stdout:  # type: ignore[union-attr]
            line = raw.decode("utf-8", "replace").rstrip()
            if self.port is None:
                m = re.match(r"Serving on http://127\.0\.0\.1:(\d+)", line)
                if m:
                    self.port = int(m.group(1))
                    self._started.set()
                    continue
                self.banner.append(line)
        self._started.set()  # the process ended

    def wait_ready(self) -> int:
        self._started.wait(self._startup_timeout_s)
        if self.port is None:
            self.stop()
            log = self.log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
            raise SystemExit(f"server {self.name} did not start (exit {self.proc.poll()}):\n{log}")
        return self.port

    def cpu_s(self) -> float:
        """User + system CPU seconds of the server process so far (all its threads)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)


# =============================================================================== load
def _machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    vals = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    total = sum(vals[:8])
    return total - idle, total


def _client(port: int, bodies: list[bytes], barrier: threading.Barrier, out: dict[str, Any], max_s: float) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    lat: list[float] = []
    errors: list[str] = []
    connects = 0
    barrier.wait()
    deadline = time.perf_counter() + max_s
    for body in bodies:
        t0 = time.perf_counter()
        if t0 > deadline:  # a bounded run: stop sending, whatever is left
            out["stopped_early"] = True
            break
        try:
            if conn.sock is None:
                connects += 1
            conn.request("POST", "/api", body=body, headers=HEADERS)
            resp = conn.getresponse()
            resp.read()
            status = resp.status
            if resp.will_close:
                conn.close()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        dt = time.perf_counter() - t0
        if status == 200:
            lat.append(dt)
        else:
            errors.append(f"HTTP {status}")
    conn.close()
    out.update(latencies=lat, errors=errors, connects=connects)


def _percentiles(lat_s: list[float]) -> dict[str, float]:
    ms = sorted(x * 1000 for x in lat_s)
    if len(ms) < 2:
        v = ms[0] if ms else float("nan")
        return {"p50_ms": v, "p95_ms": v, "p99_ms": v, "mean_ms": v, "max_ms": v}
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {"p50_ms": q[49], "p95_ms": q[94], "p99_ms": q[98], "mean_ms": statistics.fmean(ms), "max_ms": ms[-1]}


def measure(server: Server, texts: list[str], clients: int, per_client: int, max_s: float = 600.0) -> dict[str, Any]:
    """One measurement: ``clients`` threads, each ``per_client`` requests from its own offset;
    a client sends no new request once ``max_s`` seconds have passed."""
    assert server.port is not None
    n = len(texts)
    plans = [[json.dumps(texts[(c * n // clients + i) % n], ensure_ascii=False).encode("utf-8")
              for i in range(per_client)] for c in range(clients)]
    outs: list[dict[str, Any]] = [{} for _ in range(clients)]
    barrier = threading.Barrier(clients + 1)
    threads = [threading.Thread(target=_client, args=(server.port, plans[c], barrier, outs[c], max_s), daemon=True)
               for c in range(clients)]
    for t in threads:
        t.start()
    ru0, srv0, (busy0, tot0) = resource.getrusage(resource.RUSAGE_SELF), server.cpu_s(), _machine_busy()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ru1, srv1, (busy1, tot1) = resource.getrusage(resource.RUSAGE_SELF), server.cpu_s(), _machine_busy()
    lat = [x for o in outs for x in o["latencies"]]
    errors = [e for o in outs for e in o["errors"]]
    client_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    cores = os.cpu_count() or 1
    machine_cores = cores * (busy1 - busy0) / (tot1 - tot0) if tot1 > tot0 else float("nan")
    rec = {
        "clients": clients,
        "requests": len(lat),
        "errors": len(errors),
        "error_examples": sorted(set(errors))[:3],
        "stopped_early_by_time_bound": any(o.get("stopped_early") for o in outs),
        "wall_s": wall,
        "requests_per_s": len(lat) / wall,
        **_percentiles(lat),
        "new_connections_per_request": sum(o["connects"] for o in outs) / max(1, clients * per_client),
        # CPU in cores (1.0 = one core busy all the measurement long)
        "client_cpu_cores": client_cpu / wall,
        "server_cpu_cores": (srv1 - srv0) / wall,
        "machine_cpu_cores": machine_cores,
    }
    rec["other_cpu_cores"] = rec["machine_cpu_cores"] - rec["client_cpu_cores"] - rec["server_cpu_cores"]
    rec["_lat"] = lat  # popped by the caller: pooled over rounds, not written per round
    return rec


def summarize(rounds: list[dict[str, Any]], latencies_by_round: list[list[float]]) -> dict[str, Any]:
    rps = [r["requests_per_s"] for r in rounds]
    pooled = [x for lat in latencies_by_round for x in lat]
    out = {
        "clients": rounds[0]["clients"],
        "rounds": len(rounds),
        "requests": sum(r["requests"] for r in rounds),
        "errors": sum(r["errors"] for r in rounds),
        "requests_per_s": statistics.median(rps),
        "requests_per_s_min": min(rps),
        "requests_per_s_max": max(rps),
        **_percentiles(pooled),
    }
    for key in ("client_cpu_cores", "server_cpu_cores", "machine_cpu_cores", "other_cpu_cores", "new_connections_per_request"):
        out[key] = statistics.median(r[key] for r in rounds)
    out["stopped_early_by_time_bound"] = any(r["stopped_early_by_time_bound"] for r in rounds)
    out["per_round"] = rounds
    return out


# =============================================================================== inputs
def read_texts(shared: Path, n: int) -> list[str]:
    from ner_lit.corpus.klue import read_klue_tsv

    dev = shared / "data" / "klue-ner" / "dev.tsv"
    if not dev.is_file():
        raise SystemExit(f"{dev} not found: pass --shared <the workplace's shared folder>")
    return [s.text for s in read_klue_tsv(dev)[:n]]


def build_tiny_model_dir(out: Path, texts: list[str]) -> Path:
    """A tiny random BERT token classifier (2 layers, hidden 32, 128 positions) + WordPiece over ``texts``' characters."""
    import torch
    from transformers import BertConfig, BertForTokenClassification, BertTokenizerFast

    from ner_lit.corpus.records import KLUE_LABELS

    if (out / "config.json").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    chars = sorted({ch for t in texts for ch in t if not ch.isspace()})
    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + [f"##{c}" for c in chars]
    tokenizer = BertTokenizerFast(vocab={p: i for i, p in enumerate(pieces)}, do_lower_case=False, strip_accents=False)
    torch.manual_seed(0)
    labels = list(KLUE_LABELS)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=NAIVE_MAX_LENGTH, num_labels=len(labels),
                        id2label=dict(enumerate(labels)), label2id={lab: i for i, lab in enumerate(labels)})
    BertForTokenClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _best_of(root: Path) -> Optional[Path]:
    from ner_lit.checkpoint.format import CheckpointError
    from ner_lit.checkpoint.runs import resolve_checkpoint

    try:
        return resolve_checkpoint("best", root)
    except CheckpointError:  # no run with checkpoints there (yet)
        return None
    except Exception as exc:  # noqa: BLE001 - e.g. a last.ckpt being written right now
        print(f"skipping {root}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None


def find_or_train_checkpoint(args, log_dir: Path) -> tuple[Path, dict[str, Any]]:
    """A fine-tuned reference-model checkpoint: reused from bench/work, or trained 1 epoch here."""
    candidates = [WORK / "serve-runs", WORK / "accuracy" / "main"]
    candidates += sorted(p for p in (WORK / "accuracy").glob("*") if p.is_dir() and p.name != "main")
    for root in candidates:
        best = _best_of(root)
        if best is not None:
            return best, {"origin": "reused", "run": str(root.relative_to(REPO))}
    ref = WORK / "refmodel"
    if not (ref / "config.json").is_file() and (WORK / "reference-model" / "config.json").is_file():
        ref = WORK / "reference-model"  # the same byte-identical build, made by the other bench scripts
    if not (ref / "config.json").is_file():
        tool = args.shared / "tools" / "reference-model" / "make_tiny_model.py"
        subprocess.run([sys.executable, str(tool), "--train", str(args.shared / "data" / "klue-ner" / "train.tsv"),
                        "--out", str(ref)], check=True, cwd=str(REPO))
    root = WORK / "serve-runs"
    cmd = [sys.executable, "-m", "ner_lit", "fit", "--model.pretrained", str(ref), "--data.tokenizer", str(ref),
           "--data.data_dir", str(args.shared / "data" / "klue-ner"), "--data.train_file", "train.tsv",
           "--data.val_file", "dev.tsv", "--model.learning_rate", "5e-4", "--data.batch_size", "32",
           "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(root), "--trainer.accelerator", "cpu",
           "--trainer.enable_progress_bar", "false", "--export.dirname", "null",
           "--data.cache_dir", str(WORK / "cache")]
    print("fine-tuning the reference model 1 epoch:", " ".join(shlex.quote(c) for c in cmd), flush=True)
    with open(log_dir / "fit.log", "wb") as log:
        subprocess.run(cmd, check=True, cwd=str(REPO), stdout=log, stderr=subprocess.STDOUT)
    best = _best_of(root)
    if best is None:
        raise SystemExit(f"the fine-tuning run under {root} left no best checkpoint; see {log_dir / 'fit.log'}")
    return best, {"origin": "trained here (1 epoch)", "run": str(root.relative_to(REPO)), "command": cmd}


def checkpoint_facts(path: Path) -> dict[str, Any]:
    from ner_lit.checkpoint.format import load_checkpoint
    from ner_lit.checkpoint.spec import SECTION, TaggerSpec

    ckpt = load_checkpoint(path)
    spec = TaggerSpec.from_dict(ckpt[SECTION], str(path))
    cfg = dict(spec.model_config or {})
    state = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    return {
        "epoch": ckpt.get("epoch"),
        "global_step": ckpt.get("global_step"),
        "scores": dict(spec.scores),
        "parameters": int(sum(v.numel() for k, v in state.items() if not k.endswith("position_ids"))),
        "model": {k: cfg.get(k) for k in ("model_type", "num_hidden_layers", "hidden_size", "num_attention_heads",
                                         "intermediate_size", "vocab_size", "max_position_embeddings")},
        "max_length": spec.max_length,
    }


# =============================================================================== bookkeeping
def other_benchmarks(pattern: re.Pattern = _OTHER_BENCH) -> list[str]:
    """Command lines of other benchmark processes (bench/*.py; or ``pattern``) that are not this run's."""
    mine = {os.getpid(), os.getppid()}
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) in mine:
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace").strip()
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid() or "serve_bench.py" in cmd or "test_bench_serve" in cmd:
            continue
        if pattern.search(cmd):
            found.append(f"{d.name}: {cmd[:200]}")
    return sorted(found)


def machine_busy_cores(sample_s: float) -> float:
    """Cores the whole machine keeps busy over ``sample_s`` seconds (idle servers use ~none)."""
    b0, t0 = _machine_busy()
    time.sleep(sample_s)
    b1, t1 = _machine_busy()
    return (os.cpu_count() or 1) * (b1 - b0) / max(1, t1 - t0)


def _deadline(until: str) -> _dt.datetime:
    hh, mm = (int(x) for x in until.split(":"))
    return _dt.datetime.now().replace(hour=hh, minute=mm, second=0, microsecond=0)


def wait_for_quiet(until: str) -> dict[str, Any]:
    """Poll until no other benchmark runs and the machine is idle (twice in a row), or the
    wall clock (local HH:MM) reaches ``until``."""
    deadline = _deadline(until)
    t0 = time.time()
    calm = 0
    while True:
        others = other_benchmarks()
        busy = machine_busy_cores(3.0)
        calm = calm + 1 if not others and busy < MAX_OTHER_CPU_CORES else 0
        if calm >= 2 or _dt.datetime.now() >= deadline:
            break
        print(f"waiting (until {until}): {len(others)} other benchmark process(es), machine busy {busy:.2f} cores"
              + (f": {others[0][:100]}" if others else ""), flush=True)
        time.sleep(15 if calm else 30)
    return {"waited_s": round(time.time() - t0, 1), "until": until, "gave_up_waiting": calm < 2,
            "busy_cores_when_started": busy}


def quiet_gate(until: Optional[str], max_wait_s: float = 90.0) -> float:
    """Before a measurement (until ``until``): wait up to ``max_wait_s`` for the machine to be idle."""
    if not until:
        return 0.0
    deadline = _deadline(until)
    t0 = time.time()
    while _dt.datetime.now() < deadline and time.time() - t0 < max_wait_s:
        if machine_busy_cores(1.0) < MAX_OTHER_CPU_CORES:
            break
        time.sleep(4)
    return round(time.time() - t0, 1)


def machine() -> dict[str, Any]:
    cpu, isa = common.cpu_info()

    def version(pkg: str) -> Optional[str]:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "isa": isa,
        "load_average_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "versions": {p: version(p) for p in ("torch", "transformers", "tokenizers", "lightning", "flask", "werkzeug",
                                             "waitress", "flask-classful")},
        "torch_threads_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")},
    }


def _fmt(x: float, nd: int = 1) -> str:
    return f"{x:.{nd}f}"


def markdown(rec: dict[str, Any]) -> str:
    m = rec["machine"]
    ob = rec["other_benchmarks"]
    lines = [
        f"# Serving speed: ner_lit vs the original system's way{' (QUICK: smoke test, figures mean nothing)' if rec['quick'] else ''}",
        "",
        f"{rec['date']} · {m['cpu']} · {m['cores']} cores · torch {m['versions']['torch']} · "
        f"transformers {m['versions']['transformers']} · waitress {m['versions']['waitress']} · werkzeug {m['versions']['werkzeug']}",
        "",
        f"Model: {rec['model']['description']}. Load: the first {rec['load']['sentences']} sentences of dev.tsv, "
        f"POST /api (bare JSON string), {rec['load']['rounds']} interleaved round(s) per configuration, "
        f"each client sending {rec['load']['requests_per_client']} requests over a keep-alive http.client connection "
        f"(the naive server closes it after every answer), or fewer where a measurement hit its bound of "
        f"{rec['load']['max_seconds_per_measurement']:g} s (marked *). "
        "req/s: median over rounds (min-max); latencies: percentiles over all rounds' requests. "
        f"CPU columns in cores (this machine has {m['cores']}): the load generator (client), the server process, "
        "everything else on the machine. `-t1`: the server's torch limited to 1 intra-op thread (OMP_NUM_THREADS=1); "
        "without suffix: torch's default (one thread per core).",
        "",
        "| server | clients | req/s | (min-max) | p50 ms | p95 ms | p99 ms | client CPU | server CPU | other CPU | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in rec["systems"]:
        for c, s in rec["results"][name].items():
            lines.append(
                f"| {name} | {c} | {_fmt(s['requests_per_s'])}{'*' if s['stopped_early_by_time_bound'] else ''} | {_fmt(s['requests_per_s_min'])}-{_fmt(s['requests_per_s_max'])} "
                f"| {_fmt(s['p50_ms'], 2)} | {_fmt(s['p95_ms'], 2)} | {_fmt(s['p99_ms'], 2)} | {_fmt(s['client_cpu_cores'], 2)} "
                f"| {_fmt(s['server_cpu_cores'], 2)} | {_fmt(s['other_cpu_cores'], 2)} | {s['errors']} |"
            )
    lines += ["", "| torch threads | target (all rounds) | measured | met |", "| --- | --- | ---: | --- |"]
    for setting, t0 in rec["targets_by_torch_threads"].items():
        t = {**t0, **{k: t0[k].get("all_rounds", t0[k]) for k in ("throughput", "p50")}}
        lines += [
            f"| {setting} | {t['throughput']['clients']} clients: ner_lit req/s >= {TARGET_THROUGHPUT_RATIO:g}x naive "
            f"(aim {AIM_THROUGHPUT_RATIO:g}x) | {t['throughput']['ratio']:.2f}x ({t['throughput']['ner_lit_requests_per_s']:.0f} vs "
            f"{t['throughput']['naive_requests_per_s']:.0f} req/s) | {'yes' if t['throughput']['met'] else 'NO'}"
            f"{', aim met' if t['throughput']['aim_met'] else ''}{'' if t['undistorted'] else ' (distorted: other load)'} |",
            f"| {setting} | 1 client: ner_lit p50 <= {TARGET_P50_RATIO:g}x naive p50 | {t['p50']['ratio']:.2f}x "
            f"({t['p50']['ner_lit_ms']:.2f} vs {t['p50']['naive_ms']:.2f} ms) | {'yes' if t['p50']['met'] else 'NO'}"
            f"{'' if t['undistorted'] else ' (distorted: other load)'} |",
        ]
    t = rec["targets"]
    lines += [
        "",
        f"The verdict (JSON `targets`) is for torch threads {next(iter(rec['targets_by_torch_threads']))}, judged on the "
        "quiet rounds below where both servers have one, else on all rounds. "
        f"Load generator ceiling: the no-op waitress server takes {_fmt(t['ceiling']['noop_waitress_requests_per_s'])} req/s "
        f"with {t['throughput']['clients']} clients (no-op Flask development server: {_fmt(t['ceiling']['noop_flask_requests_per_s'])}); "
        f"ner_lit reaches {t['ceiling']['ner_lit_share_of_ceiling'] * 100:.0f}% of it. During ner_lit's "
        f"{t['throughput']['clients']}-client measurement the client used {t['ceiling']['client_cpu_cores_ner_lit']:.2f} "
        f"and the whole machine {t['ceiling']['machine_cpu_cores_ner_lit']:.2f} of {m['cores']} cores.",
        "",
        f"Other benchmark processes (bench/*.py): {len(ob['at_start'])} at start, {len(ob['at_end'])} at end; other training/"
        f"test processes: {len(rec['other_load']['at_start'])} at start, {len(rec['other_load']['at_end'])} at end"
        + (" -- the figures are distorted by that concurrent load (see the other CPU column)."
           if ob["at_start"] or ob["at_end"] or rec["other_load"]["at_start"] or rec["other_load"]["at_end"]
           else " (a quiet machine).")
        + " Sanity (each sentence once to both servers, within 15 s each; ner_lit decodes BIO-valid paths with "
        "Viterbi, naive takes each token's argmax, so labels differ where the argmax path is invalid): "
        + "; ".join(f"torch threads {k}: {v['token_label_agreement'] * 100:.2f}% of token labels agree, "
                    f"{v['sentences_same_tokens']}/{v['sentences']} sentences tokenized alike" for k, v in rec["sanity"].items())
        + ".",
        "",
        f"Command: `{rec['command']}`",
    ]
    if "targets_quiet_by_torch_threads" in rec:
        lines += quiet_markdown(rec)
    return "\n".join(lines) + "\n"


# =============================================================================== main
def sanity(servers: dict[str, Server], texts: list[str], suffix: str = "", max_s: float = 15.0) -> dict[str, Any]:
    """Each text once, sequentially, to ner_lit and naive (also the warm-up): same labels?
    Each server gets at most ``max_s`` seconds; the comparison covers the texts both answered."""
    answers: dict[str, list[Any]] = {}
    for name in ("ner_lit", "naive"):
        conn = http.client.HTTPConnection("127.0.0.1", servers[name + suffix].port, timeout=60)
        out = []
        deadline = time.perf_counter() + max_s
        for t in texts:
            if time.perf_counter() > deadline:
                break
            conn.request("POST", "/api", body=json.dumps(t, ensure_ascii=False).encode("utf-8"), headers=HEADERS)
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise SystemExit(f"{name} answered {resp.status} to {t[:40]!r}: {body[:300]!r}")
            out.append(json.loads(body)["result"])
            if resp.will_close:
                conn.close()
        conn.close()
        answers[name] = out
    same = agree = total = 0
    for a, b in zip(answers["ner_lit"], answers["naive"]):
        total += max(len(a), len(b))
        if len(a) == len(b):
            same += 1
            agree += sum(x["label"] == y["label"] for x, y in zip(a, b))
    return {"sentences": min(len(a) for a in answers.values()), "sentences_same_tokens": same, "tokens": total,
            "token_label_agreement": agree / max(1, total)}


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared", help="the workplace's shared folder (default <repo>/../shared)")
    ap.add_argument("--ckpt", type=Path, default=None, help="the ner_lit checkpoint to serve (default: reuse or train one, see above)")
    ap.add_argument("--quick", action="store_true", help="20 requests, 1 and 2 clients, a tiny random model: a smoke test")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds per configuration (default 3; 1 with --quick)")
    ap.add_argument("--clients", type=str, default=None, help="client counts, comma-separated (default 1,8; 1,2 with --quick)")
    ap.add_argument("--sentences", type=int, default=None,
                    help="the first N dev sentences; each client sends N requests (default 300; 20 with --quick)")
    ap.add_argument("--results", type=Path, default=None, help="output directory (default bench/results; bench/work/quick-results with --quick)")
    ap.add_argument("--work", type=Path, default=None, help="scratch directory (default bench/work/serve; bench/work/serve-quick with --quick)")
    ap.add_argument("--torch-threads", default=None, metavar="LIST",
                    help="torch intra-op threads of the model servers, one pair of servers per item: 'default' "
                         "(torch's choice, = cores) or a number (OMP_NUM_THREADS); the first item is the one "
                         "the targets are judged on (default 'default,1'; '1' with --quick)")
    ap.add_argument("--max-seconds", type=float, default=None,
                    help="bound of one measurement: clients send no new request after this many seconds "
                         "(default 20; 60 with --quick)")
    ap.add_argument("--wait-until", default=None, metavar="HH:MM",
                    help="first wait until no other benchmark process runs, or until this local time")
    ap.add_argument("--recompute", type=Path, default=None, metavar="JSON",
                    help="only re-derive the quiet-rounds view and the Markdown of an existing serve.json")
    ap.add_argument("--_role", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_model_dir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._role:
        run_role(args._role, str(args.ckpt) if args.ckpt else None, args._model_dir)
        return
    if args.recompute:
        recompute(args.recompute)
        return

    args.shared = args.shared.resolve()
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    results = (args.results or (WORK / "quick-results" if args.quick else RESULTS)).resolve()
    work = (args.work or (WORK / ("serve-quick" if args.quick else "serve"))).resolve()
    results.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    rounds = args.rounds or (1 if args.quick else 3)
    max_s = args.max_seconds or (60.0 if args.quick else 20.0)
    client_counts = tuple(int(c) for c in args.clients.split(",")) if args.clients else (QUICK_CLIENTS if args.quick else FULL_CLIENTS)
    n_sent = args.sentences or (QUICK_SENTENCES if args.quick else FULL_SENTENCES)
    thread_spec = args.torch_threads or ("1" if args.quick else "default,1")
    thread_settings = [None if t == "default" else int(t) for t in thread_spec.split(",")]
    texts = read_texts(args.shared, n_sent)

    waited = wait_for_quiet(args.wait_until) if args.wait_until else None
    record: dict[str, Any] = {
        "name": "serve",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in ["python", "bench/serve_bench.py", *(sys.argv[1:] if argv is None else argv)]),
        "quick": bool(args.quick),
        "machine": machine(),
        "other_benchmarks": {"at_start": other_benchmarks(), "wait": waited},
        "other_load": {"at_start": other_benchmarks(_OTHER_LOAD)},
    }

    # ---- the model
    role = [sys.executable, str(Path(__file__).resolve())]
    if args.ckpt is None and args.quick:
        model_dir = build_tiny_model_dir(work / "tiny-model", texts)
        model_args, naive_args = ["--model_dir", str(model_dir)], ["--_model_dir", str(model_dir)]
        record["model"] = {"description": "a tiny random BERT (2 layers, hidden 32) over the quick sentences' characters",
                           "model_dir": str(model_dir)}
    else:
        if args.ckpt is not None:
            src, origin = args.ckpt.resolve(), {"origin": "--ckpt"}
        else:
            src, origin = find_or_train_checkpoint(args, work)
        ckpt = work / "ckpt" / src.name
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        if src.resolve() != ckpt.resolve():
            shutil.copyfile(src, ckpt)  # pinned: a run still training may delete its old best
        facts = checkpoint_facts(ckpt)
        mc = facts["model"]
        record["model"] = {
            "description": f"the reference model ({mc['num_hidden_layers']}x{mc['hidden_size']} {mc['model_type']}, "
                           f"{facts['parameters']:,} parameters) fine-tuned by ner_lit, checkpoint {src.name}",
            "checkpoint": str(src), "served_copy": str(ckpt), **origin, **facts,
        }
        model_args, naive_args = ["--ckpt_path", str(ckpt)], ["--ckpt", str(ckpt)]

    # ---- the servers, side by side: per torch-thread setting a ner_lit and a naive server
    systems: list[str] = []
    argvs: dict[str, tuple[list[str], Optional[int]]] = {}
    for setting in thread_settings:
        sfx = _suffix(setting)
        argvs["naive" + sfx] = ([*role, "--_role", "naive", *naive_args], setting)
        argvs["ner_lit" + sfx] = ([sys.executable, "-m", "ner_lit", "serve", *model_args, "--host", "127.0.0.1", "--port", "0"], setting)
        systems += ["naive" + sfx, "ner_lit" + sfx]
    # the previous default runtime, for the gain of ONNX Runtime in the same run (information, no target)
    argvs["ner_lit-torchscript"] = ([sys.executable, "-m", "ner_lit", "serve", *model_args, "--host", "127.0.0.1",
                                     "--port", "0", "--runtime", "torchscript"], thread_settings[0])
    systems.append("ner_lit-torchscript")
    if 1 in thread_settings:  # the throughput setting the README suggests on 2 cores: two model workers
        argvs["ner_lit-t1-w2"] = ([sys.executable, "-m", "ner_lit", "serve", *model_args, "--host", "127.0.0.1",
                                   "--port", "0", "--model_workers", "2"], 1)
        systems.append("ner_lit-t1-w2")
    argvs["noop-waitress"] = ([*role, "--_role", "noop-waitress"], None)
    argvs["noop-flask"] = ([*role, "--_role", "noop-flask"], None)
    systems += ["noop-waitress", "noop-flask"]
    record["servers"] = {
        "ner_lit": {"command": " ".join(shlex.quote(a) for a in ["python"] + argvs["ner_lit" + _suffix(thread_settings[0])][0][1:]),
                    "how": "waitress, 8 threads, MicroBatcher (max_batch_size 32, max_wait_ms 2), packed rows of 128 tokens "
                           "(--pack), ONNX Runtime (--runtime onnxruntime), decoding in the batch worker, "
                           "entities + per-token result"},
        "ner_lit-torchscript": {"how": "ner_lit with --runtime torchscript (a frozen TorchScript trace, the default before "
                                       "2026-12-01), torch threads as ner_lit's (information, no target)"},
        "naive": {"how": f"Flask development server threaded=False (HTTP/1.0: a new connection per request), "
                         f"padding='max_length' {NAIVE_MAX_LENGTH} + truncation, one forward per request under torch.no_grad, "
                         "per-token top-1 label/prob (no entities)"},
        "ner_lit-t1-w2": {"how": "ner_lit with --model_workers 2 and one torch thread (OMP_NUM_THREADS=1): two forward "
                                 "passes at once, each on its own core (information, no target)"},
        "noop-waitress": {"how": "waitress 8 threads + Flask, fixed JSON answer, no model: the ceiling of client + HTTP stack"},
        "noop-flask": {"how": "Flask development server threaded=False, fixed JSON answer, no model"},
        "torch_threads": {("ner_lit/naive" + _suffix(t)): (f"OMP_NUM_THREADS={t}" if t else "torch default (= cores)")
                          for t in thread_settings},
    }
    servers: dict[str, Server] = {}
    per_client = n_sent
    raw: dict[str, dict[int, list[tuple[dict[str, Any], list[float]]]]] = {n: {c: [] for c in client_counts} for n in systems}
    try:
        for name, (argv_, threads) in argvs.items():
            servers[name] = Server(name, argv_, work, torch_threads=threads)
        for s in servers.values():
            s.wait_ready()
        print("servers ready: " + ", ".join(f"{n}:{s.port}" for n, s in servers.items()), flush=True)

        # ---- warm-up + same-answers check
        record["sanity"] = {}
        for setting in thread_settings:
            record["sanity"][_setting_name(setting)] = sanity(servers, texts, _suffix(setting))
        for name in systems:
            measure(servers[name], texts, max(client_counts), 5 if name.startswith(("ner_lit", "naive")) else 20, max_s)

        # ---- measurements, interleaved by round
        for r in range(rounds):
            for c in client_counts:
                for name in systems:
                    gate_s = quiet_gate(args.wait_until)
                    rec = measure(servers[name], texts, c, per_client, max_s)
                    rec["waited_for_idle_machine_s"] = gate_s
                    print(f"round {r + 1}/{rounds} {name:14s} clients={c}: {rec['requests_per_s']:7.1f} req/s  "
                          f"p50 {rec['p50_ms']:6.2f} ms  p99 {rec['p99_ms']:6.2f} ms  client {rec['client_cpu_cores']:.2f} "
                          f"server {rec['server_cpu_cores']:.2f} other {rec['other_cpu_cores']:.2f} cores  errors {rec['errors']}",
                          flush=True)
                    lat = rec.pop("_lat")
                    raw[name][c].append((rec, lat))
    finally:
        for s in servers.values():
            s.stop()
        for name, s in servers.items():
            log = s.log_path.read_text(encoding="utf-8", errors="replace") if s.log_path.exists() else ""
            if "Traceback" in log:
                print(f"warning: server {name} logged a traceback: {s.log_path}", file=sys.stderr)

    record["load"] = {"sentences": n_sent, "source": "dev.tsv (first sentences)", "rounds": rounds,
                      "clients": list(client_counts), "requests_per_client": per_client, "max_seconds_per_measurement": max_s,
                      "body": "bare JSON string", "client": "threads of this process, http.client keep-alive"}
    record["systems"] = systems
    record["results"] = {name: {str(c): summarize([x for x, _ in raw[name][c]], [lat for _, lat in raw[name][c]])
                                for c in client_counts} for name in systems}
    record["targets_by_torch_threads"] = {_setting_name(t): targets(record["results"], client_counts, _suffix(t))
                                          for t in thread_settings}
    record["targets"] = record["targets_by_torch_threads"][_setting_name(thread_settings[0])]
    add_quiet_view(record)
    record["original_system_reference"] = ORIGINAL_SYSTEM
    record["other_benchmarks"]["at_end"] = other_benchmarks()
    record["other_load"]["at_end"] = other_benchmarks(_OTHER_LOAD)
    record["machine"]["load_average_at_end"] = list(os.getloadavg())
    out = results / "serve.json"
    out.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (results / "serve.md").write_text(markdown(record), encoding="utf-8")
    print(markdown(record))
    print(f"wrote {out} and {results / 'serve.md'}")


def _suffix(setting: Optional[int]) -> str:
    return "" if setting is None else f"-t{setting}"


def _setting_name(setting: Optional[int]) -> str:
    return "default" if setting is None else str(setting)


def targets(res: dict[str, Any], client_counts: tuple[int, ...], sfx: str) -> dict[str, Any]:
    hi, lo = str(max(client_counts)), str(min(client_counts))
    ner, naive = res["ner_lit" + sfx], res["naive" + sfx]
    ratio = ner[hi]["requests_per_s"] / naive[hi]["requests_per_s"]
    p50_ratio = ner[lo]["p50_ms"] / naive[lo]["p50_ms"]
    other = max(x[c]["other_cpu_cores"] for x in (ner, naive) for c in (hi, lo))
    return {
        # CPU that neither this load generator nor the server used during these measurements:
        # above ~0.2 cores of 2, something else competed and the comparison is distorted.
        "max_other_cpu_cores": other,
        "undistorted": other < MAX_OTHER_CPU_CORES,
        "throughput": {"clients": int(hi), "ner_lit_requests_per_s": ner[hi]["requests_per_s"],
                       "naive_requests_per_s": naive[hi]["requests_per_s"], "ratio": ratio,
                       "target": TARGET_THROUGHPUT_RATIO, "aim": AIM_THROUGHPUT_RATIO,
                       "met": ratio >= TARGET_THROUGHPUT_RATIO, "aim_met": ratio >= AIM_THROUGHPUT_RATIO},
        "p50": {"clients": int(lo), "ner_lit_ms": ner[lo]["p50_ms"], "naive_ms": naive[lo]["p50_ms"],
                "ratio": p50_ratio, "target": TARGET_P50_RATIO, "met": p50_ratio <= TARGET_P50_RATIO},
        "ceiling": {"noop_waitress_requests_per_s": res["noop-waitress"][hi]["requests_per_s"],
                    "ner_lit_share_of_ceiling": ner[hi]["requests_per_s"] / res["noop-waitress"][hi]["requests_per_s"],
                    "client_cpu_cores_ner_lit": ner[hi]["client_cpu_cores"],
                    "machine_cpu_cores_ner_lit": ner[hi]["machine_cpu_cores"],
                    "noop_flask_requests_per_s": res["noop-flask"][hi]["requests_per_s"]},
    }


def add_quiet_view(record: dict[str, Any]) -> None:
    """Figures from the rounds during which other processes used < MAX_OTHER_CPU_CORES, and
    the targets judged on them where every configuration involved has such a round."""
    for per_clients in record["results"].values():
        for s in per_clients.values():
            quiet = [r for r in s["per_round"] if r["other_cpu_cores"] < MAX_OTHER_CPU_CORES]
            s["quiet"] = None if not quiet else {
                "rounds": len(quiet),
                "requests": sum(r["requests"] for r in quiet),
                "requests_per_s": statistics.median(r["requests_per_s"] for r in quiet),
                # per-round percentiles, median over the quiet rounds
                **{k: statistics.median(r[k] for r in quiet) for k in ("p50_ms", "p95_ms", "p99_ms")},
                "client_cpu_cores": statistics.median(r["client_cpu_cores"] for r in quiet),
                "server_cpu_cores": statistics.median(r["server_cpu_cores"] for r in quiet),
                "other_cpu_cores": statistics.median(r["other_cpu_cores"] for r in quiet),
            }
    res = record["results"]
    out: dict[str, Any] = {}
    for setting in record["targets_by_torch_threads"]:
        sfx = "" if setting == "default" else f"-t{setting}"
        clients = sorted(int(c) for c in res["ner_lit" + sfx])
        hi, lo = str(clients[-1]), str(clients[0])
        ner, naive = res["ner_lit" + sfx], res["naive" + sfx]
        t: dict[str, Any] = {}
        if ner[hi]["quiet"] and naive[hi]["quiet"]:
            ratio = ner[hi]["quiet"]["requests_per_s"] / naive[hi]["quiet"]["requests_per_s"]
            t["throughput"] = {"clients": int(hi), "ner_lit_requests_per_s": ner[hi]["quiet"]["requests_per_s"],
                               "naive_requests_per_s": naive[hi]["quiet"]["requests_per_s"], "ratio": ratio,
                               "rounds": [ner[hi]["quiet"]["rounds"], naive[hi]["quiet"]["rounds"]],
                               "met": ratio >= TARGET_THROUGHPUT_RATIO, "aim_met": ratio >= AIM_THROUGHPUT_RATIO}
        if ner[lo]["quiet"] and naive[lo]["quiet"]:
            ratio = ner[lo]["quiet"]["p50_ms"] / naive[lo]["quiet"]["p50_ms"]
            t["p50"] = {"clients": int(lo), "ner_lit_ms": ner[lo]["quiet"]["p50_ms"], "naive_ms": naive[lo]["quiet"]["p50_ms"],
                        "ratio": ratio, "rounds": [ner[lo]["quiet"]["rounds"], naive[lo]["quiet"]["rounds"]],
                        "met": ratio <= TARGET_P50_RATIO}
        out[setting] = t
        # The verdict: on quiet rounds where there are any (all-rounds figures kept beside them).
        judged = record["targets_by_torch_threads"][setting]
        for key in ("throughput", "p50"):
            judged[key].pop("all_rounds", None)
            base = {k: v for k, v in judged[key].items() if k != "judged_on"}
            if key in t:
                judged[key].update({k: v for k, v in t[key].items() if k != "rounds"}, quiet_rounds=t[key]["rounds"],
                                   judged_on="quiet rounds", all_rounds=base)
            else:
                judged[key]["judged_on"] = "all rounds" + ("" if judged.get("undistorted") else " (distorted: other load)")
    record["targets_quiet_by_torch_threads"] = out
    first = next(iter(record["targets_by_torch_threads"]))
    record["targets"] = record["targets_by_torch_threads"][first]


def quiet_markdown(rec: dict[str, Any]) -> list[str]:
    lines = ["", f"## Quiet rounds only (other processes < {MAX_OTHER_CPU_CORES:g} cores during the measurement)", "",
             "| server | clients | quiet rounds | req/s | p50 ms | p95 ms | p99 ms | client CPU | server CPU |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name in rec["systems"]:
        for c, s in rec["results"][name].items():
            q = s.get("quiet")
            if q is None:
                lines.append(f"| {name} | {c} | 0 | - | - | - | - | - | - |")
            else:
                lines.append(f"| {name} | {c} | {q['rounds']} | {_fmt(q['requests_per_s'])} | {_fmt(q['p50_ms'], 2)} "
                             f"| {_fmt(q['p95_ms'], 2)} | {_fmt(q['p99_ms'], 2)} | {_fmt(q['client_cpu_cores'], 2)} "
                             f"| {_fmt(q['server_cpu_cores'], 2)} |")
    lines += ["", "| torch threads | target (quiet rounds) | measured | met |", "| --- | --- | ---: | --- |"]
    for setting, t in rec["targets_quiet_by_torch_threads"].items():
        if "throughput" in t:
            x = t["throughput"]
            lines.append(f"| {setting} | {x['clients']} clients: req/s >= {TARGET_THROUGHPUT_RATIO:g}x naive (aim "
                         f"{AIM_THROUGHPUT_RATIO:g}x) | {x['ratio']:.2f}x ({x['ner_lit_requests_per_s']:.0f} vs "
                         f"{x['naive_requests_per_s']:.0f} req/s) | {'yes' if x['met'] else 'NO'}{', aim met' if x['aim_met'] else ''} |")
        else:
            lines.append(f"| {setting} | throughput | no quiet round of both | - |")
        if "p50" in t:
            x = t["p50"]
            lines.append(f"| {setting} | {x['clients']} client: p50 <= {TARGET_P50_RATIO:g}x naive | {x['ratio']:.2f}x "
                         f"({x['ner_lit_ms']:.2f} vs {x['naive_ms']:.2f} ms) | {'yes' if x['met'] else 'NO'} |")
        else:
            lines.append(f"| {setting} | p50 | no quiet round of both | - |")
    return lines


def recompute(path: Path) -> None:
    """Re-derive the quiet view and the Markdown of an existing serve.json (in place)."""
    record = json.loads(path.read_text(encoding="utf-8"))
    add_quiet_view(record)
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    path.with_suffix(".md").write_text(markdown(record), encoding="utf-8")
    print(markdown(record))


if __name__ == "__main__":
    main()
