"""The per-type table written at the end of ``test``: JSON for programs, Markdown for people."""
from __future__ import annotations

import json
from pathlib import Path


def markdown_table(report: dict[str, dict[str, float]]) -> str:
    lines = ["| type | precision | recall | F1 | support |", "| --- | ---: | ---: | ---: | ---: |"]
    for name, row in report.items():
        cells = [f"{row[k]:.2f}" if k in row else "" for k in ("precision", "recall", "f1")]
        support = str(int(row["support"])) if "support" in row else ""
        lines.append(f"| {name} | {' | '.join(cells)} | {support} |")
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, dict[str, float]], directory: Path, echo: bool = False, stem: str = "test_report") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{stem}.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    md = directory / f"{stem}.md"
    md.write_text(markdown_table(report), encoding="utf-8")
    if echo:
        print("\nPer-type entity scores (strict IOB2, seqeval arithmetic); written to", md)
        print(markdown_table(report))
    return md
