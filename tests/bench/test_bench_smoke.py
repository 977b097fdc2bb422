"""Smoke test of the bench scripts: each runs with --quick (a few batches on a few sentences)
and writes its result JSON with the expected keys. The figures themselves mean nothing here."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMMON = {"name", "date", "command", "quick", "machine"}
SCRIPTS = {
    "metric_speed": {"seconds", "values", "max_abs_difference", "speedup", "targets"},
    "train_throughput": {"sentences_per_s", "rounds", "speedup", "targets"},
    "accuracy": {"alignment_ceiling", "runs", "targets"},
    "eval_speed": {"seconds", "f1", "speedup", "targets", "f1_max_difference"},
    "profile_step": {"achieved_gflops", "matmul_gflops", "fraction_of_matmul_peak", "train_top_ops", "eval_top_ops", "targets"},
    "precision": {"cpu", "matmul_gflops_2048", "sentences_per_s"},
    "serve_profile": {"runtime", "packing", "stages_p50_ms", "bare_forward_share_of_forward", "batching"},
    "adamw_step": {"setting", "runs", "summary", "optimizer_speedup_fused_over_for_loop",
                   "layer_decay_adds_to_the_optimizer_part_s", "step_over_frozen"},
}
#: Options beyond --quick: the smoke run takes each optional path once.
EXTRA = {"adamw_step": ["--layer-decay", "0.9", "--word-embeddings"]}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def results(klue_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench-results")


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_quick_run_writes_json(name: str, results: Path, klue_dir: Path) -> None:
    shared = klue_dir.parents[1]
    proc = subprocess.run([sys.executable, str(REPO / "bench" / f"{name}.py"), "--quick", "--shared", str(shared),
                           "--results", str(results), *EXTRA.get(name, [])], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((results / f"{name}.json").read_text())
    missing = (COMMON | SCRIPTS[name]) - set(record)
    assert not missing, f"{name}.json lacks {missing}"
    assert record["quick"] is True
    assert record["machine"]["cores"] >= 1 and record["machine"]["torch"]


def test_report_collects(results: Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "report.py"), "--results", str(results)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (results / "RESULTS.md").read_text()
    assert text.startswith("# ner_lit benchmark results") and "## Summary of targets" in text
