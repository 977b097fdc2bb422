"""int8 serving: quantized weights under ONNX Runtime, used only after its answers pass the check against
the float model's, refused (the float model serving, the banner saying why) when they do not, and kept
between starts like the float graph."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from ner_lit.alignment.answers import PredictedEntity, Prediction
from ner_lit.inference import quantization, runtimes
from ner_lit.inference.choice import RuntimeRefused, prepare_runtime
from ner_lit.inference.predictor import Predictor
from ner_lit.inference.quantization import Agreement, QuantizationRefused, compare_answers
from ner_lit.inference.runtimes import checked_compile, int8_compiler
from ner_lit.serving.app import ServeError
from ner_lit.serving.launch import describe, serve

from serve_fixtures import SENTENCES, scrambled


def answers(p: Predictor, texts=SENTENCES) -> list:
    return [[(e.start, e.end, e.label) for e in r.entities] for r in p.predict(texts)]


def op_types(graph: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(graph)).graph.node}


@pytest.fixture
def quantizations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The graphs quantized from now on (the real quantization still runs)."""
    made: list[str] = []
    real = runtimes.quantize_graph

    def counting(src, out, recipe):
        made.append(Path(out).name)
        real(src, out, recipe)

    monkeypatch.setattr(runtimes, "quantize_graph", counting)
    return made


def test_int8_serves_with_integer_matrix_products_once_its_answers_agree(tiny_model_dir, tmp_path):
    p = Predictor.from_pretrained(tiny_model_dir)
    p.runtime_cache = tmp_path
    runtime, packing = prepare_runtime(p, "onnxruntime", pack=True, quantize="int8")
    assert runtime.name == "ONNX Runtime int8" and not runtime.refused
    assert packing.packed
    assert p.quantization is not None and p.quantization.ok and p.quantization.entities > 0
    assert p.model is None  # the eager float network released, as with the float runtime
    (graph,) = tmp_path.glob("*.onnx")
    assert "MatMulInteger" in op_types(graph)
    assert "int8 check:" in describe(p, "http://x", 1)


