"""The HTTP API, through Flask's test client: answers, limits, and every kind of bad input.

Most tests stand a FakePredictor (known answers) behind the app; the ones named "real
model" serve a tiny random Hugging Face model through ``ner_lit.inference.predictor.Predictor``.
"""
from __future__ import annotations

import json
import logging
import re
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import flask
import pytest

from ner_lit.inference.choice import RuntimeStatus, UnknownRuntime, choose_runtime
from ner_lit.serving import launch
from ner_lit.serving.app import DEFAULT_TEMPLATE, ServeError, create_app
from ner_lit.serving.batching import MicroBatcher
from ner_lit.serving.launch import describe, serve
from ner_lit.serving.server import run_server

from serve_fixtures import (
    KLUE_LABELS,
    SENTENCES,
    FakePredictor,
    assert_same_answer,
    fake_predict_one,
)

MAX_LEN = 100
MAX_BATCH = 4


def make_app(predictor: Any, **kwargs: Any) -> flask.Flask:
    kwargs.setdefault("max_text_length", MAX_LEN)
    kwargs.setdefault("max_batch_size", MAX_BATCH)
    return create_app(predictor, **kwargs)


@pytest.fixture
def fake() -> FakePredictor:
    return FakePredictor()


@pytest.fixture
def app(fake: FakePredictor) -> Iterator[flask.Flask]:
    app = make_app(fake)
    yield app
    app.extensions["ner_lit"].batcher.close()


@pytest.fixture
def client(app: flask.Flask):
    return app.test_client()


def expected(text: str) -> dict[str, Any]:
    """What /api must answer for ``text`` when the FakePredictor is behind it."""
    pred = fake_predict_one(text)
    return {
        "text": text,
        "entities": [dict(text=e.text, label=e.label, start=e.start, end=e.end, score=e.score) for e in pred.entities],
        "result": [dict(token=t.token, label=t.label, prob=t.prob) for t in pred.tokens],
    }


SENTENCE = "이순신은 1545년 서울에서 태어났다."


# --------------------------------------------------------------------------- POST /api
def test_api_accepts_a_bare_json_string_as_the_original_system_did(client):
    resp = client.post("/api", data=json.dumps(SENTENCE), content_type="application/json")
    assert resp.status_code == 200
    assert resp.get_json() == expected(SENTENCE)


def test_api_accepts_an_object_with_text(client):
    resp = client.post("/api", json={"text": SENTENCE})
    assert resp.status_code == 200
    assert resp.get_json() == expected(SENTENCE)


def test_api_answer_has_entities_with_offsets_into_the_text(client):
    body = client.post("/api", json={"text": SENTENCE}).get_json()
    assert [(e["text"], e["label"]) for e in body["entities"]] == [("이순신", "PS"), ("1545년", "DT"), ("서울", "LC")]
    assert all(SENTENCE[e["start"] : e["end"]] == e["text"] for e in body["entities"])


def test_api_answer_keeps_the_original_per_token_result_list(client):
    body = client.post("/api", json=SENTENCE).get_json()
    assert body["result"][:3] == [
        {"token": "이", "label": "B-PS", "prob": 0.75},
        {"token": "순", "label": "I-PS", "prob": 0.75},
        {"token": "신", "label": "I-PS", "prob": 0.75},
    ]


def test_api_answer_keys_come_in_the_documented_order(client):
    raw = client.post("/api", json=SENTENCE).get_data(as_text=True)
    assert list(json.loads(raw)) == ["text", "entities", "result"]


def test_api_parses_a_body_sent_without_content_type(client):
    resp = client.post("/api", data=json.dumps(SENTENCE).encode("utf-8"))
    assert resp.status_code == 200
    assert resp.get_json()["entities"][0]["text"] == "이순신"


def test_api_answers_korean_as_readable_utf8(client):
    resp = client.post("/api", json=SENTENCE)
    assert resp.mimetype == "application/json"
    assert "이순신".encode("utf-8") in resp.get_data()


@pytest.mark.parametrize("text", ["", "   ", "\n\t "], ids=["empty", "spaces", "newline-tab"])
def test_blank_text_gets_200_with_no_entities_and_never_reaches_the_model(client, fake, text):
    resp = client.post("/api", json={"text": text})
    assert resp.status_code == 200
    assert resp.get_json() == {"text": text, "entities": [], "result": []}
    assert fake.batches == []


