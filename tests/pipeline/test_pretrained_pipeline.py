"""The whole pipeline on a real pretrained encoder: multilingual-e5-small (117.5 M parameters, a
250,002-piece XLM-R SentencePiece vocabulary), built by ../shared/tools/pretrained-me5.

One short ``fit`` of the recipe configs/me5.yaml (one epoch of 3 optimizer steps on 48 KLUE training sentences,
64-token windows, 16 dev sentences), then what a user does with it: ``test``, ``predict``, the
exported Hugging Face directory in ``transformers.pipeline``, and one ``serve`` request. What is
checked is that every stage runs on a large-vocabulary SentencePiece model and that what comes
out is well formed and consistent with the checkpoint's labels. After 3 steps the model tags
(nearly) every character ``O``, so the label checks that always bite are the token-level ones
(the pipeline with ``ignore_labels=[]``, serve's ``result``); entity spans are checked wherever
entities come out.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from ner_lit.corpus.klue import read_klue_tsv, write_klue_tsv
from ner_lit.corpus.records import derive_labels

from pipeline_fixtures import REPO, cli, last_value
from serve_fixtures import _wait_for_url, post_json

pytestmark = pytest.mark.slow

TRAIN_SENTENCES = 48  # 3 batches of 16, or 4 where sentences take two windows: limit_train_batches 3
DEV_SENTENCES = 16
MAX_LENGTH = 64
TEXTS = [
    "김철수는 3월 5일 서울에서 삼성전자를 방문했다.",
    "이순신은 1545년 서울에서 태어났다.",
    "내일 아침 9시 30분에 대한민국 국회가 열린다.",
    "아무 개체명도 없는 평범한 문장입니다.",
]


@dataclass(frozen=True)
class Me5Run:
    model_dir: Path
    data_dir: Path
    cache: Path
    run_dir: Path
    best: Path
    labels: list[str]

    @property
    def types(self) -> set[str]:
        return {label[2:] for label in self.labels if label != "O"}


@pytest.fixture(scope="module")
def me5_run(klue_dir: Path, pretrained_me5: Path, tmp_path_factory: pytest.TempPathFactory) -> Me5Run:
    """multilingual-e5-small fine-tuned by ``fit --config configs/me5.yaml`` for 3 steps."""
    base = tmp_path_factory.mktemp("me5-pipeline")
    model_dir = pretrained_me5  # built once per session (tests/conftest.py), read only
    data_dir = base / "data"
    data_dir.mkdir()
    write_klue_tsv(read_klue_tsv(klue_dir / "train.tsv")[:TRAIN_SENTENCES], data_dir / "train.tsv")
    write_klue_tsv(read_klue_tsv(klue_dir / "dev.tsv")[:DEV_SENTENCES], data_dir / "dev.tsv")
    (data_dir / "texts.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    cache, root = base / "cache", base / "runs"
    cli(["fit", "--config", str(REPO / "configs" / "me5.yaml"), "--model.pretrained", str(model_dir),
         "--data.tokenizer", str(model_dir), "--data.data_dir", str(data_dir), "--data.max_length", str(MAX_LENGTH),
         "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
         "--trainer.enable_model_summary", "false"], cache)
    run_dir = root / "version_0"
    best = [p for p in (run_dir / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt"]
    assert len(best) == 1, best
    labels = torch.load(best[0], map_location="cpu", weights_only=True, mmap=True)["ner_lit"]["labels"]
    return Me5Run(model_dir, data_dir, cache, run_dir, best[0], labels)


def assert_span_in_text(entity: dict, text: str) -> None:
    assert 0 <= entity["start"] < entity["end"] <= len(text), (entity, text)
    assert entity["text"] == text[entity["start"]:entity["end"]], (entity, text)


def test_fit_trains_the_pretrained_model_with_frozen_word_embeddings(me5_run: Me5Run) -> None:
    """Three steps of the recipe: word embeddings as built (frozen), the layers moved, scores logged."""
    from safetensors.torch import load_file

    state = torch.load(me5_run.best, map_location="cpu", weights_only=True, mmap=True)["state_dict"]
    built = load_file(me5_run.model_dir / "model.safetensors")
    word = next(k for k in built if k.endswith("word_embeddings.weight"))
    layer = next(k for k in built if k.endswith("encoder.layer.0.attention.self.query.weight"))
    assert torch.equal(state[f"model.{word}"], built[word])
    assert not torch.equal(state[f"model.{layer}"], built[layer])
    assert torch.load(me5_run.best, map_location="cpu", weights_only=True, mmap=True)["global_step"] == 3
    for key in ("val_F1c", "val_F1e"):
        value = float(last_value(me5_run.run_dir, key))
        assert 0.0 <= value <= 100.0, (key, value)
    assert me5_run.labels == derive_labels(read_klue_tsv(me5_run.data_dir / "train.tsv"))


def test_fit_exports_a_hugging_face_directory_that_transformers_and_the_predictor_load(me5_run: Me5Run) -> None:
    """The export loads with transformers' own classes; its outputs are a row of labels per character
    slot (``<label>@<slot>``), which ``Predictor.from_pretrained`` decodes into entities."""
    from transformers import AutoTokenizer, pipeline

    from ner_lit.inference.predictor import Predictor

    hf_model = me5_run.run_dir / "hf_model"
    assert (hf_model / "model.safetensors").is_file() and (hf_model / "tokenizer.json").is_file()
    config = json.loads((hf_model / "config.json").read_text(encoding="utf-8"))
    slots = json.loads((hf_model / "ner_lit.json").read_text(encoding="utf-8"))["char_slots"]
    outputs = [f"{label}@{k}" for k in range(slots) for label in me5_run.labels]
    assert [config["id2label"][str(i)] for i in range(len(outputs))] == outputs
    tagger = pipeline("token-classification", model=str(hf_model), device="cpu", ignore_labels=[])
    tokenizer = AutoTokenizer.from_pretrained(hf_model)
    assert len(tokenizer) >= 250_002 and tokenizer.is_fast
    for text, tokens in zip(TEXTS, tagger(TEXTS)):
        assert len(tokens) == len(tokenizer(text, add_special_tokens=False)["input_ids"])
        for token in tokens:
            assert token["entity"] in outputs, token
            assert 0 <= token["start"] < token["end"] <= len(text), (token, text)
            assert math.isfinite(token["score"]) and 0.0 < token["score"] <= 1.0
    for text, answer in zip(TEXTS, Predictor.from_pretrained(hf_model).predict(TEXTS)):
        assert answer.text == text and [t.label for t in answer.tokens if t.label not in me5_run.labels] == []
        for entity in answer.entities:
            assert text[entity.start:entity.end] == entity.text and entity.label in me5_run.types


def test_test_scores_the_best_checkpoint(me5_run: Me5Run) -> None:
    cli(["test", "--config", str(me5_run.run_dir / "config.yaml"), "--ckpt_path", str(me5_run.best),
         "--data.test_file", "dev.tsv"], me5_run.cache)
    reports = sorted(me5_run.run_dir.rglob("test_report.json"))  # beside the checkpoint it scored
    assert reports == [me5_run.run_dir / "test" / me5_run.best.stem / "dev" / "test_report.json"], reports
    report = json.loads(reports[0].read_text(encoding="utf-8"))
    assert set(report) >= {"micro avg", "macro avg", "F1c (macro over characters)"}
    for row in report.values():
        assert 0.0 <= row["f1"] <= 100.0, row
    assert set(report) - {"micro avg", "macro avg", "F1c (macro over characters)"} <= me5_run.types


def test_predict_writes_one_line_per_text_with_spans_inside_it(me5_run: Me5Run, tmp_path: Path) -> None:
    output = tmp_path / "predictions.jsonl"
    cli(["predict", "--config", str(me5_run.run_dir / "config.yaml"), "--ckpt_path", str(me5_run.best),
         "--data.predict_file", "texts.txt", "--prediction_writer.output", str(output)], me5_run.cache)
    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [row["text"] for row in rows] == TEXTS
    for row in rows:
        for entity in row["entities"]:
            assert_span_in_text(entity, row["text"])
            assert entity["label"] in me5_run.types, entity


def test_serve_answers_with_the_checkpoint_labels(me5_run: Me5Run, tmp_path: Path) -> None:
    """``serve`` on the checkpoint; eager, since exporting 117 M parameters to ONNX doubles start-up."""
    log = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PL_", "NER_LIT_"))}
    env.update({"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"})
    with open(log, "wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "ner_lit", "serve", "--ckpt_path", str(me5_run.best), "--port", "0",
                                 "--runtime", "eager"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=stderr)
    try:
        url, banner = _wait_for_url(proc, 120.0, log)
        status, answer = post_json(url + "/api", {"text": TEXTS[0]}, timeout=60)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert status == 200, answer
    assert answer["text"] == TEXTS[0] and answer["result"], answer
    for entity in answer["entities"]:
        assert_span_in_text(entity, TEXTS[0])
        assert entity["label"] in me5_run.types, entity
    assert {token["label"] for token in answer["result"]} <= set(me5_run.labels), answer["result"]

