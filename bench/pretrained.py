"""A real pretrained encoder end to end: ner_lit vs the Hugging Face Trainer recipe, then serving.

The model is multilingual-e5-small (BERT 12 x 384, XLM-R vocabulary, most of its weights word
embeddings) built offline by ../shared/tools/pretrained-me5/build.py into bench/work/me5; the
data KLUE-NER train.tsv -> dev.tsv; every hyperparameter is configs/me5.yaml's (learning rates,
weight decay, warmup then linear decay, gradient norm clipping, frozen word embeddings,
bf16-mixed: both fall back to 32-true on a CPU without native bf16, as ner_lit does; batch,
max_length, stride, seed; epochs ``--epochs``, default the config's). Each system trains in its
own child process:

* ``ner_lit``: ``python -m ner_lit fit --config configs/me5.yaml`` (validation on dev.tsv every
  epoch, best + last checkpoints, the hf_model export), then ``python -m ner_lit test
  --ckpt_path best`` on dev.tsv: the official F1c / F1e, timed.
* ``hf_trainer``: the run_ner.py recipe (bench/systems.py's ``hf_train``): the same windows and
  token labels (each token takes its first character's tag, -100 on specials and padding),
  ``DataCollatorForTokenClassification``, AdamW with the head at its own rate (Trainer's
  decay / no-decay groups split into encoder and head; its default implementation,
  ``adamw_torch_fused``, as ner_lit's default ``--model.adamw fused``), word embeddings frozen, ``bf16=True``
  on the CPU (where ner_lit trains in bf16), linear schedule with the same warmup steps; ``save_model`` at the end; then
  ``Trainer.predict`` on dev.tsv, each sentence's tokens decoded back to characters and scored
  with scikit-learn macro F1 + seqeval strict IOB2, the official definitions ner_lit's metrics
  reproduce (bench/eval_speed.py's ``run_hf``).

Per system: training sentences/s (train sentences x epochs / the time from each epoch's start
to its last optimizer step, bench/train_clock.py: model building, validation and checkpoint
writing excluded), the child's own peak RSS (bench/common.py's ``run_child``), dev F1c / F1e,
bytes written.

Serving (the ner_lit run's best checkpoint): ``python -m ner_lit serve`` against the naive way,
``transformers.pipeline("token-classification")`` in a plain Flask app run one request at a time
(its export's weights): start-up time to the first answer, resident memory, then
bench/serve_bench.py's load (bench/serve_clients.py: keep-alive clients of this process, rounds
interleaved): 1-client p50 latency and 8-client requests/s.

    python bench/pretrained.py [--epochs N] [--rounds 3] [--max-seconds 20]
    python bench/pretrained.py --quick   # 64 + 64 sentences, 1 epoch, short load: a smoke run

Results: bench/results/pretrained.json and pretrained.md; ``--quick`` writes to
bench/work/quick-results and never touches bench/results.
"""
from __future__ import annotations

import argparse
import gc
import http.client
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench import common  # noqa: E402
from bench.common import rel  # noqa: E402

CONFIG = REPO / "configs" / "me5.yaml"
QUICK_SENTENCES = 64
SERVE_SENTENCES = 300
QUICK_SERVE_SENTENCES = 16
CLIENTS = (1, 8)
MIB = 1024 * 1024
TARGETS = {
    "F1e": "ner_lit dev F1e >= HF Trainer's",
    "train_speed": "ner_lit training sentences/s >= 1.5x HF Trainer's",
    "train_rss": "ner_lit peak training RSS <= HF Trainer's",
    "serve_p50": "1 client: ner_lit serve p50 <= 0.5x naive",
    "serve_throughput": "8 clients: ner_lit serve req/s >= 3x naive",
}


def tree_bytes(root: Path) -> dict[str, int]:
    """Bytes on disk under ``root``: all of it, checkpoints (*.ckpt), and exported model folders."""
    files = [p for p in root.rglob("*") if p.is_file()] if root.is_dir() else []
    return {"total": sum(p.stat().st_size for p in files),
            "checkpoints": sum(p.stat().st_size for p in files if p.suffix == ".ckpt"),
            "hf_model": sum(p.stat().st_size for p in files if "hf_model" in p.relative_to(root).parts)}


# ================================================================================ ner_lit
def ner_lit_args(model_dir: Path, data: Path, work: Path) -> list[str]:
    return ["--config", str(CONFIG), "--model.pretrained", str(model_dir), "--data.tokenizer", str(model_dir),
            "--data.data_dir", str(data), "--data.cache_dir", str(work / "cache")]