def test_text_of_exactly_max_text_length_is_accepted(client):
    text = "가" * MAX_LEN
    assert client.post("/api", json=text).status_code == 200


def test_text_longer_than_max_text_length_is_413_naming_the_limit(client, fake):
    resp = client.post("/api", json={"text": "가" * (MAX_LEN + 1)})
    assert resp.status_code == 413
    assert resp.get_json()["error"] == f'"text" is {MAX_LEN + 1} characters long; the limit is {MAX_LEN}'
    assert fake.batches == []


def test_a_body_larger_than_any_valid_request_is_413_json(app, client):
    resp = client.post("/api", data=b'"' + b"a" * (app.config["MAX_CONTENT_LENGTH"] + 10) + b'"')
    assert resp.status_code == 413
    assert "too large" in resp.get_json()["error"]


# --------------------------------------------------------------------------- bad input: 400
BAD_BODIES: dict[str, tuple[bytes, str]] = {
    "invalid-json": (b'{"text": ', "not valid JSON"),
    "empty-body": (b"", "empty"),
    "number": (b"42", "got a number"),
    "list": (b'["a", "b"]', "got a list"),
    "null": (b"null", "got null"),
    "boolean": (b"true", "got a boolean"),
    "object-without-text": (b'{"texts": "a"}', 'lacks "text"'),
    "text-is-a-number": (b'{"text": 7}', '"text" must be a string, got a number'),
    "text-is-a-list": (b'{"text": ["a"]}', '"text" must be a string, got a list'),
    "invalid-utf8": ('"이순신'.encode("utf-8")[:-1] + b'"', "not valid UTF-8"),
    "latin1-bytes": (b'"caf\xe9"', "not valid UTF-8"),
    "lone-surrogate": (b'"\\ud800abc"', "unpaired surrogate"),
    "deeply-nested": (b"[" * 3000 + b"]" * 3000, "nested too deeply"),
}


