"""Smoke test of bench/serve_bench.py: its --quick run (a tiny random model, 20 requests, 1 and
2 clients, real server processes on 127.0.0.1) finishes and writes the documented figures.
The figures themselves mean nothing here; only their presence and shape are checked."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

FIGURES = {"requests_per_s", "requests_per_s_min", "requests_per_s_max", "p50_ms", "p95_ms", "p99_ms",
           "client_cpu_cores", "server_cpu_cores", "machine_cpu_cores", "errors", "requests", "per_round"}


def test_quick_serve_bench_writes_every_figure(klue_dir: Path, tmp_path: Path):
    results, work = tmp_path / "results", tmp_path / "work"
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "serve_bench.py"), "--quick", "--shared", str(klue_dir.parents[1]),
         "--results", str(results), "--work", str(work)],
        cwd=str(REPO), capture_output=True, text=True, timeout=180,
    )
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    record = json.loads((results / "serve.json").read_text(encoding="utf-8"))
    assert record["quick"] is True
    for key in ("date", "command", "machine", "model", "load", "servers", "sanity", "systems", "results", "targets",
                "targets_by_torch_threads", "other_benchmarks"):
        assert key in record, key
    assert {"cpu", "cores", "versions"} <= set(record["machine"])
    assert record["machine"]["versions"]["torch"]
    assert record["systems"] == ["naive-t1", "ner_lit-t1", "ner_lit-torchscript", "ner_lit-t1-w2", "noop-waitress", "noop-flask"]
    for name in record["systems"]:
        assert set(record["results"][name]) == {"1", "2"}, name
        for clients, figures in record["results"][name].items():
            assert FIGURES <= set(figures), (name, clients)
            assert figures["errors"] == 0, (name, clients, figures["per_round"][0]["error_examples"])
            assert 0 < figures["requests"] <= 20 * int(clients)
            assert figures["requests_per_s"] > 0 and 0 < figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"]
    targets = record["targets"]
    assert {"ratio", "met", "aim_met", "clients"} <= set(targets["throughput"]) and targets["throughput"]["clients"] == 2
    assert {"ratio", "met", "ner_lit_ms", "naive_ms"} <= set(targets["p50"])
    assert "noop_waitress_requests_per_s" in targets["ceiling"]
    # the same weights and tokenizer behind both servers: every sentence tokenized alike (token labels
    # may differ: ner_lit decodes the best valid IOB2 path, the naive server each token's argmax)
    sanity = record["sanity"]["1"]
    assert sanity["sentences"] > 0 and sanity["sentences_same_tokens"] == sanity["sentences"]
    md = (results / "serve.md").read_text(encoding="utf-8")
    assert "| server | clients | req/s |" in md and "ner_lit-t1" in md
    # the servers were stopped
    for log in work.glob("server-*.log"):
        assert "Traceback" not in log.read_text(encoding="utf-8", errors="replace"), log
    assert elapsed < 120, f"the quick serve bench took {elapsed:.0f} s"