def ner_lit_fit(args, model_dir: Path, data: Path, work: Path) -> dict[str, Any]:
    root = work / "ner_lit"
    fit_args = [*ner_lit_args(model_dir, data, work), "--trainer.max_epochs", str(args.epochs)]
    run = common.clocked_fit(fit_args, root, "ner_lit", work, args.quick)
    run["bytes_written"] = tree_bytes(root)
    return run


def ner_lit_test(args, model_dir: Path, data: Path, work: Path) -> dict[str, Any]:
    root = work / "ner_lit"
    cmd = [sys.executable, "-m", "ner_lit", "test", *ner_lit_args(model_dir, data, work),
           "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
           "--ckpt_path", "best", "--data.test_file", "dev.tsv"]
    run = common.run_child(cmd, work / "logs" / "ner_lit-test.log")
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
                "bf16": common.training_precision(cfg) == "bf16-mixed",
                "max_grad_norm": float(cfg["trainer"].get("gradient_clip_val") or 0.0)}  # 0: Trainer clips nothing
    settings["data_dir"] = str(data)
    common.write_json(out / "settings.json", settings)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_hf-train", str(out / "settings.json")]
    run = common.run_child(cmd, work / "logs" / "hf_trainer.log")
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
    # token tagging whatever the recipe's: the Trainer's collator and model take one label per token
    dm = NERDataModule(data_dir=s["data_dir"], train_file=s["train_file"], val_file=s["val_file"],
                       tokenizer=s["model_dir"], max_length=s["max_length"], stride=s["stride"],
                       batch_size=s["batch_size"], cache_dir=s["cache_dir"], tagging="token")
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
    common.write_json(out / "result.json", {"clock": clock.clock.record(), "train_windows": len(dm.train_windows),
                                            "warmup_steps": warmup, "predict": score, "F1c": score["F1c"],
                                            "F1e": score["F1e"]})


def training(args, phases: common.Phases, model_dir: Path, data: Path, work: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """Both systems trained and scored, one after the other: ``{"ner_lit": ..., "hf_trainer": ...}``."""
    from ner_lit.corpus.klue import read_klue_tsv

    n_train = len(read_klue_tsv(data / "train.tsv"))
    ner = phases.run("ner_lit fit", lambda: ner_lit_fit(args, model_dir, data, work))
    ner["test"] = phases.run("ner_lit test", lambda: ner_lit_test(args, model_dir, data, work))
    ner.update(F1c=ner["test"]["F1c"], F1e=ner["test"]["F1e"])
    hf = phases.run("hf_trainer fit + predict", lambda: hf_fit(args, model_dir, data, work, cfg))
    for side in (ner, hf):
        side["sentences_per_s"] = n_train * side["clock"]["epochs"] / side["clock"]["train_s"]
    return {"ner_lit": ner, "hf_trainer": hf}


# ================================================================================ serving
def naive_pipeline_child(model_dir: str) -> None:
    """The naive server: ``pipeline("token-classification")`` behind Flask, one request at a time."""
    import flask
    from transformers import pipeline

    from bench.serve_clients import serve_app, text_of

    common.quiet()
    nlp = pipeline("token-classification", model=model_dir, tokenizer=model_dir, device="cpu")
    app = flask.Flask("naive-pipeline")

    @app.route("/api", methods=["POST"])
    def api():
        text = text_of(flask.request.get_json(force=True))
        result = [{"token": r["word"], "label": r["entity"], "prob": float(r["score"]), "start": r["start"], "end": r["end"]}
                  for r in nlp(text)]
        return flask.jsonify(text=text, result=result)

    serve_app(app, "flask")


def start_server(name: str, argv: list[str], logs: Path, text: str) -> tuple[Any, dict[str, Any]]:
    """One server started alone on the machine, up to its first answer: the server and its start-up facts."""
    from bench.serve_clients import Server, post

    t0 = time.perf_counter()
    server = Server(name, argv, logs, startup_timeout_s=600)
    server.wait_ready()
    listening = time.perf_counter() - t0
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)
    status, body = post(conn, text)
    conn.close()
    if status != 200:
        server.stop()
        raise SystemExit(f"{name}: first request answered {status}: {body[:300]!r}")
    return server, {"command": common.shown(argv), "listening_s": listening, "first_answer_s": time.perf_counter() - t0,
                    "memory_after_start": common.proc_status(server.proc.pid)}