@pytest.mark.parametrize("body,message", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_bad_api_input_is_400_saying_what_was_expected(client, body, message):
    resp = client.post("/api", data=body, content_type="application/json")
    assert resp.status_code == 400
    assert resp.mimetype == "application/json"
    assert message in resp.get_json()["error"]


def test_the_server_keeps_answering_after_bad_input(client):
    for body, _ in BAD_BODIES.values():
        client.post("/api", data=body)
    assert client.post("/api", json=SENTENCE).get_json() == expected(SENTENCE)


# --------------------------------------------------------------------------- POST /api/batch
def test_batch_answers_each_text_in_order_as_api_would(client):
    texts = ["서울에서 만나요", SENTENCE, "", "삼성전자 국회"]
    resp = client.post("/api/batch", json={"texts": texts})
    assert resp.status_code == 200
    assert resp.get_json() == {"results": [client.post("/api", json=t).get_json() for t in texts]}


def test_batch_sends_its_texts_to_the_model_in_one_call(client, fake):
    client.post("/api/batch", json={"texts": ["서울", "부산", "국회"]})
    assert fake.batches == [["서울", "부산", "국회"]]


def test_an_empty_batch_gets_an_empty_list(client):
    resp = client.post("/api/batch", json={"texts": []})
    assert resp.status_code == 200
    assert resp.get_json() == {"results": []}


def test_batch_larger_than_max_batch_size_is_413(client, fake):
    resp = client.post("/api/batch", json={"texts": ["서울"] * (MAX_BATCH + 1)})
    assert resp.status_code == 413
    assert resp.get_json()["error"] == f'"texts" has {MAX_BATCH + 1} items; the limit is {MAX_BATCH}'
    assert fake.batches == []


def test_a_too_long_text_in_a_batch_is_413_naming_its_index(client):
    resp = client.post("/api/batch", json={"texts": ["서울", "가" * (MAX_LEN + 1)]})
    assert resp.status_code == 413
    assert resp.get_json()["error"].startswith('"texts"[1] is 101 characters long')


BAD_BATCHES: dict[str, tuple[bytes, str]] = {
    "bare-string": (b'"abc"', 'expected an object {"texts"'),
    "bare-list": (b'["abc"]', 'expected an object {"texts"'),
    "missing-texts": (b'{"text": "abc"}', 'expected an object {"texts"'),
    "texts-is-a-string": (b'{"texts": "abc"}', '"texts" must be a list of strings, got a string'),
    "non-string-item": (b'{"texts": ["a", 3]}', '"texts"[1] must be a string, got a number'),
    "null-item": (b'{"texts": [null]}', '"texts"[0] must be a string, got null'),
    "invalid-json": (b'{"texts": [', "not valid JSON"),
}


@pytest.mark.parametrize("body,message", BAD_BATCHES.values(), ids=BAD_BATCHES.keys())
def test_bad_batch_input_is_400_saying_what_was_expected(client, body, message):
    resp = client.post("/api/batch", data=body, content_type="application/json")
    assert resp.status_code == 400
    assert message in resp.get_json()["error"]


# --------------------------------------------------------------------------- other routes
def test_health_reports_model_labels_checkpoint_and_score(client):
    resp = client.get("/health")
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["status"] == "ok"
    assert body["model"] == "fake-gazetteer"
    assert body["labels"] == KLUE_LABELS
    assert body["checkpoint"] == "/models/fake.ckpt"
    assert body["val_F1c"] == 91.25


def test_health_reports_null_val_f1c_when_the_model_has_no_scores():
    app = make_app(FakePredictor(scores={}))
    try:
        assert app.test_client().get("/health").get_json()["val_F1c"] is None
    finally:
        app.extensions["ner_lit"].batcher.close()


def test_root_serves_the_page_with_its_dom_hooks(client):
    resp = client.get("/")
    assert resp.status_code == 200
    assert resp.mimetype == "text/html"
    page = resp.get_data(as_text=True)
    for hook in ('id="text"', 'id="submit"', 'id="entities"', 'id="error"', 'id="sentence"', 'id="tokens"'):
        assert hook in page


def test_the_page_loads_nothing_from_other_hosts(client):
    page = client.get("/").get_data(as_text=True)
    assert "http://" not in page and "https://" not in page and "//cdn" not in page


def test_get_on_api_is_405_json_with_allow_header(client):
    resp = client.get("/api")
    assert resp.status_code == 405
    assert resp.get_json()["error"] == "method GET is not allowed here; use POST"
    assert "POST" in resp.headers["Allow"]


def test_post_on_health_is_405_json(client):
    resp = client.post("/health", json={})
    assert resp.status_code == 405
    assert "use GET" in resp.get_json()["error"]


@pytest.mark.parametrize("path", ["/nope", "/api/", "/api/batch/extra", "/index.html"])
def test_unknown_path_is_404_json(client, path):
    resp = client.get(path)
    assert resp.status_code == 404
    assert resp.mimetype == "application/json"
    assert "no such endpoint" in resp.get_json()["error"]


# --------------------------------------------------------------------------- failures inside
def test_a_model_failure_is_500_json_without_traceback_or_detail(caplog):
    app = make_app(FakePredictor(fail_on="boom"))
    try:
        with caplog.at_level(logging.ERROR, logger="ner_lit.serving.app"):
            resp = app.test_client().post("/api", json="boom")
        assert resp.status_code == 500
        body = resp.get_data(as_text=True)
        assert json.loads(body) == {"error": "internal server error; the server log has the details", "status": 500}
        assert "Traceback" not in body and "CUDA" not in body
    finally:
        app.extensions["ner_lit"].batcher.close()


def test_a_model_failure_is_logged_with_its_traceback(caplog):
    app = make_app(FakePredictor(fail_on="boom"))
    try:
        with caplog.at_level(logging.ERROR, logger="ner_lit.serving.app"):
            app.test_client().post("/api", json="boom")
        assert any(r.exc_info and "CUDA out of memory" in str(r.exc_info[1]) for r in caplog.records)
    finally:
        app.extensions["ner_lit"].batcher.close()


def test_the_server_keeps_answering_after_a_model_failure():
    app = make_app(FakePredictor(fail_on="boom"))
    try:
        client = app.test_client()
        assert client.post("/api", json="boom").status_code == 500
        assert client.post("/api", json=SENTENCE).get_json() == expected(SENTENCE)
    finally:
        app.extensions["ner_lit"].batcher.close()


# --------------------------------------------------------------------------- concurrency
def test_the_model_is_only_called_from_the_batcher_thread(app, fake):
    def ask(text: str) -> int:
        return app.test_client().post("/api", json=text).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(ask, [f"서울 {i}" for i in range(40)])) == {200}
    assert fake.threads == {"ner-lit-batcher"}


