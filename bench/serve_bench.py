"""Serving speed: ner_lit's server against the original system's way.

Two real server processes answer ``POST /api`` on 127.0.0.1 with the same weights:

* ``ner_lit``: ``python -m ner_lit serve --ckpt_path <ckpt> --port 0`` (waitress, 8 request
  threads, micro-batching: concurrent requests share a forward pass, several short texts
  packed into one 128-token row; the model runs under ONNX Runtime, ``--runtime
  onnxruntime``, the default; request threads tokenize and build their answers, the batch
  worker runs the model and decodes the whole batch);
* ``ner_lit-torchscript``: the same with ``--runtime torchscript`` (a TorchScript trace), for
  the runtime's share of the gain (information);
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

The load (bench/serve_clients.py): the first 300 sentences of dev.tsv, sent as the original
clients did (a bare JSON string body), by 1 and by 8 client threads of this process, every
client going through all 300 sentences from its own offset. Servers run side by side and the
rounds are interleaved (round r: every server, every client count), so a drift of the machine's
load hits every configuration alike. The CPU used by the load generator, by the server and by
the whole machine is recorded with each measurement; a target judged while other processes used
more than 0.2 cores is flagged "distorted" (bench/serve_report.py).

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
import http.client
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench import common  # noqa: E402
from bench.serve_clients import (  # noqa: E402
    OTHER_LOAD,
    Server,
    measure,
    other_benchmarks,
    post,
    quiet_gate,
    run_rounds,
    serve_app,
    summarize_all,
    text_of,
    wait_for_quiet,
)
from bench.serve_report import add_quiet_view, markdown, recompute, setting_name, suffix, targets  # noqa: E402

WORK = common.WORK
NAIVE_MAX_LENGTH = 128
FULL_SENTENCES = 300
FULL_CLIENTS = (1, 8)
QUICK_SENTENCES = 20
QUICK_CLIENTS = (1, 2)
VERSIONS = ("torch", "transformers", "tokenizers", "lightning", "flask", "werkzeug", "waitress", "flask-classful")
#: The original system's figures on this machine class, as its owners gave them: recorded for scale.
ORIGINAL_SYSTEM = {
    "one_client": {"requests_per_s": [73, 81], "p50_ms": [12, 14]},
    "four_clients": {"requests_per_s": [97, 99], "p50_ms": 40},
}
SERVER_HOW = {
    "ner_lit": "waitress, 8 threads, MicroBatcher (max_batch_size 32, max_wait_ms 2), packed rows of 128 tokens "
               "(--pack), ONNX Runtime (--runtime onnxruntime), decoding in the batch worker, entities + per-token result",
    "ner_lit-torchscript": "ner_lit with --runtime torchscript (a frozen TorchScript trace, the runtime ONNX Runtime "
                           "replaced as the default), torch threads as ner_lit's (information, no target)",
    "naive": f"Flask development server threaded=False (HTTP/1.0: a new connection per request), padding='max_length' "
             f"{NAIVE_MAX_LENGTH} + truncation, one forward per request under torch.no_grad, per-token top-1 label/prob "
             "(no entities)",
    "ner_lit-t1-w2": "ner_lit with --model_workers 2 and one torch thread (OMP_NUM_THREADS=1): two forward passes at "
                     "once, each on its own core (information, no target)",
    "noop-waitress": "waitress 8 threads + Flask, fixed JSON answer, no model: the ceiling of client + HTTP stack",
    "noop-flask": "Flask development server threaded=False, fixed JSON answer, no model",
}


@dataclass
class Settings:
    """The options with their defaults (``--quick`` or full) filled in."""

    results: Path
    work: Path
    rounds: int
    max_s: float
    client_counts: tuple[int, ...]
    sentences: int
    thread_settings: list[Optional[int]]  # None: torch's default


# =============================================================================== the servers' apps
# Each is this file run with --_role; it prints "Serving on http://HOST:PORT" once it listens,
# like `python -m ner_lit serve` does.
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
        text = text_of(flask.request.get_json(force=True))
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
        return flask.jsonify(text=text_of(flask.request.get_json(force=True)), result=[])

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


# =============================================================================== the model
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
    ref = common.reference_model(args)
    root = WORK / "serve-runs"
    cmd = [sys.executable, "-m", "ner_lit", "fit", "--model.pretrained", str(ref), "--data.tokenizer", str(ref),
           "--data.data_dir", str(common.klue_dir(args)), "--data.train_file", "train.tsv",
           "--data.val_file", "dev.tsv", "--model.learning_rate", "5e-4", "--data.batch_size", "32",
           "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(root), "--trainer.accelerator", "cpu",
           "--trainer.enable_progress_bar", "false", "--export.dirname", "null",
           "--data.cache_dir", str(common.cache_dir())]
    print("fine-tuning the reference model 1 epoch:", common.shown(cmd), flush=True)
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


def quick_model_dir(out: Path, texts: list[str]) -> Path:
    """The tests' tiny random BERT (tests/serve_fixtures.py), its vocabulary over ``texts``' characters."""
    if not (out / "config.json").is_file():
        spec = importlib.util.spec_from_file_location("serve_fixtures", REPO / "tests" / "serve_fixtures.py")
        fixtures = sys.modules["serve_fixtures"] = importlib.util.module_from_spec(spec)  # its dataclasses look it up
        spec.loader.exec_module(fixtures)
        fixtures.build_tiny_model_dir(out, texts=texts, max_positions=NAIVE_MAX_LENGTH)
    return out


def served_model(args, work: Path, texts: list[str]) -> tuple[list[str], list[str], dict[str, Any]]:
    """What the model servers load: ner_lit serve's arguments, the naive role's, and the record's ``model``."""
    if args.ckpt is None and args.quick:
        model_dir = quick_model_dir(work / "tiny-model", texts)
        return (["--model_dir", str(model_dir)], ["--_model_dir", str(model_dir)],
                {"description": "a tiny random BERT (2 layers, hidden 32) over the quick sentences' characters",
                 "model_dir": str(model_dir)})
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
    model = {
        "description": f"the reference model ({mc['num_hidden_layers']}x{mc['hidden_size']} {mc['model_type']}, "
                       f"{facts['parameters']:,} parameters) fine-tuned by ner_lit, checkpoint {src.name}",
        "checkpoint": str(src), "served_copy": str(ckpt), **origin, **facts,
    }
    return ["--ckpt_path", str(ckpt)], ["--ckpt", str(ckpt)], model


