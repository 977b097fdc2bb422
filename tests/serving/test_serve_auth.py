"""An API token for a server on the network: /api and /api/batch need it, /health and the page do not."""
from __future__ import annotations

import pytest

from ner_lit.serving import app as app_module
from ner_lit.serving.app import ServeError, create_app
from ner_lit.serving.launch import check_exposure, is_loopback, serve

from serve_fixtures import FakePredictor

TOKEN = "s3cret-token"


@pytest.fixture()
def client():
    app = create_app(FakePredictor(), api_key=TOKEN)
    yield app.test_client()
    app.extensions["ner_lit"].batcher.close(timeout=5)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("headers", [{}, _bearer("wrong"), {"Authorization": TOKEN}, _bearer(TOKEN + "x")],
                         ids=["none", "wrong", "no scheme", "longer"])
@pytest.mark.parametrize("path, body", [("/api", {"text": "서울"}), ("/api/batch", {"texts": ["서울"]})])
def test_without_the_right_token_the_api_answers_401_in_its_json_shape(client, headers, path, body) -> None:
    resp = client.post(path, json=body, headers=headers)
    assert resp.status_code == 401
    assert resp.get_json()["status"] == 401 and "Authorization: Bearer <token>" in resp.get_json()["error"]
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="ner_lit"'


@pytest.mark.parametrize("path, body", [("/api", {"text": "서울"}), ("/api/batch", {"texts": ["서울"]})])
def test_with_the_token_the_api_answers(client, path, body) -> None:
    resp = client.post(path, json=body, headers=_bearer(TOKEN))
    assert resp.status_code == 200


def test_the_scheme_is_case_insensitive_as_http_says(client) -> None:
    assert client.post("/api", json="서울", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200


def test_health_and_the_page_stay_open_and_health_says_a_token_is_needed(client) -> None:
    health = client.get("/health")
    assert health.status_code == 200 and health.get_json()["auth_required"] is True
    assert client.get("/").status_code == 200


def test_without_a_token_the_api_is_open_and_health_says_so() -> None:
    app = create_app(FakePredictor())
    try:
        c = app.test_client()
        assert c.post("/api", json="서울").status_code == 200
        assert c.get("/health").get_json()["auth_required"] is False
    finally:
        app.extensions["ner_lit"].batcher.close(timeout=5)


def test_the_token_is_compared_in_constant_time(client, monkeypatch) -> None:
    calls = []
    real = app_module.hmac.compare_digest
    monkeypatch.setattr(app_module.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    client.post("/api", json="서울", headers=_bearer("guess"))
    assert calls == [(b"guess", TOKEN.encode())]


@pytest.mark.parametrize("token", ["", "  ", " padded "])
def test_a_blank_or_padded_token_is_refused_at_start_up(token) -> None:
    with pytest.raises(ServeError, match="non-empty"):
        create_app(FakePredictor(), api_key=token)


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True),
                                            ("0.0.0.0", False), ("::", False), ("192.168.0.5", False), ("example.org", False)])
def test_loopback_hosts_are_told_apart(host, loopback) -> None:
    assert is_loopback(host) is loopback


def test_an_exposed_host_without_a_token_is_refused_with_one_line() -> None:
    with pytest.raises(ServeError, match=r"--host 0\.0\.0\.0 exposes the API to the network without a token"):
        check_exposure("0.0.0.0", None, insecure=False)
    check_exposure("0.0.0.0", TOKEN, insecure=False)
    check_exposure("0.0.0.0", None, insecure=True)
    check_exposure("127.0.0.1", None, insecure=False)


def test_serve_refuses_an_exposed_host_before_loading_any_model(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("NER_LIT_API_KEY", raising=False)
    with pytest.raises(ServeError, match="without a token"):
        serve(model_dir=str(tmp_path / "no-such-model"), host="0.0.0.0", port=0)


def test_serve_takes_the_token_from_the_environment(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NER_LIT_API_KEY", TOKEN)
    monkeypatch.setattr("ner_lit.serving.launch.check_port", lambda host, port: None)

    def loaded(*args, **kwargs):
        raise ServeError("stop: the exposure check passed")

    monkeypatch.setattr("ner_lit.serving.launch.load_predictor", loaded)
    with pytest.raises(ServeError, match="exposure check passed"):
        serve(model_dir=str(tmp_path), host="0.0.0.0", port=0)
