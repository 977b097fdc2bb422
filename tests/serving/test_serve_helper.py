"""A checkpoint's first ``serve`` start made by a helper process: the server then loads the kept graph
as a restart does (its memory as lean as a restart's); where the helper fails, the server starts in
full and reports what went wrong itself."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from ner_lit.inference.predictor import Predictor
from ner_lit.serving import launch, prepare
from ner_lit.serving.launch import ServeError, describe, serve
from ner_lit.serving.prepare import prepare_apart

from pipeline_fixtures import TrainedRun


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict:
    """serve() up to the point it would listen: what it serves, in ``["predictor"]``; its cache in tmp_path."""
    seen: dict = {}
    monkeypatch.setenv("NER_LIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(launch, "HELPER_MIN_BYTES", 0)  # the tiny checkpoint counts as large
    monkeypatch.setattr(launch, "check_port", lambda host, port: None)
    monkeypatch.setattr(launch, "run_server", lambda app, **kw: seen.setdefault("app", app))
    real_create = launch.create_app
    monkeypatch.setattr(launch, "create_app", lambda predictor, **kw: seen.setdefault("predictor", predictor)
                        and real_create(predictor, **kw))
    return seen


def test_a_first_start_is_made_by_a_helper_and_served_as_a_restart(trained_run: TrainedRun, served, monkeypatch,
                                                                  capsys):
    monkeypatch.setattr(launch, "load_predictor", lambda *a, **k: pytest.fail("the server built the network itself"))
    serve(ckpt_path=str(trained_run.best))
    predictor = served["predictor"]
    assert predictor.kept == "helper" and predictor.model is None
    out, err = capsys.readouterr()
    assert "start-up:    the graph a helper process made and checked" in out
    assert "a helper process builds, exports and checks the graph" in err
    text = ["김철수는 3월 5일 서울에서 삼성전자를 방문했다."]
    want = Predictor.from_checkpoint(trained_run.best).predict(text)[0].entities  # eager: scores within rounding
    got = predictor.predict(text)[0].entities
    assert [(e.start, e.end, e.label) for e in got] == [(e.start, e.end, e.label) for e in want]
    assert [e.score for e in got] == pytest.approx([e.score for e in want], abs=1e-4)


@pytest.mark.slow
def test_a_restart_after_a_helper_start_uses_no_helper(trained_run: TrainedRun, served, monkeypatch):
    serve(ckpt_path=str(trained_run.best))
    monkeypatch.setattr(launch, "worth_a_helper", lambda path: pytest.fail("a helper ran again"))
    served.clear()
    serve(ckpt_path=str(trained_run.best))
    assert served["predictor"].kept is True


@pytest.mark.slow
def test_when_the_helper_fails_the_server_starts_in_full_and_says_why(tmp_path, served, monkeypatch):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"this is not a checkpoint")
    helped: list[bool] = []
    monkeypatch.setattr(prepare, "prepare_apart", lambda *a: helped.append(prepare_apart(*a)) or helped[-1])
    with pytest.raises(ServeError, match=re.escape(f"cannot load checkpoint {junk}")):
        serve(ckpt_path=str(junk))
    assert helped == [False]


def test_a_small_checkpoint_starts_in_the_server_itself(trained_run: TrainedRun, served, monkeypatch):
    monkeypatch.setattr(launch, "HELPER_MIN_BYTES", trained_run.best.stat().st_size + 1)
    serve(ckpt_path=str(trained_run.best))
    assert served["predictor"].kept is False and served["predictor"].runtime.compiled
    assert "start-up:" not in describe(served["predictor"], "http://x", 1)
