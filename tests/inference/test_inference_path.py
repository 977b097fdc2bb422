"""One inference path: ``predict``'s JSONL, ``/api`` served from the checkpoint and
``/api`` served from the exported ``hf_model/`` directory give the same entities for the same texts.

The session's tiny run (tests/pipeline_fixtures.py) windows text in 32 tokens with a 20-token
stride; the texts are its dev sentences (several span more than one window) and one text of
many sentences, so window merging is compared too. The servers run as ``serve`` runs them:
ONNX Runtime, packed rows, the eager model released.
"""
from __future__ import annotations

import json

import pytest

from ner_lit.corpus.klue import read_klue_tsv

from pipeline_fixtures import TrainedRun, cli

SCORE_ROUNDING = 1e-5  # scores carry 6 digits; the compiled runtimes differ from eager far below that


@pytest.fixture(scope="module")
def texts(trained_run: TrainedRun) -> list[str]:
    dev = [s.text for s in read_klue_tsv(trained_run.data_dir / "dev.tsv")]
    return dev + [" ".join(dev[:8])]


@pytest.fixture(scope="module")
def predicted(trained_run: TrainedRun, texts: list[str], tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """``predict --data.predict_file texts.txt``'s JSONL rows."""
    base = tmp_path_factory.mktemp("inference-path")
    source, output = base / "texts.txt", base / "predictions.jsonl"
    source.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    cli(["predict", *trained_run.args("--trainer.default_root_dir", str(base / "runs"), "--ckpt_path", str(trained_run.best),
                                      "--data.predict_file", str(source), "--prediction_writer.output", str(output))],
        trained_run.cache)
    return [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]


def served(ckpt_path: str | None, model_dir: str | None, texts: list[str]) -> tuple[list[dict], dict, object]:
    """Each text's ``/api`` answer, ``/health``, and the predictor, from a server set up as ``serve`` does."""
    from ner_lit.serving.app import create_app
    from ner_lit.serving.launch import load_predictor, prepare_runtime

    predictor = load_predictor(ckpt_path, model_dir)
    prepare_runtime(predictor, "onnxruntime", pack=True)
    app = create_app(predictor)
    try:
        client = app.test_client()
        answers = [client.post("/api", json={"text": t}).get_json() for t in texts]
        health = client.get("/health").get_json()
    finally:
        app.extensions["ner_lit"].batcher.close(timeout=10)
    return answers, health, predictor


def assert_same_entities(got: list[dict], want: list[dict], where: str) -> None:
    for g, w in zip(got, want, strict=True):
        assert g["text"] == w["text"]
        key = ("text", "label", "start", "end")
        assert [[e[k] for k in key] for e in g["entities"]] == [[e[k] for k in key] for e in w["entities"]], \
            f"{where}: {w['text'][:40]!r}"
        assert [e["score"] for e in g["entities"]] == pytest.approx([e["score"] for e in w["entities"]],
                                                                     abs=SCORE_ROUNDING), where
        assert [list(e) for e in g["entities"]] == [["text", "label", "start", "end", "score"]] * len(g["entities"])


def test_predict_and_api_from_checkpoint_and_exported_dir_give_the_same_entities(
        trained_run: TrainedRun, texts: list[str], predicted: list[dict], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NER_LIT_CACHE", str(trained_run.cache))
    from_ckpt, ckpt_health, predictor = served(str(trained_run.best), None, texts)
    from_dir, dir_health, dir_predictor = served(None, str(trained_run.run_dir / "hf_model"), texts)

    assert sum(len(row["entities"]) for row in predicted) >= 5  # something to compare
    windows = [len(item.windows) for item in predictor.prepare(texts)]
    assert max(windows) >= 4 and sum(n > 1 for n in windows) >= 3, windows  # long texts span several windows
    assert str(predictor.runtime) == str(dir_predictor.runtime) == "ONNX Runtime"
    assert [row["text"] for row in predicted] == texts
    assert_same_entities(from_ckpt, predicted, "/api from the checkpoint vs predict")
    assert_same_entities(from_dir, predicted, "/api from hf_model/ vs predict")
    # The directory serves with the checkpoint's windows and reports its validation scores.
    assert (dir_predictor.aligner.max_length, dir_predictor.aligner.stride) == \
        (predictor.aligner.max_length, predictor.aligner.stride)
    assert dir_health["scores"] == ckpt_health["scores"] and "val_F1c" in dir_health["scores"]
