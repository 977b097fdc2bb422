"""The HTTP server: a JSON API and a demo page over one loaded predictor.

Endpoints (all answers are JSON except the page):

* ``POST /api`` -- body ``"문장"`` (a bare JSON string, the original system's body) or
  ``{"text": "문장"}``. Answer ``{"text", "entities": [{text, label, start, end, score}],
  "result": [{token, label, prob}]}``; ``result`` is the original system's per-token list,
  kept so its clients keep working.
* ``POST /api/batch`` -- ``{"texts": [...]}`` (at most ``max_batch_size``), answer
  ``{"results": [...]}`` in the same order.
* ``GET /health`` -- the model, its labels, checkpoint and validation scores, and whether the
  API needs a token.
* ``GET /`` -- the demo page (``templates/index.html``).

With an API token (``create_app(api_key=...)``, ``serve --api_key`` or ``NER_LIT_API_KEY``),
``/api`` and ``/api/batch`` answer only requests carrying ``Authorization: Bearer <token>``; the
rest get 401 in the API's JSON shape. The token is compared in constant time, so the time of a
refusal says nothing about how much of a guess was right. ``/health`` and the page stay open:
the page asks for the token when ``/health`` says one is needed.

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

import hmac
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import flask
from flask_classful import FlaskView, route
from werkzeug.exceptions import HTTPException

from ner_lit import resources
from ner_lit.alignment.answers import prediction_json
from ner_lit.errors import UserError
from ner_lit.inference.choice import Tunable
from ner_lit.serving.batching import MicroBatcher

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


class ServeError(UserError):
    """A server that can not start: bad options, a missing or unreadable checkpoint.

    The message is meant for the user as is; the CLI prints it and exits non-zero without
    a traceback.
    """


class PredictorLike(Tunable, Protocol):
    """What ``serve`` needs of a predictor (``ner_lit.inference.predictor.Predictor`` has it).

    A prediction runs in three stages so that only the batched work is serialised:
    ``prepare`` (tokenize) and ``finish`` (build the answer) run in each request's own
    thread, ``forward`` (the model, and decoding, both over many requests' items at once)
    in the batcher's worker thread(s). Before the first request, start-up chooses its runtime
    (:class:`~ner_lit.inference.choice.Tunable`: ``runtime``, ``packing`` and the methods that set
    them) and the banner shows them with ``device``. The app itself uses only the identity and
    the three stages (a test's stand-in may have only those); ``split``, ``join``, ``cost`` and
    ``batch_tokens``, where a predictor has them, spread a long text over several batches.
    """

    labels: list[str]
    source: str
    name: str
    scores: dict[str, float]
    device: Any

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


#: The API's answer for one prediction (``/api`` and each item of ``/api/batch``): the one shape
#: of :mod:`ner_lit.alignment.answers`, which ``predict`` writes too.
prediction_to_json = prediction_json


def _empty_json(text: str) -> dict[str, Any]:
    return {"text": text, "entities": [], "result": []}


@dataclass
class _ServerState:
    predictor: PredictorLike
    batcher: MicroBatcher[Any, Any]
    page: str
    max_text_length: int
    max_batch_size: int
    batch_slots: threading.BoundedSemaphore | None = None  # None: no limit on concurrent /api/batch
    max_concurrent_batches: int | None = None
    api_key: bytes | None = None  # None: the API is open


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
    def _authorize(self) -> None:
        """With a token set, the request must carry it as ``Authorization: Bearer <token>``."""
        key = self.state.api_key
        if key is None:
            return
        header = flask.request.headers.get("Authorization", "")
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode("utf-8"), key):
            return
        why = "the API token is wrong" if header else "this server needs its API token"
        raise _BadRequest(f"{why}; send the header 'Authorization: Bearer <token>'", status=401,
                          headers={"WWW-Authenticate": 'Bearer realm="ner_lit"'})

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
            auth_required=self.state.api_key is not None,
        )

    @route("/api", methods=["POST"])
    def api(self) -> flask.Response:
        self._authorize()
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
        self._authorize()
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
    api_key: str | None = None,
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
        api_key: the token ``/api`` and ``/api/batch`` require (``Authorization: Bearer``); None
            leaves them open.
    """
    if max_text_length < 1:
        raise ServeError(f"max_text_length must be at least 1, got {max_text_length}")
    if max_batch_size < 1:
        raise ServeError(f"max_batch_size must be at least 1, got {max_batch_size}")
    if max_concurrent_batches is not None and max_concurrent_batches < 1:
        raise ServeError(f"max_concurrent_batches must be at least 1, got {max_concurrent_batches}")
    if api_key is not None and (not api_key.strip() or api_key != api_key.strip()):
        raise ServeError("the API token must be non-empty and have no leading or trailing spaces")
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
    state = _ServerState(predictor, batcher, page, max_text_length, max_batch_size, slots, max_concurrent_batches,
                         None if api_key is None else api_key.encode("utf-8"))
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