def serve_phase(args, best: Path, hf_model: Path, work: Path, quantized: tuple[str, ...] = ()) -> dict[str, Any]:
    """ner_lit serve (and ``serve --quantize KIND`` beside it for each of ``quantized``) against the pipeline app."""
    from bench.serve_clients import measure, run_rounds, summarize_all

    n = QUICK_SERVE_SENTENCES if args.quick else SERVE_SENTENCES
    texts = common.dev_texts(args, n)
    ner_lit = [sys.executable, "-m", "ner_lit", "serve", "--ckpt_path", str(best), "--host", "127.0.0.1", "--port", "0"]
    argvs = {"ner_lit": ner_lit, **{f"ner_lit {kind}": [*ner_lit, "--quantize", kind] for kind in quantized},
             "naive": [sys.executable, str(Path(__file__).resolve()), "--_naive-serve", str(hf_model)]}
    servers: dict[str, Any] = {}
    facts: dict[str, Any] = {}
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    try:
        for name, argv in argvs.items():  # one at a time: each start-up alone on the machine
            servers[name], facts[name] = start_server(name, argv, logs, texts[0])
        for s in servers.values():  # warm-up
            measure(s, texts, max(CLIENTS), 3, args.max_seconds)
        raw = run_rounds(servers, texts, CLIENTS, args.rounds, n, args.max_seconds)
        for name, s in servers.items():
            facts[name]["memory_at_end"] = common.proc_status(s.proc.pid)
    finally:
        for s in servers.values():
            s.stop()
    return {"sentences": n, "rounds": args.rounds, "clients": list(CLIENTS), "max_seconds_per_measurement": args.max_seconds,
            "servers": facts, "results": summarize_all(raw)}


def serving(args, phases: common.Phases, work: Path) -> dict[str, Any]:
    """The ner_lit run's best checkpoint served against the pipeline app on its export."""
    from ner_lit.checkpoint.runs import resolve_checkpoint

    best = resolve_checkpoint("best", work / "ner_lit")
    hf_model = next(iter(sorted((work / "ner_lit").glob("version_*/hf_model"))))
    out = phases.run("serving", lambda: serve_phase(args, best, hf_model, work))
    out["checkpoint"] = rel(best)
    out["naive_model"] = rel(hf_model)
    return out


def serve_only(args) -> None:
    """``--serve-only RUN``: the serving half alone, on a finished run's best checkpoint and export,
    float, int8 and int8-small beside the pipeline app; bench/results/pretrained_serve.json and .md."""
    from ner_lit.checkpoint.runs import resolve_checkpoint

    run = args.serve_only
    best = resolve_checkpoint("best", run)
    record = common.start_record("pretrained_serve", args)
    record["checkpoint"], record["naive_model"] = rel(best), rel(run / "hf_model")
    record["serving"] = serve_phase(args, best, run / "hf_model", common.WORK / "pretrained-serve",
                                    quantized=("int8", "int8-small"))
    srv = record["serving"]["results"]
    lo, hi = str(min(CLIENTS)), str(max(CLIENTS))
    record["targets"] = {name: {"serve_p50": srv[name][lo]["p50_ms"] / srv["naive"][lo]["p50_ms"],
                                "serve_throughput": srv[name][hi]["requests_per_s"] / srv["naive"][hi]["requests_per_s"]}
                         for name in srv if name != "naive"}
    common.write_record(record, args)
    text = serve_only_markdown(record)
    common.write_text(common.results_dir(args) / "pretrained_serve.md", text)
    print(text)


def serve_only_markdown(rec: dict[str, Any]) -> str:
    m, srv, facts = rec["machine"], rec["serving"]["results"], rec["serving"]["servers"]
    lo, hi = str(min(CLIENTS)), str(max(CLIENTS))
    names = (*rec["targets"], "naive")
    lines = [
        "# multilingual-e5-small served: ner_lit (float, int8, int8-small) against pipeline + Flask (`bench/pretrained.py --serve-only`)",
        "", f"{rec['date']} · {m['cpu']} ({', '.join(m['isa'])}) · {m['cores']} cores · load average at start "
        f"{m['load_average_at_start'][0]:.2f}, at end {m['load_average_at_end'][0]:.2f} · checkpoint `{rec['checkpoint']}`",
        "", f"Load: the first {rec['serving']['sentences']} dev sentences, {rec['serving']['rounds']} interleaved round(s) "
        f"(bench/serve_clients.py). Targets: {lo} client p50 <= 0.5x naive, {hi} clients req/s >= 3x naive.", "",
        "| | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names),
        "| start-up to first answer, s | " + " | ".join(f"{facts[n]['first_answer_s']:.1f}" for n in names) + " |",
        "| RSS after the load, MiB (peak) | " + " | ".join(
            f"{facts[n]['memory_at_end']['VmRSS'] / MIB:.0f} ({facts[n]['memory_at_end']['VmHWM'] / MIB:.0f})" for n in names) + " |",
        f"| {lo} client p50, ms | " + " | ".join(f"{srv[n][lo]['p50_ms']:.1f}" for n in names) + " |",
        f"| {lo} client p50 / naive | " + " | ".join(
            f"{rec['targets'][n]['serve_p50']:.2f}x" for n in names[:-1]) + " | |",
        f"| {hi} clients req/s | " + " | ".join(f"{srv[n][hi]['requests_per_s']:.1f}" for n in names) + " |",
        f"| {hi} clients req/s / naive | " + " | ".join(
            f"{rec['targets'][n]['serve_throughput']:.2f}x" for n in names[:-1]) + " | |",
    ]
    return "\n".join(lines) + "\n"


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