# =============================================================================== the servers
def server_commands(thread_settings: list[Optional[int]], model_args: list[str],
                    naive_args: list[str]) -> dict[str, tuple[list[str], Optional[int]]]:
    """name -> (command, torch threads), in the order the servers are measured."""
    role = [sys.executable, str(Path(__file__).resolve())]
    serve = [sys.executable, "-m", "ner_lit", "serve", *model_args, "--host", "127.0.0.1", "--port", "0"]
    argvs: dict[str, tuple[list[str], Optional[int]]] = {}
    for setting in thread_settings:  # per torch-thread setting a naive and a ner_lit server
        argvs["naive" + suffix(setting)] = ([*role, "--_role", "naive", *naive_args], setting)
        argvs["ner_lit" + suffix(setting)] = (serve, setting)
    # the runtime ONNX Runtime replaced as the default, for its share of the gain in the same run
    argvs["ner_lit-torchscript"] = ([*serve, "--runtime", "torchscript"], thread_settings[0])
    if 1 in thread_settings:  # the throughput setting the README suggests on 2 cores: two model workers
        argvs["ner_lit-t1-w2"] = ([*serve, "--model_workers", "2"], 1)
    argvs["noop-waitress"] = ([*role, "--_role", "noop-waitress"], None)
    argvs["noop-flask"] = ([*role, "--_role", "noop-flask"], None)
    return argvs


def server_descriptions(argvs: dict[str, tuple[list[str], Optional[int]]],
                        thread_settings: list[Optional[int]]) -> dict[str, Any]:
    first = argvs["ner_lit" + suffix(thread_settings[0])][0]
    out: dict[str, Any] = {name: {"how": how} for name, how in SERVER_HOW.items()}
    out["ner_lit"] = {"command": common.shown(first), **out["ner_lit"]}
    out["torch_threads"] = {("ner_lit/naive" + suffix(t)): (f"OMP_NUM_THREADS={t}" if t else "torch default (= cores)")
                            for t in thread_settings}
    return out


def answers(server: Server, texts: list[str], max_s: float) -> list[Any]:
    """Each text once, in order, within ``max_s`` seconds: the ``result`` of every answer."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    out = []
    deadline = time.perf_counter() + max_s
    for t in texts:
        if time.perf_counter() > deadline:
            break
        status, body = post(conn, t)
        if status != 200:
            raise SystemExit(f"{server.name} answered {status} to {t[:40]!r}: {body[:300]!r}")
        out.append(json.loads(body)["result"])
    conn.close()
    return out


def sanity(servers: dict[str, Server], texts: list[str], sfx: str = "", max_s: float = 15.0) -> dict[str, Any]:
    """Each text once, sequentially, to ner_lit and naive (also the warm-up): same labels?
    Each server gets at most ``max_s`` seconds; the comparison covers the texts both answered."""
    got = {name: answers(servers[name + sfx], texts, max_s) for name in ("ner_lit", "naive")}
    same = agree = total = 0
    for a, b in zip(got["ner_lit"], got["naive"]):
        total += max(len(a), len(b))
        if len(a) == len(b):
            same += 1
            agree += sum(x["label"] == y["label"] for x, y in zip(a, b))
    return {"sentences": min(len(a) for a in got.values()), "sentences_same_tokens": same, "tokens": total,
            "token_label_agreement": agree / max(1, total)}


def measure_servers(argvs: dict[str, tuple[list[str], Optional[int]]], texts: list[str], s: Settings,
                    wait_until: Optional[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Start every server, check and warm them up, run the rounds, stop them: (sanity, raw figures)."""
    servers: dict[str, Server] = {}
    try:
        for name, (argv, threads) in argvs.items():
            servers[name] = Server(name, argv, s.work, torch_threads=threads)
        for server in servers.values():
            server.wait_ready()
        print("servers ready: " + ", ".join(f"{n}:{server.port}" for n, server in servers.items()), flush=True)
        checks = {setting_name(t): sanity(servers, texts, suffix(t)) for t in s.thread_settings}
        for name, server in servers.items():
            measure(server, texts, max(s.client_counts), 5 if name.startswith(("ner_lit", "naive")) else 20, s.max_s)
        raw = run_rounds(servers, texts, s.client_counts, s.rounds, s.sentences, s.max_s,
                         before=lambda: {"waited_for_idle_machine_s": quiet_gate(wait_until)})
        return checks, raw
    finally:
        for server in servers.values():
            server.stop()
        for name, server in servers.items():
            if server.logged_traceback():
                print(f"warning: server {name} logged a traceback: {server.log_path}", file=sys.stderr)


