"""A real pretrained encoder end to end: ner_lit vs the Hugging Face Trainer recipe, then serving.

The model is multilingual-e5-small (BERT 12 x 384, XLM-R vocabulary, 117.5 M weights, 96 M
of them word embeddings) built offline by ../shared/tools/pretrained-me5/build.py into
bench/work/me5; the data KLUE-NER train.tsv -> dev.tsv; every hyperparameter is
configs/me5.yaml's (lr 2e-4, head lr 2e-3, weight decay 0.01, warmup 0.1 then linear decay,
gradient norm clipped at 1.0 (the Trainer's max_grad_norm default),
frozen word embeddings, bf16-mixed (both fall back to 32-true on a CPU without native bf16, as
ner_lit does), batch 16, max_length 128, stride 32, seed 7; epochs ``--epochs``, default the config's). Each system trains in its own child process:

* ``ner_lit``: ``python -m ner_lit fit --config configs/me5.yaml`` (validation on dev.tsv every
  epoch, best + last checkpoints, the hf_model export), then ``python -m ner_lit test
  --ckpt_path best`` on dev.tsv: the official F1c / F1e, timed.
* ``hf_trainer``: the run_ner.py recipe (bench/systems.py's ``hf_train``): the same windows and
  token labels (each token takes its first character's tag, -100 on specials and padding),
  ``DataCollatorForTokenClassification``, AdamW with the head at its own rate (Trainer's
  decay / no-decay groups split into encoder and head; its default implementation with
  torch >= 2.8, ``adamw_torch_fused``, as ner_lit's default ``--model.adamw fused``), word embeddings frozen, ``bf16=True``
  on the CPU (where ner_lit trains in bf16), linear schedule with the same warmup steps; ``save_model`` at the end; then
  ``Trainer.predict`` on dev.tsv, each sentence's tokens decoded back to characters and scored
  with scikit-learn macro F1 + seqeval strict IOB2, the official definitions ner_lit's metrics
  reproduce (bench/eval_speed.py's ``run_hf``).

Per system: training sentences/s (train sentences x epochs / the time from each epoch's start
to its last optimizer step, bench/train_clock.py: model building, validation and checkpoint
writing excluded), the child's peak RSS (``os.wait4``), dev F1c / F1e, bytes written.

Serving (the ner_lit run's best checkpoint): ``python -m ner_lit serve`` against the naive way,
``transformers.pipeline("token-classification")`` in a plain Flask app run one request at a time
(its export's weights): start-up time to the first answer, resident memory, then
bench/serve_bench.py's load (keep-alive clients of this process, rounds interleaved):
1-client p50 latency and 8-client requests/s.

    python bench/pretrained.py [--epochs N] [--rounds 3] [--max-seconds 20]   # ~25 min idle
    python bench/pretrained.py --quick   # 64 + 64 sentences, 1 epoch, short load: a smoke run

Results: bench/results/pretrained.json and pretrained.md; ``--quick`` writes to
bench/work/quick-results and never touches bench/results.
"""
from __future__ import annotations

import gc
import http.client
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench import common  # noqa: E402
from bench.train_clock import write_json  # noqa: E402

CONFIG = REPO / "configs" / "me5.yaml"
QUICK_SENTENCES = 64
SERVE_SENTENCES = 300
QUICK_SERVE_SENTENCES = 16
CLIENTS = (1, 8)
TARGETS = {
    "F1e": "ner_lit dev F1e >= HF Trainer's",
    "train_speed": "ner_lit training sentences/s >= 1.5x HF Trainer's",
    "train_rss": "ner_lit peak training RSS <= HF Trainer's",
    "serve_p50": "1 client: ner_lit serve p50 <= 0.5x naive",
    "serve_throughput": "8 clients: ner_lit serve req/s >= 3x naive",
}


# ================================================================================ plumbing
def recipe() -> dict[str, Any]:
    import yaml

    return yaml.safe_load(CONFIG.read_text(encoding="utf-8"))


