"""bench/serve_restart.py --quick: serve started twice per quantization on a tiny checkpoint; the first makes the graph
(itself: the checkpoint is too small for a helper process), the second uses the kept graph. And bench/pretrained.py --serve-only's table from a record."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


@pytest.mark.slow
def test_quick_restarts_use_the_kept_graph_from_the_second_start(klue_dir: Path, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "serve_restart.py"), "--quick", "--shared",
                           str(klue_dir.parents[1]), "--results", str(tmp_path), "--quantize", "int8"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "serve_restart.json").read_text(encoding="utf-8"))
    first, second = record["starts"]["int8"]  # float restarts: tests/inference/test_kept_start.py
    assert not first["kept"] and not first["helper"] and second["kept"]  # a tiny checkpoint: no helper
    assert second["first_answer_s"] > 0 and second["rss_bytes"] > 0
    assert "| int8 | 2 | kept |" in (tmp_path / "serve_restart.md").read_text(encoding="utf-8")


def test_the_serve_only_table_gives_both_ratios_against_the_naive_server() -> None:
    from bench.pretrained import serve_only_markdown

    def side(p50: float, rps: float) -> dict:
        return {"1": {"p50_ms": p50, "requests_per_s": rps}, "8": {"p50_ms": p50, "requests_per_s": rps}}

    facts = {n: {"first_answer_s": 10.0, "memory_at_end": {"VmRSS": 2**30, "VmHWM": 2**31}}
             for n in ("ner_lit", "ner_lit int8", "naive")}
    rec = {"date": "2026-12-07", "checkpoint": "best.ckpt",
           "machine": {"cpu": "cpu", "isa": ["avx2"], "cores": 2, "load_average_at_start": [0.1], "load_average_at_end": [0.2]},
           "serving": {"sentences": 300, "rounds": 3, "servers": facts,
                       "results": {"ner_lit": side(10, 60), "ner_lit int8": side(6, 120), "naive": side(20, 30)}},
           "targets": {"ner_lit": {"serve_p50": 0.5, "serve_throughput": 2.0},
                       "ner_lit int8": {"serve_p50": 0.3, "serve_throughput": 4.0}}}
    text = serve_only_markdown(rec)
    assert "| 1 client p50 / naive | 0.50x | 0.30x | |" in text
    assert "| 8 clients req/s / naive | 2.00x | 4.00x | |" in text
