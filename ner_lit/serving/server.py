"""The app under waitress, with its limits: connections, header size, timeouts, open files.

Waitress answers protocol errors (a header too large, a request that times out) with HTML of
its own; the channel and task subclasses here make those answers JSON like every other error
of the API, so a client parses one shape.
"""
from __future__ import annotations

import json
import logging
import resource
import time
from typing import Any, Literal

import flask
import waitress.channel
import waitress.server
import waitress.task
import waitress.utilities

from ner_lit.serving.app import (
    DEFAULT_CHANNEL_TIMEOUT,
    DEFAULT_CONNECTION_LIMIT,
    DEFAULT_REQUEST_TIMEOUT,
    MAX_HEADER_BYTES,
    ServeError,
)


def run_server(
    app: flask.Flask,
    host: str = "127.0.0.1",
    port: int = 5000,
    server: Literal["waitress", "flask"] = "waitress",
    threads: int = 8,
    connection_limit: int = DEFAULT_CONNECTION_LIMIT,
    channel_timeout: int = DEFAULT_CHANNEL_TIMEOUT,
    request_timeout: int = DEFAULT_REQUEST_TIMEOUT,
) -> None:
    """Serve ``app`` until interrupted.

    Waitress (the default) is a production multi-threaded WSGI server; ``"flask"`` is
    Werkzeug's development server, for debugging only. Port 0 picks a free port; the line
    ``Serving on http://HOST:PORT`` (the real port) is printed once the socket listens, so
    a parent process can read where to connect. ``connection_limit``,
    ``channel_timeout`` and ``request_timeout`` apply to waitress only (see :func:`create_waitress_server`).
    """
    # Unhandled request errors are logged with their traceback; give them a format and a
    # time. A no-op when the caller configured logging already.
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if server == "waitress":
        try:
            srv = create_waitress_server(app, host, port, threads, connection_limit, channel_timeout, request_timeout)
        except OSError as exc:
            raise ServeError(f"cannot listen on {host}:{port}: {exc}") from None
        actual_host, actual_port = srv.effective_host, srv.effective_port  # type: ignore[union-attr]
        print(f"Serving on {_url(actual_host, actual_port)}", flush=True)
        try:
            srv.run()
        finally:
            srv.close()
    elif server == "flask":
        from werkzeug.serving import make_server

        try:
            srv = make_server(host, port, app, threaded=True)
        except (OSError, SystemExit) as exc:
            raise ServeError(f"cannot listen on {host}:{port}: {exc}") from None
        print(f"Serving on {_url(host, srv.port)} (Flask development server: not for production)", flush=True)
        try:
            srv.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            srv.server_close()
    else:
        raise ServeError(f'server must be "waitress" or "flask", got {server!r}')


class _RequestTimeout(waitress.utilities.BadRequest):
    code = 408
    reason = "Request Timeout"


def _waitress_message(error: waitress.utilities.Error, adj: Any) -> str:
    """What an error waitress answers itself (before the app sees the request) says, in the API's words."""
    if error.code == 413:
        return f"the request body is too large (limit {adj.max_request_body_size - 1} bytes)"
    if error.code == 431:
        return f"the request line and headers are too large (limit {adj.max_request_header_size} bytes)"
    if error.code == 501:
        return "the Transfer-Encoding is not supported; send the body with Content-Length or Transfer-Encoding: chunked"
    if error.code == 408:
        return f"the request took longer than {adj.request_timeout} s to arrive"
    if error.code == 400:
        return f"the HTTP request is malformed: {error.body}"
    return "internal server error; the server log has the details"


