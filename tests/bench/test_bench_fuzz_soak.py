"""bench/fuzz.py and bench/soak.py: their --quick runs against a real ``serve`` of the session's tiny
model (no training: ``--ckpt_path`` is the trained_run fixture's best checkpoint), and their verdicts
(slow); and the fuzz classes built alone, without a server (fast)."""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: A quick run of each script takes about 12-17 s on the 2-core machine (server start-up ~5 s included).
QUICK_RUN_LIMIT_S = 60


def fuzz_cases(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(REPO))
    return importlib.import_module("bench.serve_fuzz_cases")


def run_quick(script: str, trained_run, tmp_path: Path) -> tuple[dict, float]:
    env = dict(os.environ, NER_LIT_CACHE=str(trained_run.cache))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(REPO / "bench" / f"{script}.py"), "--quick", "--ckpt_path",
                           str(trained_run.best), "--results", str(tmp_path), "--work", str(tmp_path / "work")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    return json.loads((tmp_path / f"{script}.json").read_text(encoding="utf-8")), elapsed


def test_the_fuzz_classes_build_without_a_server(monkeypatch: pytest.MonkeyPatch):
    cases = fuzz_cases(monkeypatch)
    target = cases.Target("a-token_123", max_text_length=100, max_batch_size=4)
    assert len(cases.CLASSES) >= 10
    total = 0
    for name in cases.CLASSES:
        built = cases.build(name, target, quick=True, seed=7)
        assert built, name
        assert all(isinstance(c, cases.Case) and c.mode in cases.MODES for c in built), name
        assert any(c.data for c in built), name
        assert built == cases.build(name, target, quick=True, seed=7), f"{name} is not deterministic"
        total += len(built)
    assert total >= 1000
    # the classes differ: no two build the same requests
    firsts = {name: cases.build(name, target, True, 7)[0].data for name in cases.CLASSES}
    assert len(set(firsts.values())) == len(firsts)
    families = cases.bad_request_families(target, 7)
    assert set(families) == {"bad JSON", "oversized text", "wrong token", "bad method"}
    assert all(len(c.expect) == 1 for cs in families.values() for c in cs)


def test_the_serve_command_line_takes_a_token_that_begins_with_a_dash(monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Path):
    cases = fuzz_cases(monkeypatch)
    argv = cases.server_argv(tmp_path / "best.ckpt", "-Zx_9token")
    proc = subprocess.run([*argv, "--print_config"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "api_key: -Zx_9token" in proc.stdout


def test_what_counts_as_an_application_5xx(monkeypatch: pytest.MonkeyPatch):
    cases = fuzz_cases(monkeypatch)
    assert cases.is_application_5xx(500, b"POST /api HTTP/1.1\r\n\r\n")
    assert cases.is_application_5xx(502, b"")
    assert not cases.is_application_5xx(503, b"")
    assert not cases.is_application_5xx(501, b"POST /api HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n")
    assert cases.is_application_5xx(501, b"POST /api HTTP/1.1\r\n\r\n")
    assert not cases.is_application_5xx(None, b"") and not cases.is_application_5xx(413, b"")
    # answers compared with a tolerance for the numbers only
    want = {"text": "a", "entities": [], "result": [{"token": "a", "label": "O", "prob": 0.5}]}
    near = {"text": "a", "entities": [], "result": [{"token": "a", "label": "O", "prob": 0.500001}]}
    other = {"text": "a", "entities": [], "result": [{"token": "a", "label": "B-PS", "prob": 0.5}]}
    assert cases.same_prediction(near, want) and not cases.same_prediction(other, want)


@pytest.mark.slow
def test_quick_fuzz_finds_no_application_5xx_and_the_answer_holds(trained_run, tmp_path: Path):
    record, elapsed = run_quick("fuzz", trained_run, tmp_path)
    assert record["quick"] is True and record["ok"] is True, record["failures"]
    assert {"cpu", "cores", "isa", "load_average_at_start", "load_average_at_end"} <= set(record["machine"])
    classes = record["classes"]
    assert len(classes) >= 10
    for name, c in classes.items():
        assert c["requests"] > 0, name
        assert c["application_5xx"] == 0, (name, c["examples"])
        assert c["expectation_failures"] == 0, (name, c["examples"])
        assert c["known_answer"]["unchanged"], (name, c["known_answer"])
        assert c["server_alive"], name
    assert record["totals"]["requests"] >= 1000
    assert record["server_alive_at_end"] and record["health_at_end"] == 200
    assert record["server_rss_bytes"]["start"] > 0 and record["server_rss_bytes"]["end"] > 0
    assert "traceback" in record["log"]
    # the slow clients did not starve the valid requests sent meanwhile
    assert classes["slow_clients"]["valid_requests_answered_200"] > 0
    assert elapsed < QUICK_RUN_LIMIT_S, f"the quick fuzz took {elapsed:.0f} s"


@pytest.mark.slow
def test_quick_soak_has_no_errors_and_no_wrong_answers(trained_run, tmp_path: Path):
    record, elapsed = run_quick("soak", trained_run, tmp_path)
    assert record["quick"] is True and record["ok"] is True
    assert record["requests"] > 0 and record["requests_per_s"] > 0
    assert record["errors"] == 0, (record["unexpected_examples"], record["connection_errors_by_kind"])
    assert record["wrong_answers"] == 0, record["wrong_examples"]
    assert record["valid_requests"] > 0 and record["bad_requests"] > 0
    assert set(record["bad_by_family"]) <= {"bad JSON", "oversized text", "wrong token", "bad method"}
    assert 0 < record["valid_latency_ms"]["p50_ms"] <= record["valid_latency_ms"]["p99_ms"]
    rss = record["server_rss_bytes"]
    assert rss["start"] > 0 and rss["middle"] > 0 and rss["end"] > 0
    assert record["server_alive_at_end"] and record["machine"]["isa"] is not None
    assert elapsed < QUICK_RUN_LIMIT_S, f"the quick soak took {elapsed:.0f} s"