def test_int8_whose_answers_differ_is_refused_and_the_float_model_serves(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(runtimes, "quantize_graph", scrambled(runtimes.quantize_graph))
    want = answers(Predictor.from_pretrained(tiny_model_dir))
    p = Predictor.from_pretrained(tiny_model_dir)
    runtime, packing = prepare_runtime(p, "onnxruntime", pack=True, quantize="int8")
    assert runtime.name == "ONNX Runtime" and packing.packed
    assert len(runtime.refused) == 1 and runtime.refused[0].startswith("int8 refused: ")
    assert "check entities differ from the float model's" in str(runtime)
    assert p.quantization is None
    assert answers(p) == want


def test_a_refused_int8_leaves_the_predictor_as_it_was(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(runtimes, "quantize_graph", scrambled(runtimes.quantize_graph))
    p = Predictor.from_pretrained(tiny_model_dir)
    want = answers(p)
    assert not p.quantize(pack=True)
    assert p.model is not None and p.runner.packed is None and p.runner.compiled is None
    assert not p.runner.packed_only
    assert answers(p) == want


def test_a_second_int8_start_loads_the_kept_int8_graph_beside_the_float_one(tiny_model_dir, tmp_path, quantizations):
    first = Predictor.from_pretrained(tiny_model_dir)
    first.runtime_cache = tmp_path
    prepare_runtime(first, "onnxruntime", pack=True, quantize="int8")
    second = Predictor.from_pretrained(tiny_model_dir)
    second.runtime_cache = tmp_path
    prepare_runtime(second, "onnxruntime", pack=True, quantize="int8")
    assert quantizations == ["model.int8.onnx"]  # quantized once
    assert second.runtime.name == "ONNX Runtime int8" and answers(second) == answers(first)
    floats = Predictor.from_pretrained(tiny_model_dir)
    floats.runtime_cache = tmp_path
    prepare_runtime(floats, "onnxruntime", pack=True)
    assert len(list(tmp_path.glob("*.onnx"))) == 2  # the float graph is another key
    assert quantizations == ["model.int8.onnx"]


def test_an_int8_runtime_with_nan_logits_is_refused(tiny_predictor):
    def nan_compiler(module, example):
        return lambda *tensors: torch.full((*tensors[0].shape, 13), float("nan"))

    nan_compiler.same_logits = float("inf")
    with pytest.raises(RuntimeRefused, match="differs by nan"):
        checked_compile(tiny_predictor.model, nan_compiler, "int8 export", vocab=100, pad_id=0, limit=16,
                        device=torch.device("cpu"))


def test_the_int8_compiler_checks_only_that_logits_are_finite():
    assert runtimes.logit_tolerance(int8_compiler()) == float("inf")
    assert runtimes.logit_tolerance(runtimes.compiler("onnxruntime")) == runtimes.SAME_LOGITS


def prediction(*entities: tuple[int, int, str]) -> Prediction:
    return Prediction("x" * 20, [PredictedEntity("x", label, start, end) for start, end, label in entities], [])


def test_a_changed_span_counts_as_one_missed_and_one_added_entity():
    want = [prediction((0, 3, "PS"), (5, 7, "LC")), prediction((1, 2, "DT"))]
    got = [prediction((0, 4, "PS"), (5, 7, "LC")), prediction((1, 2, "TI"))]
    assert compare_answers(want, got, tolerance=0.5) == Agreement(entities=3, differ=4, allowed=1)
    assert not compare_answers(want, got, tolerance=0.5).ok
    assert compare_answers(want, want).differ == 0


def test_at_least_one_differing_entity_is_always_allowed():
    assert compare_answers([prediction((0, 1, "PS"))], [prediction()], tolerance=0.0).ok


def test_the_check_sentences_are_the_packaged_sample_dev_split():
    texts = quantization.check_texts()
    assert len(texts) == 100 and all(texts)


def test_serve_refuses_int8_with_another_runtime_before_loading_the_model(tmp_path):
    with pytest.raises(ServeError, match="--quantize int8 runs under ONNX Runtime"):
        serve(ckpt_path=str(tmp_path / "missing.ckpt"), runtime="torchscript", quantize="int8", port=0)


def test_serve_names_a_wrong_quantize_value(tmp_path):
    with pytest.raises(ServeError, match="quantize must be one of none, int8"):
        serve(ckpt_path=str(tmp_path / "missing.ckpt"), quantize="int4", port=0)


def test_quantize_is_refused_off_a_cpu_with_the_reason(tiny_model_dir):
    p = Predictor.from_pretrained(tiny_model_dir)
    p.device = torch.device("meta")
    assert not p.quantize()
    assert p.runtime.refused == ("int8 runs under ONNX Runtime on a CPU only, not on meta",)


def test_quantization_refused_is_a_runtime_refusal():
    assert issubclass(QuantizationRefused, RuntimeRefused)
    assert np.isfinite(quantization.TOLERANCE)


@pytest.mark.parametrize("flags, vnni", [
    ("fpu avx2 avx512f avx512_vnni", True),
    ("fpu avx2 avx_vnni", True),
    ("fpu sse4_2 avx2 fma", False),
])
def test_vnni_is_read_from_the_cpu_flags(flags, vnni):
    assert quantization.has_vnni(flags) is vnni


def test_a_cpu_without_vnni_gets_uint8_weights_which_do_not_saturate():
    assert quantization.recipe_for("int8", vnni=False).weights == "uint8"
    assert quantization.recipe_for("int8-small", vnni=False).weights == "uint8"
    assert quantization.recipe_for("int8", vnni=True) == quantization.INT8


def test_an_unknown_recipe_is_named_in_the_error():
    with pytest.raises(ValueError, match="int8, int8-small"):
        quantization.recipe_for("int4")


def test_int8_keeps_the_feed_forward_output_products_in_float(tiny_model_dir, tmp_path):
    p = Predictor.from_pretrained(tiny_model_dir)
    p.runtime_cache = tmp_path
    assert p.quantize(tolerance=1.0)
    (graph,) = tmp_path.glob("*.onnx")
    nodes = onnx.load(str(graph)).graph.node
    floats = [n.name for n in nodes if n.op_type == "MatMul" and "/output/dense" in n.name and "attention" not in n.name]
    assert len(floats) == 2  # one per layer of the tiny model
    assert any(n.op_type == "MatMulInteger" and "intermediate" in n.name for n in nodes)


def test_int8_small_quantizes_the_word_embeddings_too(tiny_model_dir, tmp_path):
    p = Predictor.from_pretrained(tiny_model_dir)
    p.runtime_cache = tmp_path
    assert p.quantize(kind="int8-small", tolerance=1.0)
    assert p.runtime.name == "ONNX Runtime int8-small"
    (graph,) = tmp_path.glob("*.onnx")
    model = onnx.load(str(graph))
    eight_bits = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    table = {i.name: i for i in model.graph.initializer}["model.bert.embeddings.word_embeddings.weight_quantized"]
    assert table.data_type in eight_bits  # the table kept as 8-bit codes, turned back to float per looked-up row
    assert "model.bert.embeddings.word_embeddings.weight" not in {i.name for i in model.graph.initializer}


def test_uint8_weights_quantize_the_graph_too(tiny_model_dir, tmp_path):
    p = Predictor.from_pretrained(tiny_model_dir)
    p.runtime_cache = tmp_path
    assert p.quantize(recipe=quantization.recipe_for("int8", vnni=False), tolerance=1.0)
    (graph,) = tmp_path.glob("*.onnx")
    assert "MatMulInteger" in op_types(graph)
