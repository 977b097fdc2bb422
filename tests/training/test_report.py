"""The per-type report ``test`` writes: the same table as JSON for programs and Markdown for people."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from ner_lit.training.report import markdown_table, scored, write_report

REPORT = {"PS": {"precision": 80.0, "recall": 66.6667, "f1": 72.7273, "support": 3},
          "macro avg": {"precision": 80.0, "recall": 66.6667, "f1": 72.7273}}


def test_the_report_is_written_as_json_and_as_markdown_headed_by_what_was_scored(tmp_path: Path) -> None:
    about = {"checkpoint": "/runs/best.ckpt", "data": "/data/dev.tsv", "date": "2026-01-01 00:00 UTC"}
    md = write_report(REPORT, tmp_path / "out", about=about)
    assert json.loads((tmp_path / "out" / "test_report.json").read_text(encoding="utf-8")) == REPORT
    text = md.read_text(encoding="utf-8")
    assert text.startswith("- checkpoint: /runs/best.ckpt\n- data: /data/dev.tsv\n- date: 2026-01-01 00:00 UTC\n\n")
    assert text.endswith(markdown_table(REPORT))


def test_the_table_rounds_to_two_places_and_leaves_a_missing_support_empty() -> None:
    lines = markdown_table(REPORT).splitlines()
    assert lines[2] == "| PS | 80.00 | 66.67 | 72.73 | 3 |"
    assert lines[3] == "| macro avg | 80.00 | 66.67 | 72.73 |  |"


def test_echo_prints_the_table_and_where_it_was_written(tmp_path: Path, capsys) -> None:
    md = write_report(REPORT, tmp_path, echo=True, stem="dev")
    out = capsys.readouterr().out
    assert str(md) in out and "| PS | 80.00 |" in out


def test_scored_names_the_checkpoint_and_data_file_resolved(tmp_path: Path) -> None:
    datamodule = SimpleNamespace(path=lambda stage: tmp_path / f"{stage}.tsv")
    about = scored(SimpleNamespace(ckpt_path=str(tmp_path / "a.ckpt"), datamodule=datamodule))
    assert about["checkpoint"] == str((tmp_path / "a.ckpt").resolve())
    assert about["data"] == str((tmp_path / "test.tsv").resolve())
    assert scored(SimpleNamespace())["checkpoint"].startswith("none")