def _met(t: dict[str, Any], key: str) -> str:
    return "met" if t[key]["met"] else "**not met**"


def _training_table(rec: dict[str, Any]) -> list[str]:
    t = rec["targets"]
    ner, hf = rec["training"]["ner_lit"], rec["training"]["hf_trainer"]
    nb, hb = ner["bytes_written"], hf["bytes_written"]
    return [
        "| training | ner_lit | HF Trainer | ner_lit / HF | target | |",
        "| --- | ---: | ---: | ---: | --- | --- |",
        f"| sentences/s (train sentences x epochs / time in epochs) | {ner['sentences_per_s']:.2f} | {hf['sentences_per_s']:.2f} "
        f"| {t['train_speed']['ratio']:.2f}x | >= 1.5x | {_met(t, 'train_speed')} |",
        f"| training time, s (epochs only) | {ner['clock']['train_s']:.0f} | {hf['clock']['train_s']:.0f} | | | |",
        f"| whole training process, s | {ner['wall_s']:.0f} | {hf['wall_s']:.0f} | | | |",
        f"| peak RSS of the training process, MiB | {ner['peak_rss_bytes'] / MIB:.0f} | {hf['peak_rss_bytes'] / MIB:.0f} "
        f"| {t['train_rss']['ratio']:.2f}x | <= 1x | {_met(t, 'train_rss')} |",
        f"| dev F1c (official) | {ner['F1c']:.2f} | {hf['F1c']:.2f} | | | |",
        f"| dev F1e (official) | {ner['F1e']:.2f} | {hf['F1e']:.2f} | {ner['F1e'] - hf['F1e']:+.2f} | >= HF | {_met(t, 'F1e')} |",
        f"| bytes written, MiB (all / checkpoints / hf_model) | {nb['total'] / MIB:.0f} / {nb['checkpoints'] / MIB:.0f} / "
        f"{nb['hf_model'] / MIB:.0f} | {hb['total'] / MIB:.0f} / {hb['checkpoints'] / MIB:.0f} / {hb['hf_model'] / MIB:.0f} | | | |",
        f"| dev evaluation, s (`ner_lit test` process / Trainer.predict + scoring) | {ner['test']['wall_s']:.1f} "
        f"| {hf['predict']['wall_s']:.1f} | | | |",
    ]


def _serving_table(rec: dict[str, Any]) -> list[str]:
    t = rec["targets"]
    srv, facts = rec["serving"]["results"], rec["serving"]["servers"]
    lo, hi = str(min(CLIENTS)), str(max(CLIENTS))
    end = {name: facts[name]["memory_at_end"] for name in ("ner_lit", "naive")}
    return [
        "| serving | ner_lit serve | naive (pipeline + Flask) | ner_lit / naive | target | |",
        "| --- | ---: | ---: | ---: | --- | --- |",
        f"| start-up to first answer, s | {facts['ner_lit']['first_answer_s']:.1f} | {facts['naive']['first_answer_s']:.1f} | | | |",
        f"| resident memory after the load, MiB (peak) | {end['ner_lit']['VmRSS'] / MIB:.0f} "
        f"({end['ner_lit']['VmHWM'] / MIB:.0f}) | {end['naive']['VmRSS'] / MIB:.0f} ({end['naive']['VmHWM'] / MIB:.0f}) | | | |",
        f"| {lo} client: p50 latency, ms | {srv['ner_lit'][lo]['p50_ms']:.1f} | {srv['naive'][lo]['p50_ms']:.1f} "
        f"| {t['serve_p50']['ratio']:.2f}x | <= 0.5x | {_met(t, 'serve_p50')} |",
        f"| {hi} clients: requests/s | {srv['ner_lit'][hi]['requests_per_s']:.1f} | {srv['naive'][hi]['requests_per_s']:.1f} "
        f"| {t['serve_throughput']['ratio']:.2f}x | >= 3x | {_met(t, 'serve_throughput')} |",
    ]


