"""The per-type table written at the end of ``test``: JSON for programs, Markdown for people.

The Markdown file starts with what was scored (checkpoint, data file, date), so a report
read on its own says where its figures come from; the JSON holds the table only.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from ner_lit.files import write_text_atomic


def markdown_table(report: dict[str, dict[str, float]]) -> str:
    lines = ["| type | precision | recall | F1 | support |", "| --- | ---: | ---: | ---: | ---: |"]
    for name, row in report.items():
        cells = [f"{row[k]:.2f}" if k in row else "" for k in ("precision", "recall", "f1")]
        support = str(int(row["support"])) if "support" in row else ""
        lines.append(f"| {name} | {' | '.join(cells)} | {support} |")
    return "\n".join(lines) + "\n"


def scored(trainer: Any) -> dict[str, str]:
    """What a test run scored: the checkpoint, the data file and the date (UTC)."""
    ckpt = getattr(trainer, "ckpt_path", None)
    datamodule = getattr(trainer, "datamodule", None)
    data = datamodule.path("test") if datamodule is not None and hasattr(datamodule, "path") else None
    return {
        "checkpoint": str(Path(ckpt).resolve()) if ckpt else "none (the model as configured)",
        "data": str(Path(data).resolve()) if data else "unknown",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def header(about: dict[str, str]) -> str:
    return "".join(f"- {key}: {value}\n" for key, value in about.items()) + "\n"


def write_report(report: dict[str, dict[str, float]], directory: Path, echo: bool = False, stem: str = "test_report",
                 about: Optional[dict[str, str]] = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    write_text_atomic(directory / f"{stem}.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    md = directory / f"{stem}.md"
    write_text_atomic(md, (header(about) if about else "") + markdown_table(report))
    if echo:
        print("\nPer-type entity scores (strict IOB2, seqeval arithmetic); written to", md)
        print(markdown_table(report))
    return md