class _JSONErrorTask(waitress.task.ErrorTask):
    """Waitress's own error answers (a request it refuses while parsing it, a 500 of its own)
    in the API's JSON shape rather than waitress's plain text."""

    def execute(self) -> None:
        error = self.request.error
        adj = self.channel.adj
        body = json.dumps({"error": _waitress_message(error, adj), "status": error.code}).encode("utf-8")
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class _Channel(waitress.channel.HTTPChannel):
    """Waitress's connection with JSON errors and a deadline for each request to arrive.

    Waitress has no public hook for either; its channel's ``error_task_class`` and the
    server's ``channel_class`` are the seams it offers subclasses.
    """

    error_task_class = _JSONErrorTask
    _request_started: float | None = None

    def received(self, data: bytes) -> bool:
        if self.request is None and self._request_started is None:
            self._request_started = time.monotonic()
        try:
            return super().received(data)
        finally:
            if self.request is None:  # every request in ``data`` arrived whole
                self._request_started = None

    def readable(self) -> bool:
        """Called by waitress's loop for every connection at least once a second: the
        place to notice a request that is arriving too slowly."""
        started = self._request_started
        if started is not None and time.monotonic() - started > self.adj.request_timeout:
            self._time_out_request()
        return super().readable()

    def _time_out_request(self) -> None:
        """Answer the request still arriving with 408 (then close), as waitress answers a
        request it refuses while parsing it."""
        with self.requests_lock:
            request = self.request
            self._request_started = None
            if request is None or request.completed or self.will_close or self.close_when_flushed:
                return
            if not request.headers_finished:
                request.parse_header(b"GET / HTTP/1.0\r\n")  # as waitress does for its 431
            request.error = _RequestTimeout("request timeout")
            request.completed = True
            self.request = None
            self.requests.append(request)
            if len(self.requests) == 1:
                self.server.add_task(self)


def _raise_open_file_limit(connection_limit: int) -> None:
    """Make room for ``connection_limit`` connections' file descriptors, or say why not."""
    needed = connection_limit + 256  # the model, spooled bodies, logs, pipes
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise ServeError(
            f"connection_limit {connection_limit} needs about {needed} open files, but the limit is {hard} "
            f"(ulimit -Hn); lower --connection_limit or raise the limit"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def create_waitress_server(
    app: flask.Flask,
    host: str,
    port: int,
    threads: int = 8,
    connection_limit: int = DEFAULT_CONNECTION_LIMIT,
    channel_timeout: int = DEFAULT_CHANNEL_TIMEOUT,
    request_timeout: int = DEFAULT_REQUEST_TIMEOUT,
) -> Any:
    """A waitress server over ``app`` with limits that follow the app's.

    * Its body limit is the app's ``MAX_CONTENT_LENGTH``, so an oversized request is
      refused with 413 as soon as its headers arrive, not after waitress read (and spooled
      to disk) a body up to its own default of 1 GiB.
    * ``connection_limit`` counts client connections only: waitress counts its listening
      sockets and its wake-up pipe too, so those are added to what it is given. It uses
      ``poll()``, as ``select()`` can not watch descriptors past 1024.
    * ``channel_timeout`` closes idle connections (checked every tenth of it), and
      ``request_timeout`` answers 408 to a request still arriving after that long.
    * Errors waitress answers itself (400, 408, 413, 431, 501) are the API's JSON.
    """
    for name, value in (("threads", threads), ("connection_limit", connection_limit),
                        ("channel_timeout", channel_timeout), ("request_timeout", request_timeout)):
        if value < 1:
            raise ServeError(f"{name} must be at least 1, got {value}")
    _raise_open_file_limit(connection_limit)
    sockets: dict[int, Any] = {}
    srv = waitress.server.create_server(
        app,
        map=sockets,
        host=host,
        port=port,
        threads=threads,
        connection_limit=connection_limit,
        channel_timeout=channel_timeout,
        cleanup_interval=max(1, channel_timeout // 10),
        max_request_body_size=int(app.config["MAX_CONTENT_LENGTH"]) + 1,  # waitress refuses a body >= its limit
        max_request_header_size=MAX_HEADER_BYTES,
        asyncore_use_poll=True,
        ident="ner_lit",
    )
    adj = srv.adj
    adj.connection_limit = connection_limit + len(sockets)  # the listeners and their trigger, before any client
    adj.request_timeout = request_timeout
    for dispatcher in sockets.values():
        if isinstance(dispatcher, waitress.server.BaseWSGIServer):
            dispatcher.channel_class = _Channel
    return srv


def check_port(host: str, port: int) -> None:
    """Fail now, with one line, if ``host:port`` cannot be listened on (in use, no such interface).

    Binds a socket the way the servers do (SO_REUSEADDR) and closes it again.
    """
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ServeError(f"cannot listen on {host}:{port}: {exc}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
