"""The HTTP server: a JSON API and a demo page over one loaded predictor.

Endpoints (all answers are JSON except the page):

* ``POST /api`` -- body ``"문장"`` (a bare JSON string, the original system's body) or
  ``{"text": "문장"}``. Answer ``{"text", "entities": [{text, label, start, end, score}],
  "result": [{token, label, prob}]}``; ``result`` is the original system's per-token list,
  kept so its clients keep working.
* ``POST /api/batch`` -- ``{"texts": [...]}`` (at most ``max_batch_size``), answer
  ``{"results": [...]}`` in the same order.
* ``GET /health`` -- the model, its labels, checkpoint and validation scores.
* ``GET /`` -- the demo page (``templates/index.html``).

The server must survive whatever a client sends: malformed input is a 400 that says what
was expected, oversized input a 413, and an unexpected failure a logged 500 whose body
carries no traceback. All inference goes through one :class:`MicroBatcher`, so the model
is only called from the batcher's worker thread(s) (one unless ``--model_workers``) and
concurrent requests share forward passes; it takes items fairly across requests and long
texts go in pieces, so a short request is not stuck behind big batches.

Under waitress (:func:`create_waitress_server`) the limits are the app's: a body over the
app's limit is refused as soon as its headers arrive, connections are bounded in number,
idle time and time to arrive, and what waitress answers itself (a request it can not parse)
is the API's JSON too. At most ``max_concurrent_batches`` ``/api/batch`` requests run at
once (503 beyond), so request threads stay free for ``/api``.
"""
from __future__ import annotations

import json
import logging
import resource
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, Sequence

import flask
import waitress.channel
import waitress.server
import waitress.task
import waitress.utilities
from flask_classful import FlaskView, route
from werkzeug.exceptions import HTTPException

from ner_lit import resources
from ner_lit.answers import prediction_json
from ner_lit.batching import MicroBatcher

__all__ = [
    "DEFAULT_TEMPLATE",
    "NERView",
    "ServeError",
    "choose_runtime",
    "create_app",
    "create_waitress_server",
    "make_batcher",
    "prediction_to_json",
    "prepare_runtime",
    "run_server",
    "serve",
]

log = logging.getLogger(__name__)

#: The demo page: templates/index.html of the source tree, or its copy in the installed package.
DEFAULT_TEMPLATE = resources.template()

#: Worst-case JSON bytes per text character: a ``\\uXXXX`` escape is 6 bytes. Used to size
#: the request body limit so that any text within ``max_text_length`` fits.
_JSON_BYTES_PER_CHAR = 6

#: The most client connections waitress keeps open at once; more wait in the listen backlog
#: unanswered. Each takes a file descriptor (up to three while spooling a large body or
#: answer to disk), so the open-file limit is raised to fit at start-up.
DEFAULT_CONNECTION_LIMIT = 1000

#: Seconds a connection may sit idle between requests before waitress closes it.
DEFAULT_CHANNEL_TIMEOUT = 30

#: Seconds a request may take to arrive, headers and body, from its first byte to its last:
#: a client trickling a byte now and then keeps a connection active, so only this closes it.
DEFAULT_REQUEST_TIMEOUT = 60

#: The most bytes of request line and headers waitress reads (its default is 256 KiB): the
#: API needs a few hundred, a browser with cookies a few thousand.
MAX_HEADER_BYTES = 32 * 1024


class ServeError(ValueError):
    """A server that can not start: bad options, a missing or unreadable checkpoint.

    The message is meant for the user as is; the CLI prints it and exits non-zero without
    a traceback.
    """


class PredictorLike(Protocol):
    """What the server needs of a predictor (``ner_lit.predictor.Predictor`` has it).

    A prediction runs in three stages so that only the batched work is serialised:
    ``prepare`` (tokenize) and ``finish`` (build the answer) run in each request's own
    thread, ``forward`` (the model, and decoding, both over many requests' items at once)
    in the batcher's worker thread(s).
    """

    labels: list[str]
    source: str
    name: str
    scores: dict[str, float]

    def prepare(self, texts: list[str]) -> Sequence[Any]: ...

    def forward(self, items: list[Any]) -> Sequence[Any]: ...

    def finish(self, text: str, item: Any, output: Any) -> Any: ...


