"""What ``test`` writes beside the checkpoint: JSON for programs, Markdown for people.

``test_report``: the per-type F1 table. ``error_analysis``: where the errors are
(:mod:`~ner_lit.training.analysis`) and the run's learning curve
(:mod:`~ner_lit.training.curve`, with ``learning_curve.png``). Each Markdown file starts with
what was scored (checkpoint, data file, date), so a report read on its own says where its
figures come from; the JSON files hold the figures only.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from ner_lit.files import write_text_atomic
from ner_lit.training import analysis as errors
from ner_lit.training import curve


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


def write_error_analysis(analysis: dict[str, Any], directory: Path, about: dict[str, str],
                         checkpoint: Optional[str]) -> Path:
    """``error_analysis.json``/``.md`` and, for a checkpoint's run, ``learning_curve.png`` in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    points = curve.learning_curve(checkpoint) if checkpoint else []
    png: Optional[Path] = directory / "learning_curve.png"
    why = curve.write_png(points, png, f"{about.get('checkpoint', '')}") if points else "no checkpoint run to draw"
    if why is not None:
        png = None
    record = {**analysis, "learning_curve": points}
    write_text_atomic(directory / "error_analysis.json", json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    md = directory / "error_analysis.md"
    write_text_atomic(md, header(about) + errors.markdown(analysis, curve.markdown(points, png, why)))
    print("Error analysis (per type, confusions, examples, learning curve) written to", md)
    return md