def precision(cfg: dict[str, Any]) -> str:
    """The precision both sides train in: the recipe's, unless ner_lit falls back to 32-true because
    this CPU has no native bf16 (emulated bf16 is several times slower than fp32). The Trainer gets
    the same, or the comparison would be emulated bf16 against fp32."""
    from ner_lit.cli.lightning import cpu_supports_bf16

    wanted = str(cfg["trainer"].get("precision", "32-true"))
    return "32-true" if wanted.startswith("bf16") and not cpu_supports_bf16() else wanted


def me5_dir(args) -> Path:
    """bench/work/me5, built by the shared tool (byte-identical every time) if missing."""
    out = common.WORK / "me5"
    if not (out / "config.json").is_file():
        tool = Path(args.shared) / "tools" / "pretrained-me5" / "build.py"
        if not tool.is_file():
            sys.exit(f"{tool} not found: pass --shared <the workplace's shared folder>")
        cache = args.cache or (REPO / "test-artifacts" / "pretrained-me5-cache")
        if args.cache is None and not cache.is_dir():
            cache = common.WORK / "me5-cache"
        subprocess.run([sys.executable, str(tool), "--out", str(out), "--cache", str(cache)], check=True)
    return out


def data_dir(args, work: Path) -> Path:
    """KLUE-NER in place, or (--quick) the first QUICK_SENTENCES sentences of train and dev."""
    src = common.klue_dir(args)
    if not args.quick:
        return src
    from ner_lit.corpus.klue import read_klue_tsv, write_klue_tsv

    out = work / "data"
    out.mkdir(parents=True, exist_ok=True)
    for name in ("train.tsv", "dev.tsv"):
        write_klue_tsv(read_klue_tsv(src / name)[:QUICK_SENTENCES], out / name, overwrite=True)
    return out


