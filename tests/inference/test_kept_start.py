"""A restart of ``serve`` on the same checkpoint: the packed graph an earlier start made and checked is
loaded by the checkpoint's identity alone, with no network built; anything unlike that earlier start
(no record, other weights, another recipe, a damaged graph) starts as a first start does."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ner_lit.alignment import tokenizers
from ner_lit.checkpoint.format import weights_digest
from ner_lit.checkpoint.spec import SECTION, TaggerSpec
from ner_lit.inference import loading, quantization
from ner_lit.inference.choice import prepare_runtime
from ner_lit.inference.predictor import Predictor
from ner_lit.serving.launch import describe, kept_predictor

from pipeline_fixtures import TrainedRun

TEXTS = ["김철수는 3월 5일 서울에서 삼성전자를 방문했다.", "이순신은 1545년 서울에서 태어났다.", "부산"]


def first_start(checkpoint: Path, cache: Path, quantize: str = "none") -> Predictor:
    p = Predictor.from_checkpoint(checkpoint)
    p.runtime_cache = cache
    prepare_runtime(p, "onnxruntime", pack=True, quantize=quantize)
    return p


def answers(p: Predictor) -> list:
    return [[(e.start, e.end, e.label, e.score) for e in r.entities] for r in p.predict(TEXTS)]


def test_a_second_start_serves_the_kept_graph_without_building_a_network(trained_run: TrainedRun, tmp_path, monkeypatch):
    first = first_start(trained_run.best, tmp_path)
    want = answers(first)
    monkeypatch.setattr(loading, "_tagger", lambda *a, **k: pytest.fail("a network was built"))
    again = Predictor.from_kept(trained_run.best, tmp_path)
    assert again is not None and again.kept and again.model is None
    assert again.runtime.name == "ONNX Runtime" and again.packing.packed
    assert type(again.tokenizer).__name__ == "PieceNames"  # the transformers tokenizer let go, as after a first start
    assert answers(again) == want
    assert "start-up:    the graph an earlier start made" in describe(again, "http://x", 1)


@pytest.fixture
def kept_text_tokenizers(tmp_path, monkeypatch) -> Path:
    """Every tokenizer's text-tokenizer copy kept on disk, as a large (XLM-R) vocabulary's is."""
    monkeypatch.setattr(tokenizers, "KEEP_MIN_CHARS", 0)
    monkeypatch.setenv("NER_LIT_CACHE", str(tmp_path / "ner_lit-cache"))
    return tmp_path / "ner_lit-cache" / "text-tokenizers"


def tokenizer_loads(monkeypatch) -> list[str]:
    """Counts the transformers tokenizers a spec loads from here on."""
    loads: list[str] = []
    load = TaggerSpec.tokenizer
    monkeypatch.setattr(TaggerSpec, "tokenizer", lambda self, *a, **k: loads.append("load") or load(self, *a, **k))
    return loads


def test_a_restart_loads_no_tokenizer_where_the_text_tokenizer_was_kept(trained_run: TrainedRun, tmp_path,
                                                                        kept_text_tokenizers, monkeypatch):
    want = answers(first_start(trained_run.best, tmp_path))
    loads = tokenizer_loads(monkeypatch)
    again = Predictor.from_kept(trained_run.best, tmp_path)
    assert again is not None and loads == []
    assert answers(again) == want
    assert again.aligner.prefix and again.aligner.suffix  # the special layout, as recorded
    assert [r.tokens for r in again.predict(TEXTS)] == [r.tokens for r in first_start(trained_run.best, tmp_path).predict(TEXTS)]


@pytest.mark.slow
def test_a_restart_whose_kept_text_tokenizer_is_gone_or_damaged_loads_the_tokenizer(
        trained_run: TrainedRun, tmp_path, kept_text_tokenizers, monkeypatch):
    want = answers(first_start(trained_run.best, tmp_path))
    loads = tokenizer_loads(monkeypatch)
    (copy,) = kept_text_tokenizers.glob("*.record.json")
    copy.with_name(copy.name.replace(".record", "")).write_text("{}", encoding="utf-8")
    again = Predictor.from_kept(trained_run.best, tmp_path)
    assert again is not None and loads == ["load"]
    assert answers(again) == want


@pytest.mark.slow
def test_a_restart_with_other_tokenizer_files_loads_the_tokenizer(trained_run: TrainedRun, tmp_path,
                                                                  kept_text_tokenizers, monkeypatch):
    want = answers(first_start(trained_run.best, tmp_path))
    loads = tokenizer_loads(monkeypatch)
    monkeypatch.setattr(TaggerSpec, "tokenizer_digest", lambda self: "0" * 64)  # as if the files had changed
    again = Predictor.from_kept(trained_run.best, tmp_path)
    assert again is not None and loads == ["load"]
    assert answers(again) == want


@pytest.mark.slow
def test_serve_takes_the_kept_path_only_for_the_settings_it_was_kept_for(trained_run: TrainedRun, tmp_path):
    first_start(trained_run.best, tmp_path)
    best = str(trained_run.best)
    assert kept_predictor(best, tmp_path, "onnxruntime", True, "none", "cpu") is not None
    assert kept_predictor(best, tmp_path, "torchscript", True, "none", "cpu") is None
    assert kept_predictor(best, tmp_path, "onnxruntime", False, "none", "cpu") is None
    assert kept_predictor(best, tmp_path, "onnxruntime", True, "none", "cuda") is None
    assert kept_predictor(best, None, "onnxruntime", True, "none", "cpu") is None  # --runtime_cache false
    assert kept_predictor(None, tmp_path, "onnxruntime", True, "none", "cpu") is None  # --model_dir
    assert kept_predictor(str(tmp_path / "missing.ckpt"), tmp_path, "onnxruntime", True, "none", "cpu") is None


def test_nothing_is_kept_without_a_first_start(trained_run: TrainedRun, tmp_path):
    assert Predictor.from_kept(trained_run.best, tmp_path) is None


@pytest.mark.slow
def test_a_damaged_kept_graph_means_a_full_start(trained_run: TrainedRun, tmp_path):
    first_start(trained_run.best, tmp_path)
    (graph,) = tmp_path.glob("*.onnx")
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    assert Predictor.from_kept(trained_run.best, tmp_path) is None
    assert not graph.exists()  # removed, to be made again


@pytest.mark.slow
def test_other_weights_do_not_find_the_kept_graph(trained_run: TrainedRun, tmp_path):
    first_start(trained_run.best, tmp_path)
    ckpt = torch.load(trained_run.best, map_location="cpu", weights_only=True)
    bias = next(k for k in ckpt["state_dict"] if k.endswith("classifier.bias"))
    ckpt["state_dict"][bias] = ckpt["state_dict"][bias] + 1.0
    ckpt[SECTION]["weights_sha256"] = weights_digest(ckpt["state_dict"])
    other = tmp_path / "other.ckpt"
    torch.save(ckpt, other)
    assert Predictor.from_kept(other, tmp_path) is None


def test_a_float_start_is_not_kept_for_int8(trained_run: TrainedRun, tmp_path):
    first_start(trained_run.best, tmp_path)
    assert Predictor.from_kept(trained_run.best, tmp_path, quantize="int8") is None


def test_an_int8_restart_keeps_the_answer_check_it_passed(trained_run: TrainedRun, tmp_path, monkeypatch):
    monkeypatch.setattr(quantization, "TOLERANCE", 1.0)  # the tiny run's unsure answers: see test_pipeline_int8.py
    first = first_start(trained_run.best, tmp_path, "int8")
    assert first.runtime.name == "ONNX Runtime int8"
    again = Predictor.from_kept(trained_run.best, tmp_path, quantize="int8")
    assert again is not None and again.runtime.name == "ONNX Runtime int8"
    assert again.quantization == first.quantization
    assert answers(again) == answers(first)


@pytest.mark.slow
def test_an_int8_verdict_under_another_tolerance_is_checked_again(trained_run: TrainedRun, tmp_path, monkeypatch):
    monkeypatch.setattr(quantization, "TOLERANCE", 1.0)
    first_start(trained_run.best, tmp_path, "int8")
    monkeypatch.setattr(quantization, "TOLERANCE", 0.5)
    assert Predictor.from_kept(trained_run.best, tmp_path, quantize="int8") is None


def test_a_damaged_checkpoint_is_not_served_from_the_graph_kept_from_its_intact_self(trained_run: TrainedRun, tmp_path):
    from ner_lit.checkpoint.format import CheckpointError

    first_start(trained_run.best, tmp_path)
    ckpt = torch.load(trained_run.best, map_location="cpu", weights_only=True)
    bias = next(k for k in ckpt["state_dict"] if k.endswith("classifier.bias"))
    ckpt["state_dict"][bias] = ckpt["state_dict"][bias] + 1.0  # the recorded digest left as it was
    damaged = tmp_path / "damaged.ckpt"
    torch.save(ckpt, damaged)
    with pytest.raises(CheckpointError, match="do not match the digest"):
        Predictor.from_kept(damaged, tmp_path)
    assert kept_predictor(str(damaged), tmp_path, "onnxruntime", True, "none", "cpu") is None  # serve: the full start refuses it
