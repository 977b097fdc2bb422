"""The server's resource limits, against a real waitress process on 127.0.0.1 spoken to over
raw sockets: a body limit waitress applies before reading the body, connections that can not
starve other clients, and waitress's own errors in the API's JSON."""
from __future__ import annotations

import json
import socket
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import pytest

from ner_lit.serving.app import MAX_HEADER_BYTES

from serve_fixtures import ServerProcess, post_json, start_server_process

MAX_LEN = 100
MAX_BATCH = 4
#: create_app's body limit for MAX_LEN and MAX_BATCH (6 JSON bytes per character).
BODY_LIMIT = MAX_BATCH * (MAX_LEN * 6 + 64) + 4096
#: Long enough for anything a working server does here; what fails before the limits hangs.
ANSWER_TIMEOUT_S = 20.0


@contextmanager
def fake_server(tmp: Path, **server_kwargs: Any) -> Iterator[ServerProcess]:
    with start_server_process(tmp, max_text_length=MAX_LEN, max_batch_size=MAX_BATCH, server_kwargs=server_kwargs) as s:
        yield s


def address(server: ServerProcess) -> tuple[str, int]:
    parts = urlsplit(server.url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def connect(server: ServerProcess, timeout: float = ANSWER_TIMEOUT_S) -> socket.socket:
    return socket.create_connection(address(server), timeout=timeout)


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP answer that the server ends by closing (as waitress does after an error)."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def request_bytes(headers: str, body: bytes = b"") -> bytes:
    return f"POST /api HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode("latin-1") + body


def assert_json_error(headers: dict[str, str], body: bytes, status: int, fragment: str) -> None:
    assert headers["content-type"] == "application/json", body
    answer = json.loads(body)
    assert answer["status"] == status
    assert fragment in answer["error"], answer


# --------------------------------------------------------------------------- item 5: the body limit
def test_a_post_announcing_a_body_over_the_limit_is_413_json_before_its_body_is_sent(tmp_path: Path):
    with fake_server(tmp_path) as server, connect(server) as sock:
        sock.sendall(request_bytes("Content-Type: application/json\r\nContent-Length: 500000000\r\n"))
        status, headers, body = read_answer(sock)  # not one byte of the body sent
    assert status == 413
    assert_json_error(headers, body, 413, f"the request body is too large (limit {BODY_LIMIT} bytes)")


def test_a_body_of_exactly_the_limit_reaches_the_app(tmp_path: Path):
    text = "a" * (BODY_LIMIT - 2)
    with fake_server(tmp_path) as server, connect(server) as sock:
        sock.sendall(request_bytes(f"Content-Length: {BODY_LIMIT}\r\nConnection: close\r\n", f'"{text}"'.encode()))
        status, headers, body = read_answer(sock)
    assert status == 413
    assert_json_error(headers, body, 413, f"the text is {len(text)} characters long; the limit is {MAX_LEN}")


# --------------------------------------------------------------------------- item 8: waitress's own errors
@pytest.mark.parametrize(
    "headers, status, fragment",
    [
        ("Content-Length: abc\r\n", 400, "the HTTP request is malformed: Content-Length is invalid"),
        ("Transfer-Encoding: gzip\r\n", 501, "the Transfer-Encoding is not supported"),
        ("Bad Header Line\r\n", 400, "the HTTP request is malformed: Invalid header"),
    ],
    ids=["bad-content-length", "transfer-encoding", "bad-header-line"],
)
def test_errors_waitress_answers_itself_are_the_apis_json(tmp_path: Path, headers: str, status: int, fragment: str):
    with fake_server(tmp_path) as server, connect(server) as sock:
        sock.sendall(request_bytes(headers))
        got, answer_headers, body = read_answer(sock)
        assert "Traceback" not in server.log()
    assert got == status
    assert_json_error(answer_headers, body, status, fragment)


def test_headers_over_the_limit_are_431_json(tmp_path: Path):
    start = request_bytes("")[:-2] + b"X-Pad: "
    # Exactly the limit and no end of headers: waitress reads it all, so nothing is left
    # unread when it closes (unread bytes would make the close a reset that loses the answer).
    with fake_server(tmp_path) as server, connect(server) as sock:
        sock.sendall(start + b"p" * (MAX_HEADER_BYTES - len(start)))
        status, headers, body = read_answer(sock)
    assert status == 431
    assert_json_error(headers, body, 431, f"the request line and headers are too large (limit {MAX_HEADER_BYTES} bytes)")


# --------------------------------------------------------------------------- item 6: slow and idle clients
SLOW_CLIENTS = 200


def trickle(socks: list[socket.socket], byte: bytes = b"X") -> None:
    for s in socks:
        s.sendall(byte)


def test_hundreds_of_slow_clients_do_not_starve_a_real_request(tmp_path: Path):
    with fake_server(tmp_path) as server, ExitStack() as stack:
        slow = [stack.enter_context(connect(server)) for _ in range(SLOW_CLIENTS)]
        for s in slow:  # each starts a request it never finishes
            s.sendall(b"POST /api HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        for _ in range(3):
            trickle(slow)
            time.sleep(0.2)
        status, body = post_json(server.url + "/api", "서울에서 만나요", timeout=ANSWER_TIMEOUT_S)
        trickle(slow)  # the slow ones are still connected: nothing was dropped to make room
    assert status == 200 and body["entities"][0]["text"] == "서울"


def test_the_connection_limit_counts_client_connections(tmp_path: Path):
    limit = 5
    with fake_server(tmp_path, connection_limit=limit) as server, ExitStack() as stack:
        idle = [stack.enter_context(connect(server)) for _ in range(limit - 1)]
        status, _ = post_json(server.url + "/api", "서울", timeout=ANSWER_TIMEOUT_S)
        assert status == 200, "the limit-th client was not served"
        idle.append(stack.enter_context(connect(server)))
        with connect(server, timeout=2.0) as extra:
            extra.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            with pytest.raises(socket.timeout):  # one client over the limit: it waits, unanswered
                extra.recv(1)
            idle.pop().close()
            extra.settimeout(ANSWER_TIMEOUT_S)
            assert extra.recv(12).startswith(b"HTTP/1.1 200")  # answered as soon as a connection closed


def test_an_idle_connection_is_closed_after_the_channel_timeout(tmp_path: Path):
    with fake_server(tmp_path, channel_timeout=1) as server, connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        first = sock.recv(65536)  # keep-alive: the connection stays open after the answer
        assert first.startswith(b"HTTP/1.1 200")
        rest = b""
        while chunk := sock.recv(65536):  # the rest of the answer, then the close
            rest += chunk
    assert b"HTTP/1.1" not in rest


def test_a_request_trickling_in_is_answered_408_json_after_the_request_timeout(tmp_path: Path):
    with fake_server(tmp_path, request_timeout=2, channel_timeout=60) as server, connect(server) as sock:
        sock.sendall(b"POST /api HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        sock.settimeout(0.3)
        answer = b""
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        while not answer and time.monotonic() < deadline:
            try:
                sock.sendall(b"X")  # active all along: the channel timeout alone would never close it
                answer = sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
        sock.settimeout(ANSWER_TIMEOUT_S)
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].endswith(b" 408 Request Timeout"), answer[:200]
    assert json.loads(body) == {"error": "the request took longer than 2 s to arrive", "status": 408}


# --------------------------------------------------------------------------- start-up checks
@pytest.mark.parametrize("option", ["threads", "connection_limit", "channel_timeout", "request_timeout"])
def test_limits_below_one_are_refused_at_start_up(option: str):
    import flask

    from ner_lit.serving.app import ServeError
    from ner_lit.serving.server import create_waitress_server

    with pytest.raises(ServeError, match=f"{option} must be at least 1, got 0"):
        create_waitress_server(flask.Flask("x"), "127.0.0.1", 0, **{option: 0})


def test_a_connection_limit_beyond_the_open_file_limit_is_refused_with_the_way_out(monkeypatch):
    import resource

    import flask

    from ner_lit.serving.app import ServeError
    from ner_lit.serving.server import create_waitress_server

    monkeypatch.setattr(resource, "getrlimit", lambda _: (256, 512))
    with pytest.raises(ServeError, match=r"connection_limit 1000 needs about 1256 open files, but the limit is 512 "
                                         r"\(ulimit -Hn\); lower --connection_limit or raise the limit"):
        create_waitress_server(flask.Flask("x"), "127.0.0.1", 0, connection_limit=1000)
