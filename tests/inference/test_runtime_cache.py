"""ONNX Runtime's exported graph kept between starts: used again for the same weights, made again for
other weights or a damaged file, and never a reason for a start to fail."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ner_lit.inference import runtimes
from ner_lit.inference.choice import prepare_runtime
from ner_lit.inference.predictor import Predictor
from ner_lit.inference.runtimes import RuntimeCache

from serve_fixtures import SENTENCES


@pytest.fixture
def exports(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The kinds of module exported from now on (the real export still runs)."""
    made: list[str] = []
    real = runtimes.export_onnx

    def counting(module, example, path):
        made.append(type(module).__name__)
        real(module, example, path)

    monkeypatch.setattr(runtimes, "export_onnx", counting)
    return made


def served(model_dir: Path, cache: Path) -> Predictor:
    p = Predictor.from_pretrained(model_dir)
    p.runtime_cache = cache
    prepare_runtime(p, "onnxruntime", pack=True)
    assert p.runtime.compiled and p.packing.packed
    return p


def answers(p: Predictor) -> list:
    return [[(e.start, e.end, e.label) for e in r.entities] for r in p.predict(SENTENCES)]


def test_a_second_start_of_the_same_model_loads_the_kept_graph_instead_of_exporting(tiny_model_dir, tmp_path, exports):
    first = served(tiny_model_dir, tmp_path)
    assert exports == ["PackedLogits"]
    assert len(list(tmp_path.glob("*.onnx"))) == 1 and len(list(tmp_path.glob("*.json"))) == 1
    second = served(tiny_model_dir, tmp_path)
    assert exports == ["PackedLogits"]  # no second export
    assert answers(second) == answers(first)


def test_other_weights_are_exported_again_under_another_key(tiny_model_dir, tmp_path, exports):
    served(tiny_model_dir, tmp_path)
    p = Predictor.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        next(p.model.parameters()).add_(0.01)
    p.runtime_cache = tmp_path
    prepare_runtime(p, "onnxruntime", pack=True)
    assert exports == ["PackedLogits", "PackedLogits"]
    assert len(list(tmp_path.glob("*.onnx"))) == 2


def test_a_damaged_kept_graph_is_removed_and_exported_again(tiny_model_dir, tmp_path, exports):
    first = served(tiny_model_dir, tmp_path)
    (graph,) = tmp_path.glob("*.onnx")
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    again = served(tiny_model_dir, tmp_path)
    assert exports == ["PackedLogits", "PackedLogits"]
    assert answers(again) == answers(first)
    assert RuntimeCache(tmp_path).find(graph.stem) == graph  # the new one, whole


def test_only_the_most_recently_used_graphs_are_kept(tmp_path):
    cache = RuntimeCache(tmp_path, keep=2)
    source = tmp_path / "exported.bin"
    for key in ("a", "b", "c"):
        source.write_bytes(key.encode() * 100)
        cache.keep(key, source)
    assert sorted(p.stem for p in tmp_path.glob("*.onnx")) == ["b", "c"]


def test_a_cache_folder_that_can_not_be_written_only_costs_the_export(tiny_model_dir, tmp_path, exports):
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("x")
    p = served(tiny_model_dir, blocked / "runtimes")
    assert exports == ["PackedLogits"] and p.predict(["서울"])[0].text == "서울"