def test_concurrent_requests_get_the_answers_they_get_alone(app):
    texts = [s for s in SENTENCES if s.strip()][:6]
    alone = {t: app.test_client().post("/api", json=t).get_json() for t in texts}

    def ask(i: int) -> tuple[str, Any]:
        t = texts[i % len(texts)]
        return t, app.test_client().post("/api", json=t).get_json()

    with ThreadPoolExecutor(8) as pool:
        for t, answer in pool.map(ask, range(96)):
            assert answer == alone[t]


def test_requests_piling_up_behind_a_slow_model_share_a_forward_pass():
    fake = FakePredictor(delay_s=0.05)
    app = make_app(fake, max_batch_size=32)
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: app.test_client().post("/api", json=f"서울 {i}"), range(24)))
        assert max(len(b) for b in fake.batches) > 1
        assert sorted(t for b in fake.batches for t in b) == sorted(f"서울 {i}" for i in range(24))
    finally:
        app.extensions["ner_lit"].batcher.close()


def test_batch_requests_beyond_max_concurrent_batches_get_503_json_with_retry_after():
    fake = FakePredictor()
    entered, release = threading.Semaphore(0), threading.Event()

    def gated(texts: list[str]) -> list[Any]:
        entered.release()
        assert release.wait(10), "the test never released the model"
        return fake.forward(texts)

    batcher = MicroBatcher(gated, max_batch_size=1, workers=2)
    app = make_app(fake, batcher=batcher, max_concurrent_batches=2)
    try:
        with ThreadPoolExecutor(2) as pool:
            held = [pool.submit(app.test_client().post, "/api/batch", json={"texts": [f"서울 {i}"]}) for i in range(2)]
            assert entered.acquire(timeout=5) and entered.acquire(timeout=5)  # both in the model
            refused = app.test_client().post("/api/batch", json={"texts": ["부산"]})
            release.set()
            assert [f.result(10).status_code for f in held] == [200, 200]
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "1"
        assert refused.get_json() == {
            "error": "the server is answering 2 batch request(s) already, its limit; retry shortly", "status": 503
        }
        assert app.test_client().post("/api/batch", json={"texts": ["부산"]}).status_code == 200  # slots came back
    finally:
        batcher.close()


def test_single_requests_are_not_limited_by_max_concurrent_batches():
    app = make_app(FakePredictor(delay_s=0.01), max_concurrent_batches=1)
    try:
        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(lambda i: app.test_client().post("/api", json=f"서울 {i}").status_code, range(8)))
        assert statuses == [200] * 8
    finally:
        app.extensions["ner_lit"].batcher.close()


def test_create_app_refuses_max_concurrent_batches_below_one():
    with pytest.raises(ServeError, match="max_concurrent_batches must be at least 1, got 0"):
        create_app(FakePredictor(), max_concurrent_batches=0)


# --------------------------------------------------------------------------- the real model
@pytest.fixture
def real_app(tiny_predictor) -> Iterator[flask.Flask]:
    app = make_app(tiny_predictor, max_text_length=10_000, max_batch_size=32)
    yield app
    app.extensions["ner_lit"].batcher.close()


def test_real_model_answer_has_consistent_entities_and_tokens(real_app):
    for text in SENTENCES:
        body = real_app.test_client().post("/api", json={"text": text}).get_json()
        assert body["text"] == text
        assert all(text[e["start"] : e["end"]] == e["text"] for e in body["entities"])
        assert all(e["label"] in {"PS", "LC", "OG", "DT", "TI", "QT"} for e in body["entities"])
        assert all(t["label"] in KLUE_LABELS and 0.0 <= t["prob"] <= 1.0 for t in body["result"])


def test_real_model_shows_unknown_characters_as_themselves(real_app):
    body = real_app.test_client().post("/api", json="뷁 섞인 문장과 😀 이모지").get_json()
    tokens = [t["token"] for t in body["result"]]
    assert "뷁" in tokens and "😀" in tokens and "[UNK]" not in tokens


