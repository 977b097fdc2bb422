"""The Predictor's three stages (prepare -> forward -> finish), which ``serve`` runs apart,
give the same answers as ``predict``, whatever else shares the forward pass."""
from __future__ import annotations

import gc
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from types import SimpleNamespace

import pytest
import torch

from ner_lit.inference.choice import PackingStatus, RuntimeStatus

from serve_fixtures import SENTENCES

# Longer than the tiny model's 64 positions: predicted through several windows.
LONG = " ".join(SENTENCES)


def same(a, b, where: str = "") -> None:
    """Equal labels, spans and tokens; probabilities equal up to padding noise."""
    a, b = asdict(a), asdict(b)
    for side in (a, b):
        for item in side["entities"] + side["tokens"]:
            item["score" if "score" in item else "prob"] = round(item.get("score", item.get("prob")), 4)
    assert a == b, where


def staged(predictor, texts: list[str]) -> list:
    items = predictor.prepare(texts)
    outputs = predictor.forward(items)
    return [predictor.finish(t, i, o) for t, i, o in zip(texts, items, outputs)]


def forbid_eager(predictor, runtime: str) -> None:
    """From here on only the predictor's trace or export can answer."""

    def no_eager_calls(*args, **kwargs):
        raise AssertionError(f"the eager model ran although {runtime} is in use")

    predictor.model = no_eager_calls


def test_a_long_text_is_predicted_through_several_windows_to_its_last_character(tiny_predictor):
    (item,) = tiny_predictor.prepare([LONG])
    assert len(item.windows) > 1
    (pred,) = tiny_predictor.predict([LONG])
    last = max(i for i, ch in enumerate(LONG) if not ch.isspace())
    assert pred.tokens[-1].token.removeprefix("##") == LONG[last]  # no truncation


def test_staged_prediction_equals_predict(tiny_predictor):
    texts = SENTENCES + [LONG, "서울"]
    for got, want, text in zip(staged(tiny_predictor, texts), tiny_predictor.predict(texts), texts):
        same(got, want, repr(text[:20]))


def test_forward_gives_each_text_its_answer_alone_whatever_shares_the_batch(tiny_predictor):
    texts = [LONG, "서울", *SENTENCES[:5]]
    together = staged(tiny_predictor, texts)
    for got, text in zip(together, texts):
        same(got, staged(tiny_predictor, [text])[0], repr(text[:20]))