class _BadRequest(Exception):
    """Client input the API refuses; carries the HTTP status and the user-facing message."""

    def __init__(self, message: str, status: int = 400, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.headers = headers or {}


# --------------------------------------------------------------------------- JSON shapes
#: The API's answer for one prediction (``/api`` and each item of ``/api/batch``): the one shape
#: of :mod:`ner_lit.answers`, which ``predict`` writes too.
prediction_to_json = prediction_json


def _empty_json(text: str) -> dict[str, Any]:
    return {"text": text, "entities": [], "result": []}


# --------------------------------------------------------------------------- the view
@dataclass
class _ServerState:
    predictor: PredictorLike
    batcher: MicroBatcher[Any, Any]
    page: str
    max_text_length: int
    max_batch_size: int
    batch_slots: threading.BoundedSemaphore | None = None  # None: no limit on concurrent /api/batch
    max_concurrent_batches: int | None = None


def _parse_body() -> Any:
    """The request body as JSON, whatever the Content-Type (old clients send none)."""
    raw = flask.request.get_data(cache=False)
    try:
        body = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _BadRequest("the request body is not valid UTF-8") from None
    if body.startswith("\ufeff"):
        body = body[1:]
    if not body.strip():
        raise _BadRequest('the request body is empty; expected JSON: "text" or {"text": "..."}')
    try:
        return json.loads(body)
    except RecursionError:
        raise _BadRequest("the request body is JSON nested too deeply") from None
    except ValueError as exc:
        raise _BadRequest(f"the request body is not valid JSON ({exc})") from None


class NERView(FlaskView):
    """The API and the page. Flask-Classful builds one instance per route at registration,
    handing each the shared server state; the instances hold no per-request data."""

    route_base = "/"
    trailing_slash = False

    def __init__(self, state: _ServerState) -> None:
        self.state = state

    # -- helpers (underscored: Flask-Classful does not route them)
    def _check_text(self, text: Any, where: str) -> str:
        if not isinstance(text, str):
            raise _BadRequest(f"{where} must be a string, got {_json_type(text)}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise _BadRequest(f"{where} contains an unpaired surrogate (\\ud800-\\udfff); send valid Unicode") from None
        if len(text) > self.state.max_text_length:
            raise _BadRequest(
                f"{where} is {len(text)} characters long; the limit is {self.state.max_text_length}", status=413
            )
        return text

    def _predict(self, texts: list[str]) -> list[dict[str, Any]]:
        """Run the non-blank texts through the batcher; blank ones need no model.

        A predictor that can (``split``/``join``) cuts a long text into pieces of windows,
        so that its forward passes interleave with other requests' in the batcher.
        """
        out: list[dict[str, Any] | None] = [None if t.strip() else _empty_json(t) for t in texts]
        todo = [i for i, o in enumerate(out) if o is None]
        if todo:
            predictor = self.state.predictor
            items = predictor.prepare([texts[i] for i in todo])
            split = getattr(predictor, "split", None)
            pieces = [split(item) if split is not None else [item] for item in items]
            outputs = iter(self.state.batcher.submit_many([p for ps in pieces for p in ps]))
            for i, item, parts in zip(todo, items, pieces):
                got = [next(outputs) for _ in parts]
                output = got[0] if len(parts) == 1 and parts[0] is item else predictor.join(item, got)  # type: ignore[attr-defined]
                out[i] = prediction_to_json(predictor.finish(texts[i], item, output))
        return [o for o in out if o is not None]

    # -- routes
    @route("/", methods=["GET"])
    def page(self) -> flask.Response:
        return flask.Response(self.state.page, mimetype="text/html")

    @route("/health", methods=["GET"])
    def health(self) -> flask.Response:
        p = self.state.predictor
        scores = dict(getattr(p, "scores", None) or {})
        return flask.jsonify(
            status="ok",
            model=p.name,
            labels=list(p.labels),
            checkpoint=str(p.source),
            val_F1c=scores.get("val_F1c"),
            scores=scores,
            max_text_length=self.state.max_text_length,
            max_batch_size=self.state.max_batch_size,
        )

    @route("/api", methods=["POST"])
    def api(self) -> flask.Response:
        body = _parse_body()
        if isinstance(body, dict):
            if "text" not in body:
                raise _BadRequest('the JSON object lacks "text"; expected {"text": "..."} or a JSON string')
            text = self._check_text(body["text"], '"text"')
        elif isinstance(body, str):
            text = self._check_text(body, "the text")
        else:
            raise _BadRequest(f'expected a JSON string or an object {{"text": "..."}}, got {_json_type(body)}')
        return flask.jsonify(self._predict([text])[0])

    @route("/api/batch", methods=["POST"])
    def api_batch(self) -> flask.Response:
        body = _parse_body()
        if not isinstance(body, dict) or "texts" not in body:
            raise _BadRequest(f'expected an object {{"texts": ["...", ...]}}, got {_json_type(body)}')
        texts = body["texts"]
        if not isinstance(texts, list):
            raise _BadRequest(f'"texts" must be a list of strings, got {_json_type(texts)}')
        if len(texts) > self.state.max_batch_size:
            raise _BadRequest(
                f'"texts" has {len(texts)} items; the limit is {self.state.max_batch_size}', status=413
            )
        checked = [self._check_text(t, f'"texts"[{i}]') for i, t in enumerate(texts)]
        slots = self.state.batch_slots
        if slots is not None and not slots.acquire(blocking=False):
            raise _BadRequest(
                f"the server is answering {self.state.max_concurrent_batches} batch request(s) already, its limit; "
                "retry shortly",
                status=503,
                headers={"Retry-After": "1"},
            )
        try:
            return flask.jsonify(results=self._predict(checked))
        finally:
            if slots is not None:
                slots.release()


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for error messages a client understands."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _error(message: str, status: int) -> tuple[flask.Response, int]:
    return flask.jsonify(error=message, status=status), status


# --------------------------------------------------------------------------- the app
def make_batcher(
    predictor: PredictorLike, max_batch_size: int, max_wait_ms: float = 2.0, workers: int = 1
) -> MicroBatcher[Any, Any]:
    """The micro-batcher over ``predictor.forward``: batches of at most ``max_batch_size``
    items and, where the predictor tells an item's cost (``cost``, ``batch_tokens``: a
    real one counts tokens), of about one model batch's tokens, so no request's batch holds
    the model for long while others wait."""
    cost = getattr(predictor, "cost", None)
    budget = getattr(predictor, "batch_tokens", None) if cost is not None else None
    return MicroBatcher(predictor.forward, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, workers=workers,
                        cost=cost, max_batch_cost=budget)


def create_app(
    predictor: PredictorLike,
    *,
    template: str | Path = DEFAULT_TEMPLATE,
    max_text_length: int = 10_000,
    max_batch_size: int = 32,
    batcher: MicroBatcher[Any, Any] | None = None,
    max_concurrent_batches: int | None = None,
) -> flask.Flask:
    """Build the Flask app around a loaded predictor.

    Args:
        predictor: prepares and finishes each request's texts in its thread; its
            ``forward`` is only called by the batcher's worker thread(s).
        template: the HTML page served at ``/``. Read once here, so a missing file fails at
            start-up, not on the first visitor.
        max_text_length: longer texts are refused with 413.
        max_batch_size: the most texts ``/api/batch`` accepts; also the batch size of the
            batcher built when none is given.
        batcher: the micro-batcher to run inference through; by default one over
            ``predictor.forward`` (the app owns it: ``app.extensions["ner_lit"].batcher``).
        max_concurrent_batches: the most ``/api/batch`` requests answered at once (None: no
            limit); more get 503 with ``Retry-After``. Each holds a request thread while its
            texts run, so below the server's thread count this keeps threads free for ``/api``.
    """
    if max_text_length < 1:
        raise ServeError(f"max_text_length must be at least 1, got {max_text_length}")
    if max_batch_size < 1:
        raise ServeError(f"max_batch_size must be at least 1, got {max_batch_size}")
    if max_concurrent_batches is not None and max_concurrent_batches < 1:
        raise ServeError(f"max_concurrent_batches must be at least 1, got {max_concurrent_batches}")
    template = Path(template)
    try:
        page = template.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ServeError(f"cannot read the page template {template}: {exc}") from None
    if batcher is None:
        batcher = make_batcher(predictor, max_batch_size)

    app = flask.Flask(__name__)
    app.json.sort_keys = False  # keep {"text", "entities", "result"} in the documented order
    app.json.ensure_ascii = False  # Korean stays readable in the answers
    # Werkzeug refuses larger bodies with 413 before they are read into memory.
    app.config["MAX_CONTENT_LENGTH"] = max_batch_size * (max_text_length * _JSON_BYTES_PER_CHAR + 64) + 4096
    slots = None if max_concurrent_batches is None else threading.BoundedSemaphore(max_concurrent_batches)
    state = _ServerState(predictor, batcher, page, max_text_length, max_batch_size, slots, max_concurrent_batches)
    app.extensions["ner_lit"] = state
    NERView.register(app, init_argument=state)

    @app.errorhandler(_BadRequest)
    def bad_request(exc: _BadRequest) -> tuple[flask.Response, int]:
        response, status = _error(exc.message, exc.status)
        response.headers.update(exc.headers)
        return response, status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> flask.Response:
        messages = {
            404: "no such endpoint; see POST /api, POST /api/batch, GET /health, GET /",
            413: f"the request body is too large (limit {app.config['MAX_CONTENT_LENGTH']} bytes)",
        }
        if exc.code == 405:
            allowed = ", ".join(sorted(m for m in (exc.valid_methods or []) if m not in ("HEAD", "OPTIONS")))
            message = f"method {flask.request.method} is not allowed here; use {allowed}"
        else:
            message = messages.get(exc.code or 500, exc.description or exc.name)
        response = exc.get_response()  # keeps headers such as Allow on 405
        response.set_data(json.dumps({"error": message, "status": exc.code}, ensure_ascii=False))
        response.content_type = "application/json"
        return response

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> tuple[flask.Response, int]:
        log.exception("unhandled error on %s %s", flask.request.method, flask.request.path)
        return _error("internal server error; the server log has the details", 500)

    return app


# --------------------------------------------------------------------------- running it
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


# --------------------------------------------------------------------------- waitress
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


def load_predictor(ckpt_path: str | None, model_dir: str | None, device: str = "cpu") -> PredictorLike:
    """Load the predictor from exactly one of a checkpoint or an exported model directory.

    Every failure (wrong options, missing file, a file that is no checkpoint) becomes one
    :class:`ServeError` whose message names the path, so the user sees one clear line.
    """
    if (ckpt_path is None) == (model_dir is None):
        raise ServeError("give exactly one of --ckpt_path (a ner_lit checkpoint) or --model_dir (an exported model)")
    from ner_lit.predictor import Predictor  # torch and transformers only when actually serving

    if ckpt_path is not None:
        path = Path(ckpt_path)
        if not path.is_file():
            raise ServeError(f"checkpoint not found: {path}")
        try:
            return Predictor.from_checkpoint(str(path), device=device)
        except Exception as exc:  # noqa: BLE001 - any load failure means the same thing to the user
            raise ServeError(f"cannot load checkpoint {path}: {type(exc).__name__}: {exc}") from exc
    path = Path(model_dir)  # type: ignore[arg-type]
    if not path.is_dir():
        raise ServeError(f"model directory not found: {path}")
    try:
        return Predictor.from_pretrained(str(path), device=device)
    except Exception as exc:  # noqa: BLE001
        raise ServeError(f"cannot load model directory {path}: {type(exc).__name__}: {exc}") from exc


def describe(predictor: PredictorLike, url: str, torch_threads: int | None = None, model_workers: int = 1) -> str:
    """The start-up banner: where to connect, what model answers there and on what."""
    scores = getattr(predictor, "scores", None) or {}
    score_text = ", ".join(f"{k}={v:.2f}" for k, v in scores.items()) if scores else "none recorded"
    lines = [
        f"ner_lit serve: {url}",
        f"  model:       {predictor.name}",
        f"  checkpoint:  {predictor.source}",
        f"  labels:      {' '.join(predictor.labels)}",
        f"  validation:  {score_text}",
    ]
    aligner = getattr(predictor, "aligner", None)
    if aligner is not None:  # how answers are read off the model: what a user checks first when spans look wrong
        unit = (f"char ({aligner.char_slots.slots} character slots per token)" if aligner.tagging == "char"
                else "token (one label per token: a particle fused to a word joins its entity)")
        lines.append(f"  tagging:     {unit}, {aligner.decoding}")
    if torch_threads is not None:
        runtime = getattr(predictor, "runtime", "eager")
        packing = getattr(predictor, "packing", "padded")
        lines.append(
            f"  device:      {getattr(predictor, 'device', 'cpu')}, {torch_threads} torch thread(s), {runtime}, "
            f"{packing}, {model_workers} model worker(s)"
        )
    return "\n".join(lines)


def choose_runtime(predictor: Any, runtime: str) -> None:
    """Put ``runtime`` in use, or the first one after it (onnxruntime, torchscript, eager) that
    passes its start-up check; ``predictor.runtime`` says what runs and why the ones asked
    for before it do not."""
    order = ["onnxruntime", "torchscript", "eager"]
    if runtime not in order:
        raise ServeError(f"runtime must be one of {', '.join(order)}, got {runtime!r}")
    refused: list[str] = []
    chosen = "eager"
    for name in order[order.index(runtime) :]:
        if name == "eager":
            break
        if predictor.use_onnxruntime() if name == "onnxruntime" else predictor.trace():
            chosen = predictor.runtime
            break
        refused.append(predictor.runtime.removeprefix("eager (").removesuffix(")"))
    predictor.runtime = f"{chosen} ({'; '.join(refused)})" if refused else chosen


def prepare_runtime(predictor: Any, runtime: str, pack: bool = True) -> None:
    """What ``serve`` does to a loaded predictor before the first request: put ``runtime`` in use
    (:func:`choose_runtime`), pack if asked, and then, where a compiled runtime runs every batch,
    release the eager network, so the server holds only the weights it runs.

    Packed with a compiled runtime, the predictor first tries that in one step
    (:meth:`Predictor.serve_packed`: one export, not a padded one made and freed again); where that
    is refused, the step by step path below runs and says why in the banner."""
    serve_packed = getattr(predictor, "serve_packed", None)
    if pack and serve_packed is not None and serve_packed(runtime):
        return
    choose_runtime(predictor, runtime)
    if pack:
        predictor.pack(release=True)
    release = getattr(predictor, "release_eager", None)
    if release is not None:
        release()


def serve(
    ckpt_path: str | None = None,
    model_dir: str | None = None,
    host: str = "127.0.0.1",
    port: int = 5000,
    template: str = str(DEFAULT_TEMPLATE),
    device: str = "cpu",
    max_text_length: int = 10_000,
    max_batch_size: int = 32,
    max_wait_ms: float = 2.0,
    server: Literal["waitress", "flask"] = "waitress",
    threads: int = 8,
    torch_threads: int | None = None,
    runtime: Literal["onnxruntime", "torchscript", "eager"] = "onnxruntime",
    pack: bool = True,
    model_workers: int = 1,
    connection_limit: int = DEFAULT_CONNECTION_LIMIT,
    channel_timeout: int = DEFAULT_CHANNEL_TIMEOUT,
    request_timeout: int = DEFAULT_REQUEST_TIMEOUT,
    max_concurrent_batches: int | None = None,
) -> None:
    """Serve a trained model over HTTP: a JSON API (POST /api, POST /api/batch, GET /health)
    and a demo page at /.

    Args:
        ckpt_path: a ner_lit Lightning checkpoint (.ckpt) to serve. Give this or model_dir.
        model_dir: an exported Hugging Face model directory to serve. Give this or ckpt_path.
        host: the interface to listen on; 127.0.0.1 keeps the server local, 0.0.0.0 exposes it.
        port: the TCP port to listen on (0 picks a free one).
        template: the HTML page served at /.
        device: the torch device to run the model on (cpu, cuda, cuda:1, ...).
        max_text_length: the longest text, in characters, a request may send; longer ones get 413.
        max_batch_size: the most texts per POST /api/batch, and per model forward pass.
        max_wait_ms: how long the model, when requests are queued behind it, waits for more
            to fill a batch; a request arriving while the model is idle never waits.
        server: waitress (multi-threaded, for production) or flask (the development server).
        threads: the number of request threads of the waitress server.
        torch_threads: intra-op threads for the model, torch's and ONNX Runtime's (default:
            torch's own choice, one per core). The request threads tokenize and answer
            beside the model; bench/serve_bench.py measures the default against 1.
        runtime: what runs the model: onnxruntime (an ONNX export under ONNX Runtime, CPU
            only), torchscript (a frozen TorchScript trace) or eager (PyTorch as trained).
            Each is used only after a start-up check that it gives the eager model's logits;
            where it fails, the next one in that order is tried, and the banner says which
            runs and why. Both compiled ones run without Python per layer and with the GIL
            released, so request threads tokenize and answer meanwhile.
        pack: put several short texts in one model row (each attending only to itself), so
            a batch is not padded to its longest text; used only where the model gives the
            same logits that way, checked at start-up (the banner says). false pads.
        model_workers: threads that run forward passes, each on its own batch. More than 1
            pays where the model releases the GIL (not eager) and cores are spare: on 2 cores,
            2 workers with --torch_threads 1 (see the README's serving figures).
        connection_limit: the most client connections waitress keeps open; more wait,
            unanswered, until one closes. The open-file limit is raised to fit (start-up
            fails with a clear message where the hard limit is too low).
        channel_timeout: seconds a connection may sit idle between requests before it is closed.
        request_timeout: seconds a request may take to arrive whole (headers and body); a
            slower one is answered 408 and its connection closed, so clients that trickle a
            byte now and then can not hold connections for ever.
        max_concurrent_batches: the most POST /api/batch requests answered at once (default:
            half of threads); more get 503 with Retry-After: 1. Each holds a request thread
            while its texts run, so the rest stay free for POST /api.
    """
    if torch_threads is not None and torch_threads < 1:
        raise ServeError(f"torch_threads must be at least 1, got {torch_threads}")
    if model_workers < 1:
        raise ServeError(f"model_workers must be at least 1, got {model_workers}")
    check_port(host, port)  # before the model loads: a busy port is known in a moment
    import torch

    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
    predictor = load_predictor(ckpt_path, model_dir, device=device)
    prepare_runtime(predictor, runtime, pack)
    batcher = make_batcher(predictor, max_batch_size, max_wait_ms=max_wait_ms, workers=model_workers)
    try:
        app = create_app(
            predictor,
            template=template,
            max_text_length=max_text_length,
            max_batch_size=max_batch_size,
            batcher=batcher,
            max_concurrent_batches=max(1, threads // 2) if max_concurrent_batches is None else max_concurrent_batches,
        )
        print(describe(predictor, _url(host, port), torch.get_num_threads(), model_workers), flush=True)
        try:
            run_server(app, host=host, port=port, server=server, threads=threads, connection_limit=connection_limit,
                       channel_timeout=channel_timeout, request_timeout=request_timeout)
        except KeyboardInterrupt:
            pass
    finally:
        batcher.close(timeout=10)