def test_real_model_health_lists_its_labels_and_directory(real_app, tiny_model_dir):
    body = real_app.test_client().get("/health").get_json()
    assert body["labels"] == KLUE_LABELS
    assert body["checkpoint"] == str(tiny_model_dir)
    assert body["val_F1c"] is None


def test_real_model_batch_answers_match_single_answers(real_app):
    client = real_app.test_client()
    alone = [client.post("/api", json=t).get_json() for t in SENTENCES[:8]]
    together = client.post("/api/batch", json={"texts": SENTENCES[:8]}).get_json()["results"]
    assert_same_answer(together, alone)


def test_real_model_concurrent_answers_match_single_answers(real_app):
    alone = {t: real_app.test_client().post("/api", json=t).get_json() for t in SENTENCES}

    def ask(i: int) -> tuple[str, Any]:
        t = SENTENCES[i % len(SENTENCES)]
        return t, real_app.test_client().post("/api", json=t).get_json()

    with ThreadPoolExecutor(8) as pool:
        for t, answer in pool.map(ask, range(88)):
            assert_same_answer(answer, alone[t], where=repr(t[:20]))


# --------------------------------------------------------------------------- start-up errors
def test_create_app_refuses_a_missing_template(tmp_path):
    with pytest.raises(ServeError, match="cannot read the page template"):
        create_app(FakePredictor(), template=tmp_path / "nope.html")


def test_create_app_serves_a_custom_template(tmp_path):
    page = tmp_path / "page.html"
    page.write_text("<p>custom 페이지</p>", encoding="utf-8")
    app = create_app(FakePredictor(), template=page)
    try:
        assert app.test_client().get("/").get_data(as_text=True) == "<p>custom 페이지</p>"
    finally:
        app.extensions["ner_lit"].batcher.close()


def test_the_default_template_is_the_repository_page():
    assert DEFAULT_TEMPLATE == Path(__file__).resolve().parents[2] / "templates" / "index.html"
    assert DEFAULT_TEMPLATE.is_file()


@pytest.mark.parametrize(
    "kwargs", [{}, {"ckpt_path": "a.ckpt", "model_dir": "m"}], ids=["neither", "both"]
)
def test_serve_wants_exactly_one_of_ckpt_path_and_model_dir(kwargs):
    with pytest.raises(ServeError, match="exactly one of --ckpt_path"):
        serve(**kwargs)


def test_serve_refuses_a_missing_checkpoint_with_its_path(tmp_path):
    missing = tmp_path / "gone.ckpt"
    with pytest.raises(ServeError, match=re.escape(f"checkpoint not found: {missing}")):
        serve(ckpt_path=str(missing))


def test_serve_refuses_an_unreadable_checkpoint_with_its_path(tmp_path):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ServeError, match=re.escape(f"cannot load checkpoint {junk}")):
        serve(ckpt_path=str(junk))


def test_serve_refuses_a_directory_that_is_no_model(tmp_path):
    with pytest.raises(ServeError, match=re.escape(f"cannot load model directory {tmp_path}")):
        serve(model_dir=str(tmp_path))


def test_serve_refuses_fewer_than_one_torch_thread():
    with pytest.raises(ServeError, match="torch_threads must be at least 1, got 0"):
        serve(model_dir="m", torch_threads=0)


def test_serve_refuses_fewer_than_one_model_worker():
    with pytest.raises(ServeError, match="model_workers must be at least 1, got 0"):
        serve(model_dir="m", model_workers=0)


def test_serve_error_is_a_value_error_for_the_cli():
    assert issubclass(ServeError, ValueError)


def test_run_server_reports_a_busy_port_as_serve_error(app):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ServeError, match=f"cannot listen on 127.0.0.1:{port}"):
            run_server(app, host="127.0.0.1", port=port)


def test_run_server_refuses_an_unknown_server_kind(app):
    with pytest.raises(ServeError, match="waitress"):
        run_server(app, server="gunicorn")  # type: ignore[arg-type]


