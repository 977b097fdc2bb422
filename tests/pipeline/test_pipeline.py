"""fit -> checkpoint -> test in a new process (written beside the checkpoint); reproducible runs; resuming.

All on the session's tiny run (tests/pipeline_fixtures.py); a test that writes runs does so
under a root of its own.
"""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from ner_lit.training.metrics import MACRO_AVG, MICRO_AVG

from pipeline_fixtures import (
    TrainedRun,
    cli,
    cli_process,
    copy_run,
    last_value,
    read_metrics,
    versions,
)

F1C_ROW = "F1c (macro over characters)"


def tree_digest(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- test in a new process
@pytest.fixture(scope="module")
def tested(trained_run: TrainedRun, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """`test --ckpt_path best` in a new process, on a copy of the tiny run: (the folder it wrote, the process)."""
    root = tmp_path_factory.mktemp("tested")
    copy_run(trained_run.run_dir, root)
    proc = cli_process(["test", *trained_run.args("--trainer.default_root_dir", str(root), "--ckpt_path", "best")],
                       trained_run.cache)
    assert proc.returncode == 0, proc.stderr[-4000:]
    # No new run: the evaluation is written beside the checkpoint it scored.
    assert versions(root) == [root / "version_0"]
    return root / "version_0" / "test" / trained_run.best.stem / "dev", proc


def test_test_in_new_process_logs_test_F1c_and_F1e_equal_to_the_best_checkpoints_val_scores(
        trained_run: TrainedRun, tested: tuple[Path, subprocess.CompletedProcess]) -> None:
    run_dir, _ = tested
    # test_file defaults to val_file: the restored checkpoint must score exactly what it scored in fit.
    assert last_value(run_dir, "test_F1c") == last_value(trained_run.run_dir, "val_F1c")
    assert last_value(run_dir, "test_F1e") == last_value(trained_run.run_dir, "val_F1e")


def test_test_resolves_best_to_the_checkpoint_modelcheckpoint_chose(
        trained_run: TrainedRun, tested: tuple[Path, subprocess.CompletedProcess]) -> None:
    _, proc = tested
    run = tested[0].parents[2]
    assert f"--ckpt_path best: {run / 'checkpoints' / trained_run.best.name} (run {run.name}: the highest val_F1c" \
        in proc.stderr


def test_test_report_names_the_checkpoint_the_data_and_the_date(
        trained_run: TrainedRun, tested: tuple[Path, subprocess.CompletedProcess]) -> None:
    run_dir, _ = tested
    head = (run_dir / "test_report.md").read_text(encoding="utf-8").split("\n\n")[0].splitlines()
    assert head[0] == f"- checkpoint: {(run_dir.parents[2] / 'checkpoints' / trained_run.best.name).resolve()}"
    assert head[1] == f"- data: {(trained_run.data_dir / 'dev.tsv').resolve()}"
    assert re.fullmatch(r"- date: \d{4}-\d\d-\d\d \d\d:\d\d UTC", head[2]), head[2]


@pytest.mark.parametrize("noise", ["LeafSpec", "Tip:", "litlogger", "dirpath has changed", "Be aware that when using `ckpt_path`",
                                   "Warning", "warn"])
def test_test_prints_no_warnings(tested: tuple[Path, subprocess.CompletedProcess], noise: str) -> None:
    _, proc = tested
    assert noise not in proc.stderr + proc.stdout


def test_test_writes_per_type_report_with_one_row_per_entity_type_and_the_averages(
        trained_run: TrainedRun, tested: tuple[Path, subprocess.CompletedProcess]) -> None:
    run_dir, _ = tested
    report = json.loads((run_dir / "test_report.json").read_text(encoding="utf-8"))
    labels = torch.load(trained_run.best, map_location="cpu", weights_only=True)["ner_lit"]["labels"]
    types = sorted({label[2:] for label in labels if label != "O"})
    assert len(types) == 6  # the 21 dev sentences hold every type of the sample corpus
    assert list(report) == [*types, MICRO_AVG, MACRO_AVG, F1C_ROW]
    for name in [*types, MICRO_AVG, MACRO_AVG]:
        assert set(report[name]) == {"precision", "recall", "f1", "support"}, name
    assert sum(report[t]["support"] for t in types) == report[MACRO_AVG]["support"] > 0
    assert report[MACRO_AVG]["f1"] == pytest.approx(float(last_value(run_dir, "test_F1e")), abs=1e-9)
    assert report[F1C_ROW]["f1"] == pytest.approx(float(last_value(run_dir, "test_F1c")), abs=1e-9)

    md = (run_dir / "test_report.md").read_text(encoding="utf-8").split("\n\n", 1)[1].splitlines()
    assert md[0] == "| type | precision | recall | F1 | support |"
    assert [line.split("|")[1].strip() for line in md[2:]] == list(report)


# --------------------------------------------------------------------------- reproducibility
def test_saved_config_is_fully_resolved(trained_run: TrainedRun) -> None:
    saved = yaml.safe_load(trained_run.config.read_text(encoding="utf-8"))
    source = yaml.safe_load(trained_run.source_config.read_text(encoding="utf-8"))
    assert saved["seed_everything"] == 7
    for section in ("trainer", "model", "data"):
        for key, value in source[section].items():
            assert saved[section][key] == value, f"{section}.{key}"
    # Defaults the source config never mentioned are written out too.
    assert "dropout" in saved["model"] and saved["model"]["dropout"] is None and saved["data"]["label_rule"] == "first_char"
    assert saved["checkpoint"]["monitor"] == "val_F1c" and saved["checkpoint"]["mode"] == "max"


def test_fit_from_saved_config_reproduces_val_scores_in_a_new_version_dir(trained_run: TrainedRun, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    copy_run(trained_run.run_dir, root)
    before = tree_digest(root / "version_0")
    # A fresh cache: the scratch tokenizer and the encodings are rebuilt, not reused.
    cli(["fit", *trained_run.args("--trainer.default_root_dir", str(root))], tmp_path / "cache")
    assert versions(root) == [root / "version_0", root / "version_1"]
    assert tree_digest(root / "version_0") == before
    for key in ("val_F1c", "val_F1e", "val_loss"):
        assert last_value(root / "version_1", key) == last_value(trained_run.run_dir, key), key


def test_fit_from_the_same_config_twice_makes_two_version_dirs(trained_run: TrainedRun, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    args = trained_run.args("--trainer.default_root_dir", str(root), "--trainer.limit_train_batches", "2",
                            "--trainer.limit_val_batches", "1")
    cli(["fit", *args], trained_run.cache)
    first = tree_digest(root / "version_0")
    cli(["fit", *args], trained_run.cache)
    assert versions(root) == [root / "version_0", root / "version_1"]
    assert tree_digest(root / "version_0") == first
    assert (root / "version_1" / "config.yaml").is_file() and (root / "version_1" / "checkpoints" / "last.ckpt").is_file()


def test_print_config_prints_the_saved_config_and_fit_accepts_it(
        trained_run: TrainedRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli(["fit", "--config", str(trained_run.source_config), "--print_config"], trained_run.cache)
    assert exit_.value.code in (0, None)
    printed = capsys.readouterr().out
    assert yaml.safe_load(printed) == yaml.safe_load(trained_run.config.read_text(encoding="utf-8"))

    path = tmp_path / "printed.yaml"
    path.write_text(printed, encoding="utf-8")
    root = tmp_path / "runs"
    cli(["fit", "--config", str(path), "--trainer.default_root_dir", str(root), "--trainer.limit_train_batches", "2",
         "--trainer.limit_val_batches", "1"], trained_run.cache)
    assert (root / "version_0" / "checkpoints" / "last.ckpt").is_file()


# --------------------------------------------------------------------------- resuming
def test_fit_ckpt_path_last_resumes_epoch_and_global_step(trained_run: TrainedRun, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    copy_run(trained_run.run_dir, root)
    first = torch.load(root / "version_0" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert first["epoch"] == 0 and first["global_step"] > 0

    cli(["fit", *trained_run.args("--trainer.default_root_dir", str(root), "--ckpt_path", "last",
                                  "--trainer.max_epochs", "2")], trained_run.cache)
    resumed = torch.load(root / "version_1" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert resumed["epoch"] == 1
    assert resumed["global_step"] == 2 * first["global_step"]
    # Only the second epoch was trained in the resumed run.
    epochs = {row["epoch"] for row in read_metrics(root / "version_1") if row.get("train_loss")}
    assert epochs == {"1"}