def run_child(cmd: list[str], log: Path, env: Optional[dict] = None) -> dict[str, Any]:
    """Run ``cmd`` to its end: wall time and the peak resident memory of that child alone
    (``os.wait4``'s rusage, which covers the child and whatever it waited for)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=str(REPO), stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise SystemExit(f"{shown(cmd)} failed ({proc.returncode}), log {log}:\n{tail}")
    return {"wall_s": wall, "peak_rss_bytes": usage.ru_maxrss * 1024, "command": shown(cmd), "log": rel(log)}


def shown(cmd: list[str]) -> str:
    return " ".join(shlex.quote(c) for c in ["python"] + cmd[1:]).replace(str(REPO) + "/", "")


def rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def tree_bytes(root: Path) -> dict[str, int]:
    """Bytes on disk under ``root``: all of it, checkpoints (*.ckpt), and exported model folders."""
    files = [p for p in root.rglob("*") if p.is_file()] if root.is_dir() else []
    return {"total": sum(p.stat().st_size for p in files),
            "checkpoints": sum(p.stat().st_size for p in files if p.suffix == ".ckpt"),
            "hf_model": sum(p.stat().st_size for p in files if "hf_model" in p.relative_to(root).parts)}


class Phases:
    """Load averages before and after each phase, and its wall time."""

    def __init__(self) -> None:
        self.record: dict[str, dict[str, Any]] = {}

    def run(self, name: str, fn):
        before = list(os.getloadavg())
        print(f"[{time.strftime('%H:%M:%S')}] {name} (load {before[0]:.2f}) ...", flush=True)
        t0 = time.perf_counter()
        out = fn()
        self.record[name] = {"load_average_before": before, "load_average_after": list(os.getloadavg()),
                             "wall_s": time.perf_counter() - t0}
        print(f"[{time.strftime('%H:%M:%S')}] {name} done in {self.record[name]['wall_s']:.0f} s", flush=True)
        return out


# ================================================================================ ner_lit
def ner_lit_common(args, model_dir: Path, data: Path, root: Path) -> list[str]:
    return ["--config", str(CONFIG), "--model.pretrained", str(model_dir), "--data.tokenizer", str(model_dir),
            "--data.data_dir", str(data), "--data.cache_dir", str(root.parent / "cache"),
            "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false"]


def ner_lit_fit(args, model_dir: Path, data: Path, work: Path) -> dict[str, Any]:
    root = work / "ner_lit"
    shutil.rmtree(root, ignore_errors=True)
    clock_file = work / "ner_lit-train-clock.json"
    clock_file.unlink(missing_ok=True)
    clock = json.dumps({"class_path": "bench.train_clock.LightningTrainClock", "init_args": {"out": str(clock_file)}})
    cmd = [sys.executable, "-m", "ner_lit", "fit", *ner_lit_common(args, model_dir, data, root),
           "--trainer.max_epochs", str(args.epochs), f"--trainer.callbacks+={clock}"]
    if args.quick:
        cmd += ["--trainer.log_every_n_steps", "1"]
    run = run_child(cmd, work / "logs" / "ner_lit-fit.log")
    run["clock"] = json.loads(clock_file.read_text(encoding="utf-8"))
    run["bytes_written"] = tree_bytes(root)
    return run


def ner_lit_test(args, model_dir: Path, data: Path, work: Path) -> dict[str, Any]:
    root = work / "ner_lit"
    cmd = [sys.executable, "-m", "ner_lit", "test", *ner_lit_common(args, model_dir, data, root),
           "--ckpt_path", "best", "--data.test_file", "dev.tsv"]
    run = run_child(cmd, work / "logs" / "ner_lit-test.log")
    report = sorted(root.glob("version_*/test/**/test_report.json"))
    if not report:
        raise SystemExit(f"ner_lit test wrote no test_report.json under {root}")
    scores = json.loads(report[-1].read_text(encoding="utf-8"))
    run.update(F1c=scores["F1c (macro over characters)"]["f1"], F1e=scores["macro avg"]["f1"], report=rel(report[-1]))
    return run


# ================================================================================ HF Trainer
def hf_fit(args, model_dir: Path, data: Path, work: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    out = work / "hf_trainer"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    settings = {"model_dir": str(model_dir), "data_dir": str(data), "out": str(out), "epochs": args.epochs,
                "cache_dir": str(work / "cache"), "seed": cfg["seed_everything"], **cfg["model"], **cfg["data"],
                "bf16": precision(cfg) == "bf16-mixed",
                "max_grad_norm": float(cfg["trainer"].get("gradient_clip_val") or 0.0)}  # 0: Trainer clips nothing
    settings["data_dir"] = str(data)
    write_json(out / "settings.json", settings)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_hf-train", str(out / "settings.json")]
    run = run_child(cmd, work / "logs" / "hf_trainer.log")
    run.update(json.loads((out / "result.json").read_text(encoding="utf-8")))
    run["bytes_written"] = tree_bytes(out / "trainer") | {"hf_model": tree_bytes(out / "hf_model")["total"]}
    run["bytes_written"]["total"] += run["bytes_written"]["hf_model"]
    return run


def hf_train_child(settings_file: Path) -> None:
    """The HF Trainer side, in its own process: train, save, predict dev.tsv, score; result.json."""
    from bench import eval_speed, systems
    from bench.train_clock import hf_train_clock
    from ner_lit.corpus.klue import read_klue_tsv
    from ner_lit.data.datamodule import NERDataModule

    common.quiet()
    s = json.loads(settings_file.read_text(encoding="utf-8"))
    out = Path(s["out"])
    dm = NERDataModule(data_dir=s["data_dir"], train_file=s["train_file"], val_file=s["val_file"],
                       tokenizer=s["model_dir"], max_length=s["max_length"], stride=s["stride"],
                       batch_size=s["batch_size"], cache_dir=s["cache_dir"])
    dm.setup("fit")
    steps_per_epoch = math.ceil(len(dm.train_windows) / s["batch_size"])
    warmup = int(steps_per_epoch * s["epochs"] * s["warmup_ratio"])  # as NERModel: int(total * warmup_ratio)
    clock = hf_train_clock()
    trainer, model = systems.hf_train(
        None, Path(s["model_dir"]), steps=-1, dm=dm, seed=s["seed"], epochs=s["epochs"], bf16=s["bf16"],
        head_learning_rate=s["head_learning_rate"], freeze_word_embeddings=s["freeze_word_embeddings"],
        out=out / "trainer", callbacks=[clock], batch_size=s["batch_size"], learning_rate=s["learning_rate"],
        eval_batch_size=s["eval_batch_size"], weight_decay=s["weight_decay"], warmup_steps=warmup,
        max_grad_norm=s.get("max_grad_norm", 1.0))
    trainer.save_model(str(out / "hf_model"))  # what run_ner.py keeps: weights, config, training args
    dm.tokenizer.save_pretrained(str(out / "hf_model"))
    labels = list(dm.labels)
    del trainer, model
    gc.collect()
    sentences = read_klue_tsv(Path(s["data_dir"]) / s["val_file"])
    t0 = time.perf_counter()
    score = eval_speed.run_hf(None, out / "hf_model", out / "hf_model", labels, sentences)
    score["wall_s"] = time.perf_counter() - t0
    write_json(out / "result.json", {"clock": clock.clock.record(), "train_windows": len(dm.train_windows),
                                     "warmup_steps": warmup, "predict": score, "F1c": score["F1c"], "F1e": score["F1e"]})


# ================================================================================ serving
def naive_pipeline_child(model_dir: str) -> None:
    """The naive server: ``pipeline("token-classification")`` behind Flask, one request at a time."""
    import flask
    from transformers import pipeline

    from bench import serve_bench

    common.quiet()
    nlp = pipeline("token-classification", model=model_dir, tokenizer=model_dir, device="cpu")
    app = flask.Flask("naive-pipeline")

    @app.route("/api", methods=["POST"])
    def api():
        body = flask.request.get_json(force=True)
        text = body["text"] if isinstance(body, dict) else body
        result = [{"token": r["word"], "label": r["entity"], "prob": float(r["score"]), "start": r["start"], "end": r["end"]}
                  for r in nlp(text)]
        return flask.jsonify(text=text, result=result)

    serve_bench.serve_app(app, "flask")


def first_answer(port: int, text: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request("POST", "/api", body=json.dumps(text, ensure_ascii=False).encode("utf-8"),
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    if resp.status != 200:
        raise SystemExit(f"first request answered {resp.status}: {body[:300]!r}")


def memory_of(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(line.split()[1]) * 1024
    return out


def serve_phase(args, best: Path, hf_model: Path, work: Path) -> dict[str, Any]:
    from bench import serve_bench

    n = QUICK_SERVE_SENTENCES if args.quick else SERVE_SENTENCES
    texts = serve_bench.read_texts(Path(args.shared), n)
    argvs = {
        "ner_lit": [sys.executable, "-m", "ner_lit", "serve", "--ckpt_path", str(best), "--host", "127.0.0.1", "--port", "0"],
        "naive": [sys.executable, str(Path(__file__).resolve()), "--_naive-serve", str(hf_model)],
    }
    servers: dict[str, Any] = {}
    facts: dict[str, Any] = {}
    raw: dict[str, dict[int, list]] = {name: {c: [] for c in CLIENTS} for name in argvs}
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    try:
        for name, argv in argvs.items():  # one at a time: each start-up alone on the machine
            t0 = time.perf_counter()
            servers[name] = serve_bench.Server(name, argv, logs, startup_timeout_s=600)
            servers[name].wait_ready()
            listening = time.perf_counter() - t0
            first_answer(servers[name].port, texts[0])
            facts[name] = {"command": shown(argv), "listening_s": listening, "first_answer_s": time.perf_counter() - t0,
                           "memory_after_start": memory_of(servers[name].proc.pid)}
        for s in servers.values():  # warm-up
            serve_bench.measure(s, texts, max(CLIENTS), 3, args.max_seconds)
        for r in range(args.rounds):
            for c in CLIENTS:
                for name, s in servers.items():
                    rec = serve_bench.measure(s, texts, c, n, args.max_seconds)
                    print(f"round {r + 1}/{args.rounds} {name:8s} clients={c}: {rec['requests_per_s']:6.1f} req/s  "
                          f"p50 {rec['p50_ms']:7.1f} ms  errors {rec['errors']}  other CPU {rec['other_cpu_cores']:.2f}", flush=True)
                    lat = rec.pop("_lat")
                    raw[name][c].append((rec, lat))
        for name, s in servers.items():
            facts[name]["memory_at_end"] = memory_of(s.proc.pid)
    finally:
        for s in servers.values():
            s.stop()
    results = {name: {str(c): serve_bench.summarize([x for x, _ in raw[name][c]], [lat for _, lat in raw[name][c]])
                      for c in CLIENTS} for name in argvs}
    return {"sentences": n, "rounds": args.rounds, "clients": list(CLIENTS), "max_seconds_per_measurement": args.max_seconds,
            "servers": facts, "results": results}


# ================================================================================ verdicts
def targets(rec: dict[str, Any]) -> dict[str, Any]:
    ner, hf = rec["training"]["ner_lit"], rec["training"]["hf_trainer"]
    lo, hi = str(min(CLIENTS)), str(max(CLIENTS))
    srv = rec["serving"]["results"]
    p50 = srv["ner_lit"][lo]["p50_ms"] / srv["naive"][lo]["p50_ms"]
    rps = srv["ner_lit"][hi]["requests_per_s"] / srv["naive"][hi]["requests_per_s"]
    speed = ner["sentences_per_s"] / hf["sentences_per_s"]
    rss = ner["peak_rss_bytes"] / hf["peak_rss_bytes"]
    return {
        "F1e": {"target": TARGETS["F1e"], "ner_lit": ner["F1e"], "hf_trainer": hf["F1e"], "met": ner["F1e"] >= hf["F1e"]},
        "train_speed": {"target": TARGETS["train_speed"], "ratio": speed, "met": speed >= 1.5},
        "train_rss": {"target": TARGETS["train_rss"], "ratio": rss, "met": rss <= 1.0},
        "serve_p50": {"target": TARGETS["serve_p50"], "ratio": p50, "met": p50 <= 0.5},
        "serve_throughput": {"target": TARGETS["serve_throughput"], "ratio": rps, "met": rps >= 3.0},
    }


def markdown(rec: dict[str, Any]) -> str:
    m, t = rec["machine"], rec["targets"]
    ner, hf = rec["training"]["ner_lit"], rec["training"]["hf_trainer"]
    srv, facts = rec["serving"]["results"], rec["serving"]["servers"]
    lo, hi = str(min(CLIENTS)), str(max(CLIENTS))
    mb = 1024 * 1024

    def met(key: str) -> str:
        return "met" if t[key]["met"] else "**not met**"

    lines = [
        f"# multilingual-e5-small on KLUE-NER: ner_lit vs HF Trainer{' (QUICK: smoke run, figures mean nothing)' if rec['quick'] else ''}",
        "",
        f"{rec['date']} · {m['cpu']} · nproc {m['nproc']} · torch {m['torch']} · transformers {m['transformers']} · "
        f"lightning {m['lightning']} · load average at start {m['load_average_at_start'][0]:.2f}, "
        f"at end {m['load_average_at_end'][0]:.2f}",
        "",
        f"configs/me5.yaml, {rec['setting']['epochs']} epoch(s), {rec['setting']['train_sentences']} train -> "
        f"{rec['setting']['dev_sentences']} dev sentences, precision {rec['setting']['precision_used']} for both"
        f"{'' if rec['setting']['precision_used'] == rec['setting']['trainer'].get('precision') else ' (this CPU has no native bf16: ner_lit falls back to 32-true, the Trainer is run alike)'}"
        ", frozen word embeddings, batch 16, seed 7.",
        "",
        "| training | ner_lit | HF Trainer | ner_lit / HF | target | |",
        "| --- | ---: | ---: | ---: | --- | --- |",
        f"| sentences/s (train sentences x epochs / time in epochs) | {ner['sentences_per_s']:.2f} | {hf['sentences_per_s']:.2f} "
        f"| {t['train_speed']['ratio']:.2f}x | >= 1.5x | {met('train_speed')} |",
        f"| training time, s (epochs only) | {ner['clock']['train_s']:.0f} | {hf['clock']['train_s']:.0f} | | | |",
        f"| whole training process, s | {ner['wall_s']:.0f} | {hf['wall_s']:.0f} | | | |",
        f"| peak RSS of the training process, MiB | {ner['peak_rss_bytes'] / mb:.0f} | {hf['peak_rss_bytes'] / mb:.0f} "
        f"| {t['train_rss']['ratio']:.2f}x | <= 1x | {met('train_rss')} |",
        f"| dev F1c (official) | {ner['F1c']:.2f} | {hf['F1c']:.2f} | | | |",
        f"| dev F1e (official) | {ner['F1e']:.2f} | {hf['F1e']:.2f} | {ner['F1e'] - hf['F1e']:+.2f} | >= HF | {met('F1e')} |",
        f"| bytes written, MiB (all / checkpoints / hf_model) | {ner['bytes_written']['total'] / mb:.0f} / "
        f"{ner['bytes_written']['checkpoints'] / mb:.0f} / {ner['bytes_written']['hf_model'] / mb:.0f} "
        f"| {hf['bytes_written']['total'] / mb:.0f} / {hf['bytes_written']['checkpoints'] / mb:.0f} / "
        f"{hf['bytes_written']['hf_model'] / mb:.0f} | | | |",
        f"| dev evaluation, s (`ner_lit test` process / Trainer.predict + scoring) | {ner['test']['wall_s']:.1f} "
        f"| {hf['predict']['wall_s']:.1f} | | | |",
        "",
        "| serving | ner_lit serve | naive (pipeline + Flask) | ner_lit / naive | target | |",
        "| --- | ---: | ---: | ---: | --- | --- |",
        f"| start-up to first answer, s | {facts['ner_lit']['first_answer_s']:.1f} | {facts['naive']['first_answer_s']:.1f} | | | |",
        f"| resident memory after the load, MiB (peak) | {facts['ner_lit']['memory_at_end']['VmRSS'] / mb:.0f} "
        f"({facts['ner_lit']['memory_at_end']['VmHWM'] / mb:.0f}) | {facts['naive']['memory_at_end']['VmRSS'] / mb:.0f} "
        f"({facts['naive']['memory_at_end']['VmHWM'] / mb:.0f}) | | | |",
        f"| {lo} client: p50 latency, ms | {srv['ner_lit'][lo]['p50_ms']:.1f} | {srv['naive'][lo]['p50_ms']:.1f} "
        f"| {t['serve_p50']['ratio']:.2f}x | <= 0.5x | {met('serve_p50')} |",
        f"| {hi} clients: requests/s | {srv['ner_lit'][hi]['requests_per_s']:.1f} | {srv['naive'][hi]['requests_per_s']:.1f} "
        f"| {t['serve_throughput']['ratio']:.2f}x | >= 3x | {met('serve_throughput')} |",
        "",
        f"Load: the first {rec['serving']['sentences']} dev sentences, {rec['serving']['rounds']} interleaved round(s), "
        f"each measurement bounded by {rec['serving']['max_seconds_per_measurement']:g} s (bench/serve_bench.py's clients). "
        "Training time counts each epoch from its start to its last optimizer step (validation, checkpoints and "
        "model building excluded); peak RSS is the child process's (os.wait4), validation (ner_lit) and "
        "prediction (HF) included.",
        "",
        f"Command: `{rec['command']}`",
    ]
    return "\n".join(lines) + "\n"


# ================================================================================ main
def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default: configs/me5.yaml's; 1 with --quick)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="wheel cache of the me5 build (default test-artifacts/pretrained-me5-cache if present, else bench/work/me5-cache)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved serving rounds (default 3; 1 with --quick)")
    ap.add_argument("--max-seconds", type=float, default=None, help="bound of one serving measurement (default 20; 10 with --quick)")
    ap.add_argument("--_hf-train", type=Path, default=None, help=argparse_suppress())
    ap.add_argument("--_naive-serve", default=None, help=argparse_suppress())
    args = ap.parse_args()
    if args._hf_train:
        return hf_train_child(args._hf_train)
    if args._naive_serve:
        return naive_pipeline_child(args._naive_serve)

    cfg = recipe()
    args.shared = Path(args.shared).resolve()
    args.epochs = args.epochs or (1 if args.quick else int(cfg["trainer"]["max_epochs"]))
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.max_seconds = args.max_seconds or (10.0 if args.quick else 20.0)
    common.quiet()
    work = common.WORK / ("pretrained-quick" if args.quick else "pretrained")
    work.mkdir(parents=True, exist_ok=True)
    record = common.start_record("pretrained", args)
    record["machine"]["nproc"] = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    phases = Phases()
    model_dir = phases.run("build model", lambda: me5_dir(args))
    data = data_dir(args, work)
    from ner_lit.corpus.klue import read_klue_tsv

    n_train, n_dev = len(read_klue_tsv(data / "train.tsv")), len(read_klue_tsv(data / "dev.tsv"))
    record["setting"] = {"config": rel(CONFIG), "epochs": args.epochs, "train_sentences": n_train, "dev_sentences": n_dev,
                         "model": rel(model_dir), "data": rel(data), "precision_used": precision(cfg),
                         **{k: cfg[k] for k in ("trainer", "model", "data")}}

    ner = phases.run("ner_lit fit", lambda: ner_lit_fit(args, model_dir, data, work))
    ner["test"] = phases.run("ner_lit test", lambda: ner_lit_test(args, model_dir, data, work))
    ner.update(F1c=ner["test"]["F1c"], F1e=ner["test"]["F1e"])
    hf = phases.run("hf_trainer fit + predict", lambda: hf_fit(args, model_dir, data, work, cfg))
    for side in (ner, hf):
        side["sentences_per_s"] = n_train * side["clock"]["epochs"] / side["clock"]["train_s"]
    record["training"] = {"ner_lit": ner, "hf_trainer": hf}

    from ner_lit.checkpoint.runs import resolve_checkpoint

    best = resolve_checkpoint("best", work / "ner_lit")
    hf_model = next(iter(sorted((work / "ner_lit").glob("version_*/hf_model"))))
    record["serving"] = phases.run("serving", lambda: serve_phase(args, best, hf_model, work))
    record["serving"]["checkpoint"] = rel(best)
    record["serving"]["naive_model"] = rel(hf_model)
    record["phases"] = phases.record
    record["targets"] = targets(record)
    record["machine"]["load_average_at_end"] = list(os.getloadavg())
    results = common.results_dir(args)
    text = markdown(record)
    write_json(results / "pretrained.json", record)
    write_json(results / "pretrained.md", None, text=text)
    print(text)
    print(f"wrote {results / 'pretrained.json'} and {results / 'pretrained.md'}")


def argparse_suppress() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