def test_the_startup_banner_names_url_checkpoint_labels_and_scores():
    banner = describe(FakePredictor(), "http://127.0.0.1:5000")
    assert "http://127.0.0.1:5000" in banner
    assert "/models/fake.ckpt" in banner
    assert " ".join(KLUE_LABELS) in banner
    assert "val_F1c=91.25" in banner and "val_F1e=84.50" in banner


@pytest.mark.parametrize("tagging, shown", [
    ("char", "tagging:     char (8 character slots per token), viterbi"),
    ("token", "tagging:     token (one label per token: a particle fused to a word joins its entity), viterbi"),
])
def test_the_startup_banner_says_how_answers_are_read_off_the_model(tagging, shown):
    from types import SimpleNamespace

    predictor = FakePredictor()
    predictor.aligner = SimpleNamespace(tagging=tagging, decoding="viterbi",
                                        char_slots=SimpleNamespace(slots=8) if tagging == "char" else None)
    assert shown in describe(predictor, "http://127.0.0.1:5000").splitlines()[-1]


def test_serving_threads_are_not_left_behind_by_closed_apps():
    before = {t.name for t in threading.enumerate()}
    app = make_app(FakePredictor())
    app.extensions["ner_lit"].batcher.close()
    assert {t.name for t in threading.enumerate()} - before == set()


# --------------------------------------------------------------------------- runtime choice
class _RuntimeStub:
    """A predictor whose runtimes succeed or fail as told, recording what was tried."""

    def __init__(self, onnx_ok: bool, trace_ok: bool) -> None:
        self.onnx_ok, self.trace_ok, self.tried, self.runtime = onnx_ok, trace_ok, [], RuntimeStatus()

    def use_onnxruntime(self) -> bool:
        self.tried.append("onnxruntime")
        self.runtime = RuntimeStatus("ONNX Runtime") if self.onnx_ok else \
            RuntimeStatus("eager", ("ONNX Runtime export failed: ImportError",))
        return self.onnx_ok

    def trace(self) -> bool:
        self.tried.append("torchscript")
        self.runtime = RuntimeStatus("TorchScript") if self.trace_ok else \
            RuntimeStatus("eager", ("its TorchScript trace differs by 0.5 on a 4x64 batch",))
        return self.trace_ok


@pytest.mark.parametrize(
    "asked, onnx_ok, trace_ok, tried, runtime",
    [
        ("onnxruntime", True, True, ["onnxruntime"], "ONNX Runtime"),
        ("onnxruntime", False, True, ["onnxruntime", "torchscript"], "TorchScript (ONNX Runtime export failed: ImportError)"),
        ("onnxruntime", False, False, ["onnxruntime", "torchscript"],
         "eager (ONNX Runtime export failed: ImportError; its TorchScript trace differs by 0.5 on a 4x64 batch)"),
        ("torchscript", True, True, ["torchscript"], "TorchScript"),
        ("eager", True, True, [], "eager"),
    ],
)
def test_serve_uses_the_runtime_asked_for_or_the_next_that_passes_its_check(asked, onnx_ok, trace_ok, tried, runtime):
    p = _RuntimeStub(onnx_ok, trace_ok)
    assert choose_runtime(p, asked) is p.runtime
    assert p.tried == tried and str(p.runtime) == runtime


def test_a_runtime_refused_on_the_way_is_recorded_in_refused():
    p = _RuntimeStub(onnx_ok=False, trace_ok=True)
    choose_runtime(p, "onnxruntime")
    assert p.runtime == RuntimeStatus("TorchScript", ("ONNX Runtime export failed: ImportError",))


def test_choose_runtime_refuses_an_unknown_runtime():
    with pytest.raises(UnknownRuntime, match="runtime must be one of onnxruntime, torchscript, eager, got 'tensorrt'"):
        choose_runtime(_RuntimeStub(True, True), "tensorrt")


def test_serve_refuses_an_unknown_runtime_before_the_model_loads(monkeypatch):
    def must_not_load(*args, **kwargs):
        raise AssertionError("the model was loaded for an unknown runtime")

    monkeypatch.setattr(launch, "load_predictor", must_not_load)
    with pytest.raises(ServeError, match="runtime must be one of onnxruntime, torchscript, eager, got 'tensorrt'"):
        serve(ckpt_path="any.ckpt", runtime="tensorrt")  # type: ignore[arg-type]
