"""A disk that fills up during a checkpoint save: one error line naming the file, the last good checkpoint kept."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from ner_lit.checkpoint.format import load_checkpoint

from pipeline_fixtures import REPO, TrainedRun, cli_process, tiny_config


def test_a_full_disk_while_saving_last_ckpt_ends_fit_with_one_line_and_keeps_the_previous_last(
        trained_run: TrainedRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "tests"), str(REPO), os.environ.get("PYTHONPATH", "")]))
    root = tmp_path / "runs"
    cfg = tiny_config(trained_run.data_dir, root)
    cfg["trainer"].update({"max_epochs": 2, "limit_train_batches": 2,
                           "plugins": [{"class_path": "fault_plugins.FullDiskSave",
                                        "init_args": {"prefix": "last", "occurrence": 2}}]})
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    proc = cli_process(["fit", "--config", str(tmp_path / "fit.yaml")], trained_run.cache)
    last = root / "version_0" / "checkpoints" / "last.ckpt"
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ner_lit: error:")]
    assert errors == [f"ner_lit: error: {last}: could not be written (No space left on device); "
                      "what was there before is unchanged"]
    assert "Traceback" not in proc.stderr
    assert load_checkpoint(last)["epoch"] == 0  # the first epoch's, whole
    assert sorted(p.name for p in last.parent.iterdir() if p.name.startswith(".")) == []  # no temporary left
