"""bench/quantize.py --quick: float and int8 served in children of their own, scored and timed, the table written.
The tiny random model's figures mean nothing; what is checked is that every column is measured."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_quick_run_measures_float_and_int8_and_writes_the_table(klue_dir: Path, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "quantize.py"), "--quick", "--shared",
                           str(klue_dir.parents[1]), "--results", str(tmp_path), "--variants", "int8", "--rounds", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "quantize.json").read_text(encoding="utf-8"))
    assert set(record["variants"]) == {"float", "int8"}
    assert record["machine"]["isa"] is not None and record["quick"] is True
    float_run, int8_run = record["variants"]["float"], record["variants"]["int8"]
    assert float_run["runtime"] == "ONNX Runtime" and int8_run["runtime"] == "ONNX Runtime int8"
    assert float_run["unlike_float"] == 0 and float_run["check"] is None
    assert int8_run["check"]["entities"] > 0
    for run in (float_run, int8_run):
        assert 0 <= run["F1e"] <= 100 and run["p50_ms"] > 0 and run["rss_bytes"] > 0 and run["graph_bytes"] > 0
    table = (tmp_path / "quantize.md").read_text(encoding="utf-8")
    assert "| float |" in table and "| int8 |" in table