# =============================================================================== main
def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
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
    return ap.parse_args(argv)


def settings_of(args: argparse.Namespace) -> Settings:
    q = args.quick
    s = Settings(
        results=(args.results or (WORK / "quick-results" if q else common.RESULTS)).resolve(),
        work=(args.work or (WORK / ("serve-quick" if q else "serve"))).resolve(),
        rounds=args.rounds or (1 if q else 3),
        max_s=args.max_seconds or (60.0 if q else 20.0),
        client_counts=tuple(int(c) for c in args.clients.split(",")) if args.clients else (QUICK_CLIENTS if q else FULL_CLIENTS),
        sentences=args.sentences or (QUICK_SENTENCES if q else FULL_SENTENCES),
        thread_settings=[None if t == "default" else int(t) for t in (args.torch_threads or ("1" if q else "default,1")).split(",")],
    )
    s.results.mkdir(parents=True, exist_ok=True)
    s.work.mkdir(parents=True, exist_ok=True)
    return s


def new_record(args: argparse.Namespace, argv: Optional[list[str]]) -> dict[str, Any]:
    """The record's head; with ``--wait-until`` only once the machine is quiet (or the time has come)."""
    waited = wait_for_quiet(args.wait_until) if args.wait_until else None
    record = common.start_record("serve", args, machine_facts=common.serving_machine(VERSIONS))
    record["command"] = common.shown([sys.executable, "bench/serve_bench.py", *(sys.argv[1:] if argv is None else argv)])
    record["other_benchmarks"] = {"at_start": other_benchmarks(), "wait": waited}
    record["other_load"] = {"at_start": other_benchmarks(OTHER_LOAD)}
    return record


def finish_record(record: dict[str, Any], raw: dict[str, Any], s: Settings) -> None:
    record["load"] = {"sentences": s.sentences, "source": "dev.tsv (first sentences)", "rounds": s.rounds,
                      "clients": list(s.client_counts), "requests_per_client": s.sentences,
                      "max_seconds_per_measurement": s.max_s, "body": "bare JSON string",
                      "client": "threads of this process, http.client keep-alive"}
    record["systems"] = list(raw)
    record["results"] = summarize_all(raw)
    record["targets_by_torch_threads"] = {setting_name(t): targets(record["results"], s.client_counts, suffix(t))
                                          for t in s.thread_settings}
    record["targets"] = record["targets_by_torch_threads"][setting_name(s.thread_settings[0])]
    add_quiet_view(record)
    record["original_system_reference"] = ORIGINAL_SYSTEM
    record["other_benchmarks"]["at_end"] = other_benchmarks()
    record["other_load"]["at_end"] = other_benchmarks(OTHER_LOAD)


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    if args._role:
        run_role(args._role, str(args.ckpt) if args.ckpt else None, args._model_dir)
        return
    if args.recompute:
        recompute(args.recompute)
        return
    args.shared = args.shared.resolve()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    s = settings_of(args)
    texts = common.dev_texts(args, s.sentences)
    record = new_record(args, argv)
    model_args, naive_args, record["model"] = served_model(args, s.work, texts)
    argvs = server_commands(s.thread_settings, model_args, naive_args)
    record["servers"] = server_descriptions(argvs, s.thread_settings)
    record["sanity"], raw = measure_servers(argvs, texts, s, args.wait_until)
    finish_record(record, raw, s)
    out = common.write_record(record, args, directory=s.results)
    common.write_text(s.results / "serve.md", markdown(record))
    print(markdown(record))
    print(f"wrote {out} and {s.results / 'serve.md'}")


if __name__ == "__main__":
    main()