def test_forward_splits_many_windows_into_batches_without_changing_answers(tiny_predictor, monkeypatch):
    texts = SENTENCES + [LONG]
    one_batch = staged(tiny_predictor, texts)
    monkeypatch.setattr(tiny_predictor, "batch_size", 2)
    calls: list[int] = []
    model = tiny_predictor.model

    def counting(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return model(*args, **kwargs)

    monkeypatch.setattr(tiny_predictor, "model", counting)
    for got, want in zip(staged(tiny_predictor, texts), one_batch):
        same(got, want)
    assert max(calls) == 2 and sum(calls) == sum(len(i.windows) for i in tiny_predictor.prepare(texts))


def test_prepare_is_safe_from_many_threads(tiny_predictor):
    texts = [SENTENCES[i % len(SENTENCES)] for i in range(64)]
    alone = {t: tiny_predictor.prepare([t])[0] for t in set(texts)}
    with ThreadPoolExecutor(8) as pool:
        items = list(pool.map(lambda t: tiny_predictor.prepare([t])[0], texts))
    for t, item in zip(texts, items):
        assert [w.input_ids for w in item.windows] == [w.input_ids for w in alone[t].windows]
        assert item.offsets.tolist() == alone[t].offsets.tolist()


@pytest.mark.parametrize("text", ["", "   "])
def test_blank_text_predicts_no_entities_and_no_tokens(tiny_predictor, text):
    (pred,) = tiny_predictor.predict([text])
    assert pred.entities == [] and pred.tokens == []


# --------------------------------------------------------------------------- TorchScript
@pytest.mark.parametrize("method, runtime", [("trace", "TorchScript"), ("use_onnxruntime", "ONNX Runtime")])
def test_a_traced_or_exported_predictor_answers_as_the_eager_one(tiny_model_dir, method, runtime):
    from ner_lit.inference.predictor import Predictor

    texts = SENTENCES + [LONG, "서울"]
    eager = Predictor.from_pretrained(tiny_model_dir)
    p = Predictor.from_pretrained(tiny_model_dir)
    assert getattr(p, method)() and p.runtime == RuntimeStatus(runtime)
    forbid_eager(p, runtime)
    want = eager.predict(texts)
    if method == "trace":  # the same kernels: the same numbers to the last digit
        assert [x.to_dict() for x in p.predict(texts)] == [x.to_dict() for x in want]
    for got, expected, text in zip(p.predict(texts), want, texts):
        same(got, expected, repr(text[:20]))
    for got, expected in zip(staged(p, texts), want):
        same(got, expected)


class _ShapeDependent(torch.nn.Module):
    """A model with a Python branch on the batch size: a trace would freeze one branch."""

    config = SimpleNamespace(vocab_size=50, max_position_embeddings=64, _name_or_path="shape-dependent")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        logits = torch.nn.functional.one_hot(input_ids % 13, 13).float()
        if input_ids.shape[0] > 2:
            logits = logits.flip(-1)
        return SimpleNamespace(logits=logits)


def test_a_model_whose_trace_differs_stays_eager_and_says_why(tiny_predictor):
    from ner_lit.inference.predictor import Predictor

    p = Predictor(_ShapeDependent(), tiny_predictor.tokenizer, tiny_predictor.labels)
    assert p.trace() is False
    assert p.runtime.name == "eager" and len(p.runtime.refused) == 1
    assert p.runtime.refused[0].startswith("its TorchScript trace differs by")
    assert p.runner.compiled is None  # the eager model still answers


def test_a_model_the_tracer_can_not_follow_stays_eager(tiny_model_dir, monkeypatch):
    from ner_lit.inference.predictor import Predictor

    p = Predictor.from_pretrained(tiny_model_dir)

    def refuse(*args, **kwargs):
        raise RuntimeError("unsupported op")

    monkeypatch.setattr(torch.jit, "trace", refuse)
    assert p.trace() is False
    assert p.runtime == RuntimeStatus("eager", ("TorchScript trace failed: RuntimeError",))
    assert p.predict(["서울"])[0].text == "서울"


# --------------------------------------------------------------------------- packing
def test_a_packed_predictor_answers_as_the_padded_one(tiny_model_dir):
    from ner_lit.inference.predictor import Predictor

    texts = SENTENCES + [LONG, "서울"]
    padded = Predictor.from_pretrained(tiny_model_dir)
    packed = Predictor.from_pretrained(tiny_model_dir)
    assert packed.pack() and packed.packing == PackingStatus(True, packed.runner.pack_width)
    for got, want, text in zip(staged(packed, texts), staged(padded, texts), texts):
        same(got, want, repr(text[:20]))


def test_packing_runs_short_texts_several_to_a_row(tiny_model_dir, monkeypatch):
    from ner_lit.inference.predictor import Predictor

    p = Predictor.from_pretrained(tiny_model_dir)
    assert p.pack()
    rows: list[int] = []
    runner = p.runner.packed

    def counting(ids, mask, positions):
        rows.append(ids.shape[0])
        return runner(ids, mask, positions)

    monkeypatch.setattr(p.runner, "packed", counting)
    items = p.prepare(SENTENCES[:6])
    p.forward(items)
    assert sum(rows) < sum(len(i.windows) for i in items)


def test_packing_packs_the_trace_when_one_is_in_use(tiny_model_dir):
    from ner_lit.inference.predictor import Predictor

    eager = Predictor.from_pretrained(tiny_model_dir)
    p = Predictor.from_pretrained(tiny_model_dir)
    assert p.trace() and p.pack()
    assert isinstance(p.runner.packed, torch.jit.ScriptModule)

    forbid_eager(p, "the packed trace")
    texts = SENTENCES[:6]
    for got, want in zip(staged(p, texts), staged(eager, texts)):
        same(got, want)


def test_a_roberta_style_model_is_packed_with_positions_counted_from_pad_plus_one(tiny_predictor):
    from transformers import RobertaConfig, RobertaForTokenClassification

    from ner_lit.inference.predictor import Predictor

    torch.manual_seed(0)
    pad = tiny_predictor.tokenizer.pad_token_id
    config = RobertaConfig(vocab_size=len(tiny_predictor.tokenizer), hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=64, max_position_embeddings=pad + 66,
                           pad_token_id=pad, num_labels=len(tiny_predictor.labels), initializer_range=0.5)
    model = RobertaForTokenClassification(config).eval()
    padded = Predictor(model, tiny_predictor.tokenizer, tiny_predictor.labels, max_length=64, stride=16)
    packed = Predictor(model, tiny_predictor.tokenizer, tiny_predictor.labels, max_length=64, stride=16)
    assert packed.pack() and packed.runner.first_position == pad + 1
    texts = SENTENCES[:7]
    for got, want in zip(staged(packed, texts), staged(padded, texts)):
        same(got, want)


def test_a_model_that_can_not_take_packed_rows_stays_padded_and_says_why(tiny_predictor):
    from ner_lit.inference.predictor import Predictor

    p = Predictor(_ShapeDependent(), tiny_predictor.tokenizer, tiny_predictor.labels)  # no position_ids argument
    assert p.pack() is False
    assert p.packing == PackingStatus(False, None, "packing failed: TypeError")
    assert p.runner.packed is None


class _IgnoresPositions(torch.nn.Module):
    """Takes the packed arguments but lets windows see each other: packed logits differ."""

    config = SimpleNamespace(vocab_size=50, max_position_embeddings=64, _name_or_path="leaky")

    def forward(self, input_ids, attention_mask, position_ids=None) -> SimpleNamespace:
        x = torch.nn.functional.one_hot(input_ids % 13, 13).float()
        return SimpleNamespace(logits=x + x.mean(dim=1, keepdim=True))  # every token sees the whole row


def test_a_model_whose_packed_logits_differ_stays_padded_and_says_by_how_much(tiny_predictor):
    from ner_lit.inference.predictor import Predictor

    p = Predictor(_IgnoresPositions(), tiny_predictor.tokenizer, tiny_predictor.labels)
    assert p.pack() is False
    assert not p.packing.packed and p.packing.reason.startswith("packed logits differ by")


# --------------------------------------------------------------------------- ONNX Runtime
def test_onnxruntime_packs_too_and_answers_as_the_eager_padded_one(tiny_model_dir):
    from ner_lit.inference.predictor import Predictor

    texts = SENTENCES[:7]
    eager = Predictor.from_pretrained(tiny_model_dir)
    p = Predictor.from_pretrained(tiny_model_dir)
    assert p.use_onnxruntime() and p.pack()
    assert not isinstance(p.runner.packed, torch.nn.Module)  # the packed export, not the eager module
    for got, want in zip(staged(p, texts), staged(eager, texts)):
        same(got, want)


def test_without_onnxruntime_the_predictor_stays_eager_and_says_why(tiny_predictor, monkeypatch):
    import sys

    from ner_lit.inference.predictor import Predictor

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what an environment without the package shows
    p = Predictor(tiny_predictor.model, tiny_predictor.tokenizer, tiny_predictor.labels, max_length=64, stride=16)
    assert p.use_onnxruntime() is False
    assert p.runtime == RuntimeStatus("eager", ("ONNX Runtime export failed: ModuleNotFoundError",))
    assert p.predict(["서울"])[0].text == "서울"


def test_a_new_runtime_drops_the_packing_made_for_the_previous_one(tiny_model_dir):
    from ner_lit.inference.predictor import Predictor

    p = Predictor.from_pretrained(tiny_model_dir)
    assert p.trace() and p.pack()
    assert p.use_onnxruntime()
    assert p.runner.packed is None and p.packing == PackingStatus()  # pack() again to pack this runtime


# --------------------------------------------------------------------------- memory
class _TrackedCheckpoint(dict):
    """A checkpoint dict that a weak reference can watch (a plain dict can not be one's referent)."""


def _parameter_refs(predictor) -> tuple[weakref.ref, list[weakref.ref]]:
    model = predictor.model
    return weakref.ref(model), [weakref.ref(p) for p in model.parameters()]


@pytest.mark.parametrize("method", ["trace", "use_onnxruntime"])
def test_serving_a_compiled_runtime_keeps_neither_the_eager_model_nor_its_parameters(tiny_model_dir, method):
    from ner_lit.inference.choice import prepare_runtime
    from ner_lit.inference.predictor import Predictor

    p = Predictor.from_pretrained(tiny_model_dir)
    want = p.predict(SENTENCES + [LONG])
    model, params = _parameter_refs(p)
    prepare_runtime(p, "onnxruntime" if method == "use_onnxruntime" else "torchscript", pack=True)
    assert p.packing.packed and p.model is None
    gc.collect()
    assert model() is None and all(r() is None for r in params), "the eager model outlived the compiled runtime"
    for got, expected in zip(p.predict(SENTENCES + [LONG]), want):
        same(got, expected)
    assert p.trace() is False and "released" in str(p.runtime)  # nothing left to compile from


def test_a_server_keeps_one_tokenizer_and_answers_the_same_tokens_and_entities(tiny_model_dir):
    from ner_lit.alignment.tokenizers import PieceNames
    from ner_lit.inference.choice import prepare_runtime
    from ner_lit.inference.predictor import Predictor

    p = Predictor.from_pretrained(tiny_model_dir)
    texts = SENTENCES + [LONG, "알 수 없는 글자 ☃ 와 <s> [CLS] 표기"]
    want = p.predict(texts)
    original = weakref.ref(p.tokenizer)
    prepare_runtime(p, "eager", pack=False)
    assert isinstance(p.tokenizer, PieceNames) and p.aligner.tokenizer is p.tokenizer
    gc.collect()
    assert original() is None, "the transformers tokenizer outlived the release"
    for got, expected in zip(p.predict(texts), want):
        same(got, expected)  # entities and the per-token list, pieces included


def test_an_eager_server_keeps_its_model(tiny_model_dir):
    from ner_lit.inference.choice import prepare_runtime
    from ner_lit.inference.predictor import Predictor

    p = Predictor.from_pretrained(tiny_model_dir)
    prepare_runtime(p, "eager", pack=True)
    assert isinstance(p.model, torch.nn.Module) and p.predict(["서울"])[0].text == "서울"


def test_a_predictor_from_a_checkpoint_keeps_no_checkpoint_dict(trained_run, monkeypatch):
    import ner_lit.inference.loading as checkpoint  # where the loader looks load_checkpoint up
    from ner_lit.inference.choice import prepare_runtime
    from ner_lit.inference.predictor import Predictor

    monkeypatch.setenv("NER_LIT_CACHE", str(trained_run.cache))
    seen: list[weakref.ref] = []
    load = checkpoint.load_checkpoint

    def tracked(*args, **kwargs):
        ckpt = _TrackedCheckpoint(load(*args, **kwargs))
        seen.append(weakref.ref(ckpt))
        return ckpt

    monkeypatch.setattr(checkpoint, "load_checkpoint", tracked)
    p = Predictor.from_checkpoint(trained_run.best)
    model, params = _parameter_refs(p)
    gc.collect()
    assert seen and all(r() is None for r in seen), "the loaded checkpoint dict is kept after loading"
    prepare_runtime(p, "onnxruntime", pack=True)
    gc.collect()
    assert p.runtime == RuntimeStatus("ONNX Runtime") and model() is None and all(r() is None for r in params)


def test_a_packed_runtime_refused_at_release_keeps_the_padded_one_and_the_eager_model(tiny_model_dir, monkeypatch):
    from ner_lit.inference.choice import RuntimeRefused
    from ner_lit.inference.predictor import Predictor

    p = Predictor.from_pretrained(tiny_model_dir)
    assert p.trace()

    def refuse(*args, **kwargs):
        raise RuntimeRefused("the packed TorchScript trace differs by 1")

    monkeypatch.setattr(p.runner, "_compiled_packed", refuse)
    assert p.pack(release=True) is False and str(p.packing) == "padded (the packed TorchScript trace differs by 1)"
    assert p.runtime == RuntimeStatus("TorchScript") and p.runner.compiled is not None and p.model is not None
    assert p.predict(["서울"])[0].text == "서울"


# --------------------------------------------------------------------------- serve's one step
@pytest.mark.parametrize("runtime, maker", [("onnxruntime", "onnxruntime_session"), ("torchscript", "torchscript")])
def test_a_packed_server_makes_its_runtime_once(tiny_model_dir, monkeypatch, runtime, maker):
    """Packed with the eager model released, only the packed graph runs: a padded one is not made."""
    import ner_lit.inference.runtimes as runtimes_module
    from ner_lit.inference.choice import prepare_runtime
    from ner_lit.inference.predictor import Predictor

    made: list[tuple] = []
    real = getattr(runtimes_module, maker)

    def counting(module, example):
        made.append(tuple(t.shape for t in example))
        return real(module, example)

    monkeypatch.setattr(runtimes_module, maker, counting)
    p = Predictor.from_pretrained(tiny_model_dir)
    want = p.predict(SENTENCES + [LONG])
    prepare_runtime(p, runtime, pack=True)
    assert len(made) == 1 and len(made[0]) == 3, made  # one graph, of packed rows (ids, 4D mask, positions)
    assert p.packing.packed and p.model is None
    assert p.runtime == RuntimeStatus({"onnxruntime": "ONNX Runtime", "torchscript": "TorchScript"}[runtime])
    for got, expected in zip(p.predict(SENTENCES + [LONG]), want):
        same(got, expected)


def test_a_server_whose_one_step_packing_is_refused_goes_step_by_step(tiny_model_dir, monkeypatch):
    from ner_lit.inference.choice import RuntimeRefused, prepare_runtime
    from ner_lit.inference.predictor import Predictor

    p = Predictor.from_pretrained(tiny_model_dir)
    want = p.predict(SENTENCES + [LONG])

    def refuse(*args, **kwargs):
        raise RuntimeRefused("the packed ONNX Runtime export differs by 1")

    monkeypatch.setattr(p.runner, "compile_packed", refuse)
    prepare_runtime(p, "onnxruntime", pack=True)
    assert p.runtime == RuntimeStatus("ONNX Runtime") and p.packing.packed and p.model is None
    for got, expected in zip(p.predict(SENTENCES + [LONG]), want):
        same(got, expected)


def test_one_step_packing_refused_leaves_the_runner_as_it_was(tiny_model_dir, monkeypatch):
    import ner_lit.inference.runtimes as runtimes_module
    from ner_lit.inference.predictor import Predictor

    def broken(module, example):
        raise ValueError("this exporter can not follow the model")

    monkeypatch.setattr(runtimes_module, "onnxruntime_session", broken)
    p = Predictor.from_pretrained(tiny_model_dir)
    assert p.serve_packed("onnxruntime") is False
    assert p.runtime == RuntimeStatus() and p.packing == PackingStatus() and isinstance(p.model, torch.nn.Module)
    assert p.runner.compiler is None and p.runner.packed is None
    assert p.predict(["서울"])[0].text == "서울"
