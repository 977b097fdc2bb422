"""A real server process under load: ``serve()`` over a tiny real model, run by waitress on
loopback, hit by 8 client threads at once."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from serve_fixtures import (
    KLUE_LABELS,
    SENTENCES,
    assert_same_answer,
    get_json,
    post_json,
    start_server_process,
)

pytestmark = pytest.mark.slow

CLIENTS = 8
REQUESTS_PER_CLIENT = 50


def test_eight_concurrent_clients_get_exactly_their_sequential_answers(tmp_path: Path, tiny_model_dir: Path):
    with start_server_process(tmp_path, kind="model_dir", arg=str(tiny_model_dir), threads=8) as server:
        assert server.url.startswith("http://127.0.0.1:")
        sequential = {}
        for text in SENTENCES:
            status, body = post_json(server.url + "/api", {"text": text})
            assert status == 200, body
            sequential[text] = body

        def client(c: int) -> list[tuple[int, str, Any]]:
            out = []
            for r in range(REQUESTS_PER_CLIENT):
                text = SENTENCES[(c * 7 + r) % len(SENTENCES)]
                status, body = post_json(server.url + "/api", {"text": text})
                out.append((status, text, body))
            return out

        with ThreadPoolExecutor(CLIENTS) as pool:
            answers = [a for per_client in pool.map(client, range(CLIENTS)) for a in per_client]

        assert len(answers) == CLIENTS * REQUESTS_PER_CLIENT
        assert [status for status, _, _ in answers] == [200] * len(answers)
        for _, text, body in answers:
            assert_same_answer(body, sequential[text], where=repr(text[:20]))
        assert "Traceback" not in server.log()
        process = server.process
    assert process.poll() is not None, "the server process outlived the test"


def test_serve_prints_the_checkpoint_its_labels_and_scores_at_startup(tmp_path: Path, tiny_model_dir: Path):
    with start_server_process(tmp_path, kind="model_dir", arg=str(tiny_model_dir), torch_threads=1, model_workers=2) as server:
        banner = "\n".join(server.banner)
        status, health = get_json(server.url + "/health")
    assert f"checkpoint:  {tiny_model_dir}" in banner
    assert " ".join(KLUE_LABELS) in banner
    assert "validation:  none recorded" in banner
    assert "tagging:     token (one label per token" in banner  # a plain Hugging Face directory: a token classifier
    assert "device:      cpu, 1 torch thread(s), ONNX Runtime, packed (64 tokens a row), 2 model worker(s)" in banner  # the options took effect
    assert status == 200 and health["checkpoint"] == str(tiny_model_dir)


def test_the_flask_development_server_serves_the_same_api(tmp_path: Path):
    with start_server_process(tmp_path, kind="fake", server="flask") as server:
        status, body = post_json(server.url + "/api", "서울에서 만나요")
    assert status == 200
    assert body["entities"] == [{"text": "서울", "label": "LC", "start": 0, "end": 2, "score": 0.92}]


def test_serve_keeps_request_threads_for_single_requests_while_batches_run(tmp_path: Path, tiny_model_dir: Path):
    """With 2 request threads serve() answers one /api/batch at a time: the others get 503 at
    once, and the second thread stays free for /api."""
    long = (SENTENCES[1] * 200)[:3000]
    with start_server_process(tmp_path, kind="model_dir", arg=str(tiny_model_dir), threads=2) as server:
        barrier = threading.Barrier(4)  # the three batch clients and this thread

        def batch(_: int) -> tuple[int, Any]:
            barrier.wait()
            return post_json(server.url + "/api/batch", {"texts": [long] * 8}, timeout=120)

        with ThreadPoolExecutor(3) as pool:
            batches = [pool.submit(batch, i) for i in range(3)]
            barrier.wait()
            single = post_json(server.url + "/api", SENTENCES[0], timeout=60)
            answers = [f.result() for f in batches]
    assert single[0] == 200 and single[1]["text"] == SENTENCES[0]
    statuses = sorted(status for status, _ in answers)
    assert statuses[0] == 200 and statuses[-1] == 503, statuses
    for status, body in answers:
        if status == 503:
            assert body["error"] == "the server is answering 1 batch request(s) already, its limit; retry shortly"
