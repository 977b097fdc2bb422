"""The error analysis after ``test``: each gold entity's error in one class, particles found, examples kept,
and the learning curve drawn from the run's own metrics (followed back through a resume)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ner_lit.training.analysis import KINDS, EntityErrors, Span, classify, ends_in_particle
from ner_lit.training.curve import learning_curve

from pipeline_fixtures import TrainedRun, in_this_process, short_fit_config

LABELS = ["O", "B-PS", "I-PS", "B-LC", "I-LC", "B-OG", "I-OG"]
PS, LC, OG = 1, 0, 2  # type indices: types are sorted (LC, OG, PS)


def ids(tags: str) -> torch.Tensor:
    """One tag a character: O, P/p (B-/I-PS), L/l (LC), G/g (OG)."""
    code = {"O": 0, "P": 1, "p": 2, "L": 3, "l": 4, "G": 5, "g": 6}
    return torch.tensor([code[c] for c in tags])


def analysed(text: str, gold: str, pred: str) -> dict:
    metric = EntityErrors(LABELS)
    scored = torch.tensor([not c.isspace() for c in text])
    metric.update([ids(pred)], [ids(gold)], [text], [scored], ["s1"])
    return metric.compute()


@pytest.mark.parametrize("extra,expected", [("는", True), ("에서", True), ("에서는", True), ("이라는", True),
                                            ("씨", False), ("", False), ("사장", False)])
def test_particles_are_recognised_after_the_entity(extra: str, expected: bool) -> None:
    assert ends_in_particle(extra) is expected


@pytest.mark.parametrize("text,gold,pred", [
    ("안 의사가 왔다", "POOOOO", "PpOOOO"),  # `안 의` of `안 의사`: the extra starts a new word
    ("김철수는 왔다", "PppOOO", "PppppO"),  # `김철수는 왔`: past the space
    ("서울이후", "LlOO", "LllO"),  # `서울이` of `서울이후`: the word goes on
])
def test_a_too_long_entity_is_no_particle_error_unless_the_extra_ends_its_own_word(text: str, gold: str, pred: str) -> None:
    result = analysed(text, gold, pred)
    counts = result["per_type"]["LC" if gold.startswith("L") else "PS"]
    assert counts["too_long"] == 1 and counts["too_long_particle"] == 0


def test_an_entity_that_swallowed_its_particle_is_too_long_and_ends_in_a_particle() -> None:
    result = analysed("김철수는 왔다", "PppOOO", "PpppOO")  # scored: 김철수는왔다
    assert result["per_type"]["PS"]["too_long"] == 1
    assert result["per_type"]["PS"]["too_long_particle"] == 1
    assert result["examples"]["too_long_particle"][0]["gold"] == "김철수 (PS)"
    assert result["examples"]["too_long_particle"][0]["predicted"] == "김철수는 (PS)"


@pytest.mark.parametrize("gold,pred,kind", [
    ("PppOOO", "LllOOO", "wrong_type"),
    ("PppOOO", "PpOOOO", "too_short"),
    ("OPppOO", "PpOOOO", "crossing"),
    ("PppOOO", "OLlOOO", "type_and_boundary"),
    ("PppOOO", "OOOOOO", "missed"),
])
def test_each_error_falls_in_one_class(gold: str, pred: str, kind: str) -> None:
    result = analysed("김철수는왔다", gold, pred)
    counts = result["per_type"]["PS"]
    assert counts[kind] == 1
    assert sum(counts[k] for k in KINDS if k != "too_long_particle") == 1


def test_a_prediction_over_no_gold_entity_is_spurious_under_its_own_type() -> None:
    result = analysed("서울에서 만나", "OOOOOO", "LlOOOO")
    assert result["per_type"]["LC"]["spurious"] == 1 and result["per_type"]["LC"]["support"] == 0
    assert result["examples"]["spurious"][0]["gold"] is None


def test_an_exact_match_is_no_error() -> None:
    result = analysed("김철수는왔다", "PppOOO", "PppOOO")
    assert all(v == 0 for v in result["totals"].values()) and result["support"] == 1


def test_confusions_are_counted_by_gold_and_predicted_type_most_frequent_first() -> None:
    metric = EntityErrors(LABELS)
    for text, gold, pred in [("삼성전자", "Gggg", "Llll"), ("삼성전자", "Gggg", "Llll"), ("서울시", "Lll", "Ggg")]:
        metric.update([ids(pred)], [ids(gold)], [text], [torch.ones(len(text), dtype=torch.bool)], [text])
    confusions = metric.compute()["confusions"]
    assert confusions == [{"gold": "OG", "predicted": "LC", "count": 2}, {"gold": "LC", "predicted": "OG", "count": 1}]


def test_classify_attributes_an_overlapping_prediction_to_the_gold_entity_only() -> None:
    errors, spurious = classify([Span(0, 3, PS)], [Span(0, 4, PS), Span(2, 5, LC)])
    assert [kind for kind, _, _ in errors] == ["too_long"] and spurious == []


# --------------------------------------------------------------------------- after `test`
@pytest.fixture
def two_epoch_run(trained_run: TrainedRun, tmp_path: Path) -> Path:
    path = short_fit_config(trained_run.data_dir, tmp_path, epochs=2, batches=4)
    out = in_this_process(["fit", "--config", str(path)], trained_run.cache)
    assert out.returncode == 0, out.stderr[-3000:]
    return path


def test_test_writes_the_error_analysis_and_the_learning_curve_beside_its_report(
        trained_run: TrainedRun, two_epoch_run: Path, tmp_path: Path) -> None:
    out = in_this_process(["test", "--config", str(two_epoch_run), "--ckpt_path", "last"], trained_run.cache)
    assert out.returncode == 0, out.stderr[-3000:]
    folder = next((tmp_path / "runs" / "version_0" / "test").glob("*/dev"))
    record = json.loads((folder / "error_analysis.json").read_text(encoding="utf-8"))
    report = json.loads((folder / "test_report.json").read_text(encoding="utf-8"))
    for name, row in record["per_type"].items():
        assert row["support"] == report[name]["support"]  # the same gold entities as the F1 table
    assert [p["epoch"] for p in record["learning_curve"]] == [0, 1]
    minutes = [p["minutes"] for p in record["learning_curve"]]
    assert 0 < minutes[0] < minutes[1]
    assert (folder / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (folder / "error_analysis.md").read_text(encoding="utf-8")
    assert "## Entity errors by type" in md and "![learning curve](learning_curve.png)" in md


def test_the_learning_curve_follows_a_resumed_run_back_to_the_run_it_resumed(
        trained_run: TrainedRun, two_epoch_run: Path, tmp_path: Path) -> None:
    out = in_this_process(["fit", "--config", str(two_epoch_run), "--trainer.max_epochs", "3", "--ckpt_path", "last"],
                          trained_run.cache)
    assert out.returncode == 0, out.stderr[-3000:]
    points = learning_curve(tmp_path / "runs" / "version_1" / "checkpoints" / "last.ckpt")
    assert [p["epoch"] for p in points] == [0, 1, 2]
    assert points[1]["minutes"] < points[2]["minutes"]  # the clock went on from the checkpoint
