"""``--quantize int8`` through the command line: ``test`` scores the int8 network with the official metrics,
``predict`` writes its answers, a refused int8 leaves the float network running, and ``fit`` refuses it.

On the session's tiny run (tests/pipeline_fixtures.py): after one epoch on the sample its answers
are unsure and int8 moves a few of them, so the tests of the int8 path allow every difference
(``TOLERANCE`` 1.0), and the refusal is caused by a quantizer whose graph answers wrongly."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ner_lit.cli import lightning as lightning_cli
from ner_lit.inference import quantization, runtimes
from ner_lit.inference.predictor import Predictor
from ner_lit.inference.quantization import compare_answers
from ner_lit.training.int8 import Int8Evaluation

from pipeline_fixtures import TrainedRun, copy_run, in_this_process, last_value
from serve_fixtures import scrambled

pytestmark = pytest.mark.slow  # int8 graphs made through the whole command line; tests/inference covers the parts


@pytest.fixture(scope="module")
def int8_tested(trained_run: TrainedRun, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("int8-tested")
    copy_run(trained_run.run_dir, root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(quantization, "TOLERANCE", 1.0)
        done = in_this_process(["test", *trained_run.args("--trainer.default_root_dir", str(root), "--ckpt_path", "best",
                                                          "--quantize", "int8")], trained_run.cache)
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "version_0" / "test" / trained_run.best.stem / "dev", done


def test_test_with_int8_says_what_ran_and_scores_it_with_the_official_metrics(trained_run, int8_tested):
    run_dir, done = int8_tested
    assert "ner_lit: the network runs int8 (" in done.stderr
    f1c = float(last_value(run_dir, "test_F1c"))
    assert 0 < f1c <= 100
    report = json.loads((run_dir / "test_report.json").read_text(encoding="utf-8"))
    assert report  # the same report as a float test writes


def test_the_int8_test_config_records_the_quantization(int8_tested):
    run_dir, _ = int8_tested
    assert "quantize: int8" in (run_dir / "config.yaml").read_text(encoding="utf-8")


def test_int8_scores_stay_near_the_float_checkpoints(trained_run, int8_tested):
    run_dir, _ = int8_tested
    # The same dev file the float checkpoint was validated on; int8 moves a few characters at most here.
    assert abs(float(last_value(run_dir, "test_F1c")) - float(last_value(trained_run.run_dir, "val_F1c"))) < 5.0


def test_a_refused_int8_test_runs_the_float_network(trained_run: TrainedRun, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(runtimes, "quantize_graph", scrambled(runtimes.quantize_graph))
    monkeypatch.setattr(lightning_cli, "default_cache_dir", lambda: tmp_path / "cache")  # not the good graph kept before
    copy_run(trained_run.run_dir, tmp_path)
    done = in_this_process(["test", *trained_run.args("--trainer.default_root_dir", str(tmp_path), "--ckpt_path", "best",
                                                      "--quantize", "int8")], trained_run.cache)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ner_lit: the network runs float: int8 refused: " in done.stderr
    run_dir = tmp_path / "version_0" / "test" / trained_run.best.stem / "dev"
    assert last_value(run_dir, "test_F1c") == last_value(trained_run.run_dir, "val_F1c")  # every digit: the float network


def test_predict_with_int8_writes_the_int8_networks_answers(trained_run: TrainedRun, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(quantization, "TOLERANCE", 1.0)
    source = tmp_path / "in.txt"
    sentences = ["김철수는 3월 5일 서울에서 삼성전자를 방문했다.", "이순신은 1545년 서울에서 태어났다."]
    source.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    done = in_this_process(["predict", *trained_run.args("--trainer.default_root_dir", str(tmp_path / "runs"),
                                                         "--ckpt_path", str(trained_run.best), "--data.predict_file",
                                                         str(source), "--prediction_writer.output", str(out),
                                                         "--quantize", "int8")], trained_run.cache)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "the network runs int8" in done.stderr
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in rows] == sentences
    served = Predictor.from_checkpoint(trained_run.best)
    served.runtime_cache = tmp_path / "rt"
    assert served.quantize(pack=False)
    want = served.predict(sentences)
    got = [[(e["start"], e["end"], e["label"]) for e in r["entities"]] for r in rows]
    assert got == [[(e.start, e.end, e.label) for e in p.entities] for p in want]


def test_fit_refuses_int8_in_one_line(trained_run: TrainedRun, tmp_path: Path):
    done = in_this_process(["fit", "--config", str(trained_run.config), "--trainer.default_root_dir", str(tmp_path),
                            "--quantize", "int8"], trained_run.cache)
    assert done.returncode == 2
    assert "--quantize int8 is for test, validate and predict; fit trains in float" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unknown_quantize_value_is_refused_by_the_callback():
    with pytest.raises(ValueError, match="none, int8"):
        Int8Evaluation("int4")


def test_agreement_of_identical_answers_is_zero_differences(trained_run: TrainedRun):
    p = Predictor.from_checkpoint(trained_run.best)
    answers = p.predict(["김철수는 서울에 산다."])
    assert compare_answers(answers, answers).differ == 0
