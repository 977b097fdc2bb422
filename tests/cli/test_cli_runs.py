"""Runs stay tidy: evaluations write beside their checkpoint, failed commands leave nothing behind."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from pipeline_fixtures import TrainedRun, cli, copy_run, last_value, versions


def tree(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(directory.rglob("*"))}


@pytest.fixture()
def run_copy(trained_run: TrainedRun, tmp_path: Path) -> tuple[Path, Path]:
    """(root, a copy of the tiny run as root/version_0)."""
    root = tmp_path / "runs"
    return root, copy_run(trained_run.run_dir, root)


def test_predict_reads_a_file_of_the_current_directory_and_writes_beside_the_checkpoint(
        trained_run: TrainedRun, run_copy: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, run = run_copy
    work = tmp_path / "work"
    work.mkdir()
    (work / "my.txt").write_text("서울에서 김철수를 만났다.\n부산\n", encoding="utf-8")
    monkeypatch.chdir(work)
    best = run / "checkpoints" / trained_run.best.name
    cli(["predict", *trained_run.args("--trainer.default_root_dir", str(root), "--ckpt_path", str(best),
                                      "--data.predict_file", "my.txt")], trained_run.cache)
    written = run / "predict" / best.stem / "my" / "predictions.jsonl"
    rows = [json.loads(line) for line in written.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in rows] == ["서울에서 김철수를 만났다.", "부산"]
    assert versions(root) == [run]
    assert sorted(p.name for p in work.iterdir()) == ["my.txt"]


def test_validate_writes_its_metrics_beside_the_checkpoint_and_a_rerun_reuses_the_folder(
        trained_run: TrainedRun, run_copy: tuple[Path, Path]) -> None:
    root, run = run_copy
    args = ["validate", *trained_run.args("--trainer.default_root_dir", str(root), "--ckpt_path", "last")]
    cli(args, trained_run.cache)
    folder = run / "validate" / "last" / "dev"
    assert last_value(folder, "val_F1c") == last_value(trained_run.run_dir, "val_F1c")
    cli(args, trained_run.cache)
    assert [p.relative_to(run) for p in (run / "validate").rglob("metrics.csv")] == [Path("validate/last/dev/metrics.csv")]
    assert versions(root) == [run]


@pytest.mark.parametrize("subcommand", ["test", "validate", "predict"])
def test_a_failed_evaluation_leaves_the_run_as_it_was(trained_run: TrainedRun, run_copy: tuple[Path, Path],
                                                      subcommand: str) -> None:
    root, run = run_copy
    before = tree(run)
    option = {"test": "test_file", "validate": "val_file", "predict": "predict_file"}[subcommand]
    with pytest.raises(SystemExit) as exit_:
        cli([subcommand, *trained_run.args("--trainer.default_root_dir", str(root), "--ckpt_path", "best",
                                           f"--data.{option}", "missing.tsv")], trained_run.cache)
    assert exit_.value.code == 2
    assert tree(run) == before
    assert versions(root) == [run]


def test_a_failed_fit_makes_no_run(trained_run: TrainedRun, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    with pytest.raises(SystemExit):
        cli(["fit", *trained_run.args("--trainer.default_root_dir", str(root), "--data.train_file", "missing.tsv")],
            trained_run.cache)
    assert not root.exists() or list(root.iterdir()) == []


def test_the_evaluation_folder_is_removed_only_when_it_holds_no_checkpoint(tmp_path: Path) -> None:
    from ner_lit.checkpoint.runs import remove_if_unneeded

    empty, kept = tmp_path / "a", tmp_path / "b"
    (empty / "x").mkdir(parents=True)
    (empty / "x" / "events").write_text("", encoding="utf-8")
    (kept / "checkpoints").mkdir(parents=True)
    (kept / "checkpoints" / "last.ckpt").write_bytes(b"")
    remove_if_unneeded(empty)
    remove_if_unneeded(kept)
    assert not empty.exists() and (kept / "checkpoints" / "last.ckpt").is_file()