def markdown(rec: dict[str, Any]) -> str:
    m, st = rec["machine"], rec["setting"]
    fallback = ("" if st["precision_used"] == st["trainer"].get("precision")
                else " (this CPU has no native bf16: ner_lit falls back to 32-true, the Trainer is run alike)")
    lines = [
        f"# multilingual-e5-small on KLUE-NER: ner_lit vs HF Trainer{' (QUICK: smoke run, figures mean nothing)' if rec['quick'] else ''}",
        "",
        f"{rec['date']} · {m['cpu']} · nproc {m['nproc']} · torch {m['torch']} · transformers {m['transformers']} · "
        f"lightning {m['lightning']} · load average at start {m['load_average_at_start'][0]:.2f}, "
        f"at end {m['load_average_at_end'][0]:.2f}",
        "",
        f"configs/me5.yaml, {st['epochs']} epoch(s), {st['train_sentences']} train -> {st['dev_sentences']} dev sentences, "
        f"precision {st['precision_used']} for both{fallback}, frozen word embeddings, batch 16, seed 7.",
        "",
        *_training_table(rec),
        "",
        *_serving_table(rec),
        "",
        f"Load: the first {rec['serving']['sentences']} dev sentences, {rec['serving']['rounds']} interleaved round(s), "
        f"each measurement bounded by {rec['serving']['max_seconds_per_measurement']:g} s (bench/serve_clients.py's clients). "
        "Training time counts each epoch from its start to its last optimizer step (validation, checkpoints and "
        "model building excluded); peak RSS is the child process's own (GNU time), validation (ner_lit) and "
        "prediction (HF) included.",
        "",
        f"Command: `{rec['command']}`",
    ]
    return "\n".join(lines) + "\n"


# ================================================================================ main
def parse_args() -> argparse.Namespace:
    ap = common.parser(__doc__)
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default: configs/me5.yaml's; 1 with --quick)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="wheel cache of the me5 build (default test-artifacts/pretrained-me5-cache if present, else bench/work/me5-cache)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved serving rounds (default 3; 1 with --quick)")
    ap.add_argument("--max-seconds", type=float, default=None, help="bound of one serving measurement (default 20; 10 with --quick)")
    ap.add_argument("--serve-only", type=Path, default=None, metavar="RUN",
                    help="only serve: a finished configs/me5.yaml run's version folder (its best checkpoint and hf_model/), "
                         "float, --quantize int8 and int8-small against the pipeline app")
    ap.add_argument("--_hf-train", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_naive-serve", default=None, help=argparse.SUPPRESS)
    return ap.parse_args()


def setting(args, cfg: dict[str, Any], model_dir: Path, data: Path) -> dict[str, Any]:
    from ner_lit.corpus.klue import read_klue_tsv

    return {"config": rel(CONFIG), "epochs": args.epochs, "train_sentences": len(read_klue_tsv(data / "train.tsv")),
            "dev_sentences": len(read_klue_tsv(data / "dev.tsv")), "model": rel(model_dir), "data": rel(data),
            "precision_used": common.training_precision(cfg), **{k: cfg[k] for k in ("trainer", "model", "data")}}


def main() -> None:
    args = parse_args()
    if args._hf_train:
        return hf_train_child(args._hf_train)
    if args._naive_serve:
        return naive_pipeline_child(args._naive_serve)
    cfg = common.recipe(CONFIG)
    args.shared = Path(args.shared).resolve()
    args.epochs = args.epochs or (1 if args.quick else int(cfg["trainer"]["max_epochs"]))
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.max_seconds = args.max_seconds or (10.0 if args.quick else 20.0)
    common.quiet()
    if args.serve_only:
        return serve_only(args)
    work = common.WORK / ("pretrained-quick" if args.quick else "pretrained")
    work.mkdir(parents=True, exist_ok=True)
    record = common.start_record("pretrained", args)
    record["machine"]["nproc"] = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    phases = common.Phases()
    model_dir = phases.run("build model", lambda: common.me5_dir(args))
    data = common.data_dir(args, QUICK_SENTENCES, work / "data")
    record["setting"] = setting(args, cfg, model_dir, data)
    record["training"] = training(args, phases, model_dir, data, work, cfg)
    record["serving"] = serving(args, phases, work)
    record["phases"] = phases.record
    record["targets"] = targets(record)
    results = common.results_dir(args)
    common.write_record(record, args)
    text = markdown(record)
    common.write_text(results / "pretrained.md", text)
    print(text)
    print(f"wrote {results / 'pretrained.md'}")


if __name__ == "__main__":
    main()
