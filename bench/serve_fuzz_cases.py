"""Malformed, hostile and odd requests for ``python -m ner_lit serve``, and the client side that sends
them and judges the answers: what bench/fuzz.py and bench/soak.py share.

A fuzz *class* is one builder function ``(target, n, rng) -> list[Case]``: its fixed cases (each kind
of malformation once) and then seeded random variants up to ``n``. A :class:`Case` is the exact bytes
sent on a fresh TCP connection (raw sockets, since ``http.client`` refuses to send most of them), how
they are sent (:data:`MODES`) and, where the documented behaviour is certain, the statuses that must
come back. The builders need no server: tests/bench/test_bench_fuzz_soak.py checks them alone.

How an answer is judged (:class:`Tally`):

* *application 5xx*: any 5xx answer except 503 (the server's deliberate overload answer, with
  ``Retry-After``) and 501 to a request with a ``Transfer-Encoding`` (waitress supports chunked only);
* *non-JSON*: an error answer (4xx/5xx) whose body is not JSON, or not the API's ``{"error", "status"}``
  shape, and a 2xx answer of ``POST`` whose body is not JSON (HEAD answers have no body);
* *expectation failures*: a status outside ``Case.expect``, a 401 without ``WWW-Authenticate``, a
  valid text whose answer does not echo it or whose entity offsets do not cut out the entity's text,
  and no answer at all where one must come (``Case.must_answer``);
* connection errors (reset, refused, timeout) and connections the server closed without answering
  are counted apart: after a 413/431 waitress may reset a client that is still sending (docs/serving.md).

The server's checkpoint and process (:func:`ensure_checkpoint`, :func:`start_server`) are here too.
Standard library only, as bench/serve_clients.py: this process is the load generator.
"""
from __future__ import annotations

import http.client
import json
import random
import socket
import struct
import subprocess
import sys
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

from bench.common import REPO, WORK, rel
from bench.serve_clients import Server

HOST = "127.0.0.1"
#: The request whose answer must stay the same, byte for byte, all through a run.
KNOWN_TEXT = "김철수는 3월 5일 서울에서 삼성전자를 방문했다."
#: A complete request must be answered within this many seconds, else it counts as a timeout.
ANSWER_TIMEOUT_S = 15.0
#: How long a ``wait-shut`` case waits for an answer before telling the server nothing more will come.
WAIT_S = 0.5
#: The most answer bytes read from one connection.
MAX_ANSWER_BYTES = 8 << 20
#: Send modes of a case: ``send`` (send, read one answer); ``shut`` (send, half-close, read whatever
#: comes); ``wait-shut`` (send, wait :data:`WAIT_S` for an answer, else half-close, then read);
#: slow clients: ``trickle`` (send, then one byte of ``tail`` now and then), ``stall`` (send, then
#: nothing); floods: ``open-close``, ``rst`` (close with a TCP reset), ``half-close`` (send, half-close,
#: never read), ``send-close`` (a whole request, closed unread), ``send-read`` (a whole request, read).
MODES = ("send", "shut", "wait-shut", "trickle", "stall", "open-close", "rst", "half-close", "send-close",
         "send-read")

Bytes = Union[str, bytes]

#: The versions both benches record beside the machine.
PACKAGES = ("ner_lit", "waitress", "flask", "werkzeug", "torch", "onnxruntime")


def _b(x: Bytes) -> bytes:
    return x if isinstance(x, bytes) else x.encode("utf-8")


# =============================================================================== what is sent
@dataclass(frozen=True)
class Target:
    """What the builders need to know of the server: its token and limits (GET /health)."""

    token: str
    max_text_length: int = 10_000
    max_batch_size: int = 32

    @property
    def auth(self) -> str:
        return f"Bearer {self.token}"

    @property
    def body_limit(self) -> int:
        """The request body limit create_app derives from the text and batch limits (docs/serving.md)."""
        return self.max_batch_size * (self.max_text_length * 6 + 64) + 4096


@dataclass(frozen=True)
class Case:
    """One request (or connection) of a fuzz class."""

    kind: str  # what it is, short: the records count statuses per kind
    data: bytes  # the bytes sent on a fresh connection
    method: str = "POST"  # HEAD answers carry no body
    mode: str = "send"  # one of MODES
    expect: tuple[int, ...] = ()  # the statuses that must come back (empty: any, but no application 5xx)
    must_answer: bool = False  # no answer at all is an expectation failure
    texts: tuple[str, ...] = ()  # valid texts whose answers must echo them (in order, /api or /api/batch)
    tail: bytes = b""  # trickle: the bytes sent one at a time after ``data``

    def __post_init__(self) -> None:
        assert self.mode in MODES, self.mode


def request(method: Bytes = "POST", path: Bytes = "/api", body: bytes = b"", *, auth: Optional[Bytes] = None,
            content_type: Optional[Bytes] = "application/json", length: Union[None, int, Bytes] = "auto",
            headers: Sequence[tuple[Bytes, Bytes]] = (), version: Bytes = "HTTP/1.1", host: bool = True) -> bytes:
    """An HTTP/1.1 request as bytes, every part replaceable by anything: ``length="auto"`` writes the
    body's Content-Length (for a body or a POST/PUT/PATCH), None leaves it out, anything else is written as is."""
    lines = [_b(method) + b" " + _b(path) + b" " + _b(version)]
    if host:
        lines.append(b"Host: 127.0.0.1")
    if content_type is not None:
        lines.append(b"Content-Type: " + _b(content_type))
    if auth is not None:
        lines.append(b"Authorization: " + _b(auth))
    lines += [_b(name) + b": " + _b(value) for name, value in headers]
    if length == "auto":
        if body or _b(method) in (b"POST", b"PUT", b"PATCH"):
            lines.append(b"Content-Length: %d" % len(body))
    elif length is not None:
        lines.append(b"Content-Length: " + (b"%d" % length if isinstance(length, int) else _b(length)))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def jbody(value: Any, ascii_only: bool = False) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8")


def api(t: Target, value: Any, path: str = "/api", ascii_only: bool = False, **kw: Any) -> bytes:
    """``POST path`` of ``value`` as JSON (raw UTF-8, or ``\\u`` escapes), with the token."""
    return request("POST", path, jbody(value, ascii_only), auth=t.auth, **kw)


def raw_api(t: Target, body: bytes, path: str = "/api", **kw: Any) -> bytes:
    """``POST path`` of the body bytes as they are, with the token."""
    return request("POST", path, body, auth=t.auth, **kw)


def sample_texts(n: Optional[int] = None) -> list[str]:
    """Texts of the sample corpus's dev split (its ``## id<TAB>text`` comment lines), read without ner_lit."""
    out = []
    for line in (REPO / "ner_lit" / "sample" / "dev.tsv").read_text(encoding="utf-8").splitlines():
        if line.startswith("## sample-") and "\t" in line:
            out.append(line.split("\t", 1)[1])
    return (out or [KNOWN_TEXT])[:n]


_SAMPLE = sample_texts(64)


def _text(rng: random.Random) -> str:
    return rng.choice(_SAMPLE)


def _random_json(rng: random.Random, depth: int = 0, strings: bool = True) -> Any:
    kinds = ["null", "bool", "int", "float", "list", "dict"] + (["str"] if strings else [])
    kind = rng.choice(kinds if depth < 3 else kinds[:4] + (["str"] if strings else []))
    if kind == "null":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.randint(-10**12, 10**12)
    if kind == "float":
        return rng.uniform(-1e6, 1e6)
    if kind == "str":
        return _text(rng)[: rng.randint(0, 30)]
    if kind == "list":
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(["a", "text", "texts", "x", ""]): _random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def _fill(fixed: list[Case], n: int, variant: Callable[[], Case]) -> list[Case]:
    """Every fixed case once, then random variants up to ``n`` in all."""
    return fixed + [variant() for _ in range(max(0, n - len(fixed)))]


# =============================================================================== the classes
def json_bodies(t: Target, n: int, rng: random.Random) -> list[Case]:
    """Bodies that are not the JSON ``/api`` takes: truncated, wrong types, missing keys, deep nesting, empty."""
    bad: list[tuple[str, bytes]] = [
        ("empty body", b""), ("whitespace body", b" \r\n\t "),
        *[("truncated", x) for x in (b"{", b'{"text"', b'{"text":', b'{"text": "abc', b'{"text": "abc"', b'["abc"',
                                      b'"abc', b'{"text": "\\u12', b'{"text": "\\')],
        *[("wrong type for text", jbody({"text": v})) for v in (None, 1, 1.5, True, [], {}, ["a"], {"text": "a"})],
        *[("missing text", jbody(v)) for v in ({}, {"txt": "a"}, {"texts": ["a"]}, {"Text": "a"})],
        *[("not a string or object", jbody(v)) for v in (None, 0, True, [], ["a"], [1, 2])],
        *[("non-standard number", x) for x in (b"NaN", b"Infinity", b"-Infinity", b'{"text": NaN}')],
        ("deep nesting, unbalanced", b"[" * 100_000), ("deep nesting", b"[" * 50_000 + b"]" * 50_000),
        ("deep nesting", b'{"a":' * 30_000 + b"1" + b"}" * 30_000),
        ("deep nesting in text", b'{"text": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"),
        ("huge integer", b'{"text": 1' + b"0" * 5000 + b"}"), ("huge float", b'{"text": 1e999999}'),
        ("trailing garbage", b'{"text": "a"} xyz'), ("two documents", b'{"text": "a"}{"text": "b"}'),
        ("single quotes", b"{'text': 'a'}"), ("comment", b'// c\n{"text": "a"}'),
        ("unescaped control character", b'{"text": "a\x01b"}'), ("bare word", b"text"),
        ("trailing comma", b'{"text": "a",}'), ("unquoted key", b'{text: "a"}'),
    ]
    fixed = [Case(kind, raw_api(t, body), expect=(400,), must_answer=True) for kind, body in bad]
    for kind, body in [("duplicate key, last a string", b'{"text": 1, "text": "\xec\x84\x9c\xec\x9a\xb8"}'),
                       ("extra keys", jbody({"text": "서울", "extra": [1, 2, 3], "texts": 5})),
                       ("escapes", b'"\\n\\t\\u0041\\u00e9\\uc11c\\uc6b8"'),
                       ("padded with whitespace", b" " * 5000 + jbody({"text": "서울"}) + b"\n" * 5000)]:
        fixed.append(Case(kind, raw_api(t, body), expect=(200,), must_answer=True))

    def variant() -> Case:
        base = jbody({"text": _text(rng)}, ascii_only=rng.random() < 0.5)
        op = rng.randrange(5)
        if op == 0:
            return Case("truncated (random)", raw_api(t, base[: rng.randrange(1, len(base))]), expect=(400,))
        if op == 1:
            i = rng.randrange(len(base))
            flipped = base[:i] + bytes([rng.choice(b'{}[]",:\\ 0anu')]) + base[i + 1:]
            return Case("one byte changed (random)", raw_api(t, flipped))
        if op == 2:
            v = _random_json(rng, strings=False)
            return Case("wrong type for text (random)", api(t, {"text": v}), expect=(400,))
        if op == 3:
            d = rng.randint(1, 3000)
            opener, closer = (b"[", b"]") if rng.random() < 0.5 else (b'{"text":', b"}")
            body = opener * d + b'"x"' + closer * d
            return Case("nested (random depth)", raw_api(t, body), expect=(400,) if opener == b"[" or d > 1 else ())
        key = rng.choice(["txt", "TEXT", "texts", "", "text ", " text", "t"])
        return Case("missing text (random key)", api(t, {key: _text(rng)}), expect=(400,))

    return _fill(fixed, n, variant)


_INVALID_UTF8 = [b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xe1\x80", b"\xed\xa0\x80",
                 b"\xed\xbf\xbf", b"\xf8\x88\x80\x80\x80", b"\xf4\x90\x80\x80", b"\x80", b"\xbf\xbf", b"\xc1\xbf"]


def encodings(t: Target, n: int, rng: random.Random) -> list[Case]:
    """Bodies that are not UTF-8 JSON: invalid UTF-8, UTF-16/32, NUL and control bytes, lone surrogate
    escapes, charset parameters that say something else."""
    text = "서울에서 만나요"
    fixed = [Case(f"invalid UTF-8 {seq!r}", raw_api(t, b'{"text": "a' + seq + b'b"}'), expect=(400,), must_answer=True)
             for seq in _INVALID_UTF8]
    for codec in ("utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le"):
        fixed.append(Case(f"body in {codec}", raw_api(t, json.dumps({"text": text}, ensure_ascii=False).encode(codec)),
                          expect=(400,), must_answer=True))
    for codec in ("cp949", "euc-kr", "iso-2022-kr"):
        fixed.append(Case(f"body in {codec}", raw_api(t, json.dumps({"text": text}, ensure_ascii=False).encode(codec))))
    fixed += [
        Case("NUL before the JSON", raw_api(t, b"\x00" + jbody({"text": text})), expect=(400,), must_answer=True),
        Case("NUL after the JSON", raw_api(t, jbody({"text": text}) + b"\x00"), expect=(400,), must_answer=True),
        Case("raw NUL inside the string", raw_api(t, b'{"text": "a\x00b"}'), expect=(400,), must_answer=True),
        Case("raw control bytes inside the string", raw_api(t, b'{"text": "\x07\x08\x1b[31m"}'), expect=(400,),
             must_answer=True),
        Case("escaped NUL and control characters", raw_api(t, b'{"text": "a\\u0000b\\u0007c\\u001bd"}'), expect=(200,),
             must_answer=True),
        Case("escaped surrogate pair", raw_api(t, b'{"text": "\\ud83d\\ude00 \\uc11c\\uc6b8"}'), expect=(200,),
             must_answer=True),
        Case("UTF-8 BOM before the JSON", raw_api(t, b"\xef\xbb\xbf" + jbody({"text": text})), expect=(200,),
             must_answer=True),
        Case("two UTF-8 BOMs", raw_api(t, b"\xef\xbb\xbf\xef\xbb\xbf" + jbody({"text": text})), expect=(400,),
             must_answer=True),
        Case("UTF-16 BOM before UTF-8 JSON", raw_api(t, b"\xff\xfe" + jbody({"text": text})), expect=(400,),
             must_answer=True),
        Case("CESU-8 surrogates", raw_api(t, b'{"text": "\xed\xa0\xbd\xed\xb8\x80"}'), expect=(400,), must_answer=True),
    ]
    for s in ("\\ud800", "\\udc00", "a\\udfffb", "\\ud83d", "\\ude00\\ud83d", "\\ud800\\ud800"):
        fixed.append(Case("lone surrogate escape", raw_api(t, b'{"text": "' + s.encode() + b'"}'), expect=(400,),
                          must_answer=True))
        fixed.append(Case("lone surrogate escape in a batch",
                          raw_api(t, b'{"texts": ["ok", "' + s.encode() + b'"]}', "/api/batch"), expect=(400,),
                          must_answer=True))
        fixed.append(Case("lone surrogate escape, bare string", raw_api(t, b'"' + s.encode() + b'"'), expect=(400,),
                          must_answer=True))
    for ctype in ("application/json; charset=utf-16", "application/json; charset=latin-1", "application/json; charset=",
                  'application/json; charset="utf-8"', "application/json; charset=klingon", "application/json;;charset",
                  "text/plain; charset=euc-kr", "application/json; charset=utf-8; charset=ascii",
                  "application/json; charset=" + "x" * 2000):
        fixed.append(Case(f"charset parameter ({ctype[:40]})", raw_api(t, jbody({"text": text}), content_type=ctype),
                          expect=(200,), must_answer=True))
    fixed.append(Case("latin-1 body, latin-1 charset", raw_api(t, '{"text": "café"}'.encode("latin-1"),
                                                               content_type="application/json; charset=latin-1"),
                      expect=(400,), must_answer=True))

    def variant() -> Case:
        body = jbody({"text": _text(rng)})
        op = rng.randrange(4)
        if op == 0:
            i = rng.randrange(10, len(body) - 2)  # inside the string
            return Case("invalid UTF-8 inserted (random)", raw_api(t, body[:i] + rng.choice(_INVALID_UTF8) + body[i:]),
                        expect=(400,))
        if op == 1:
            codec = rng.choice(["utf-16", "utf-16-be", "utf-32", "utf-32-be"])
            return Case("UTF-16/32 body (random)", raw_api(t, body.decode().encode(codec)), expect=(400,))
        if op == 2:
            esc = "".join(rng.choice(["\\ud800", "\\udbff", "\\udc00", "\\udfff", "a", "\\uc11c"]) for _ in range(4))
            lone = any(e in esc for e in ("d800", "dbff", "dc00", "dfff"))
            return Case("surrogate escapes (random)", raw_api(t, b'{"text": "' + esc.encode() + b'"}'),
                        expect=() if not lone else (400, 200))
        ctl = bytes(rng.randrange(0, 32) for _ in range(rng.randint(1, 5)))
        i = rng.randrange(10, len(body) - 2)
        return Case("raw control bytes in the string (random)", raw_api(t, body[:i] + ctl + body[i:]), expect=(400,))

    return _fill(fixed, n, variant)


def headers(t: Target, n: int, rng: random.Random) -> list[Case]:
    """Header trouble: Content-Type missing or wrong, Content-Length bad, negative, duplicated or wrong,
    Transfer-Encoding, huge values, many headers, bad names, folding, Expect."""
    body = jbody({"text": "서울"})
    fixed = [
        Case("no Content-Type", raw_api(t, body, content_type=None), expect=(200,), must_answer=True),
        *[Case(f"Content-Type {ct}", raw_api(t, body, content_type=ct), expect=(200,), must_answer=True)
          for ct in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                     "application/xml", ";;;", "", "application/json" + " " * 1000, "*/*")],
        Case("no Content-Length, a body", raw_api(t, body, length=None)),
        *[Case(f"Content-Length {v!r}", raw_api(t, body, length=v), mode="wait-shut")
          for v in ("-1", "abc", "1e3", "0x10", " 7", "+7", "7, 7", "99999999999999999999999", "", "7.0", "\xb9")],
        Case("Content-Length shorter than the body", raw_api(t, body, length=len(body) - 3), mode="wait-shut"),
        Case("Content-Length longer than the body", raw_api(t, body, length=len(body) + 50), mode="shut"),
        Case("duplicate Content-Length, same", raw_api(t, body, headers=[("Content-Length", str(len(body)))])),
        Case("duplicate Content-Length, different", raw_api(t, body, headers=[("Content-Length", "3")]),
             mode="wait-shut"),
        Case("Transfer-Encoding: chunked", request("POST", "/api", b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n",
                                                   auth=t.auth, length=None,
                                                   headers=[("Transfer-Encoding", "chunked")]),
             expect=(200,), must_answer=True),
        Case("chunked, bad chunk size", request("POST", "/api", b"zz\r\n" + body + b"\r\n0\r\n\r\n", auth=t.auth,
                                                length=None, headers=[("Transfer-Encoding", "chunked")]),
             mode="wait-shut"),
        Case("chunked, no last chunk", request("POST", "/api", b"%x\r\n" % len(body) + body + b"\r\n", auth=t.auth,
                                               length=None, headers=[("Transfer-Encoding", "chunked")]), mode="shut"),
        *[Case(f"Transfer-Encoding: {te}", raw_api(t, body, headers=[("Transfer-Encoding", te)]), mode="wait-shut")
          for te in ("gzip", "chunked, gzip", "identity", "Chunked", "xchunked", "chunked\x00")],
        Case("Transfer-Encoding and Content-Length", request(
            "POST", "/api", b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n", auth=t.auth, length=len(body),
            headers=[("Transfer-Encoding", "chunked")]), mode="wait-shut"),
        *[Case(f"header value of {k} KiB", raw_api(t, body, headers=[("X-Big", "a" * (k * 1024))]),
               expect=(200,) if k < 30 else (431,), must_answer=k < 30) for k in (1, 8, 24, 40, 100)],
        Case("header name of 8 KiB", raw_api(t, body, headers=[("X-" + "n" * 8192, "1")]), expect=(200,)),
        *[Case(f"{k} headers", raw_api(t, body, headers=[(f"X-H{i}", "v") for i in range(k)]),
               expect=(200,) if k < 2000 else (431,), must_answer=k < 2000) for k in (100, 1000, 5000)],
        *[Case(f"bad header name {name!r}", raw_api(t, body, headers=[(name, "x")]), mode="wait-shut")
          for name in (b"Bad Name", b"", b"X-\xc3\xa9", b"X:Y", b"X\x00", b"(x)", b"X-\x7f", b" Leading")],
        Case("header line without a colon", raw_api(t, body, headers=[(b"NoColonHere", b"")]).replace(b"NoColonHere: ",
                                                                                                   b"NoColonHere"),
             mode="wait-shut"),
        Case("obsolete line folding", raw_api(t, body, headers=[("X-Fold", "a\r\n folded")]), mode="wait-shut"),
        Case("NUL in a header value", raw_api(t, body, headers=[("X-Nul", b"a\x00b")]), mode="wait-shut"),
        Case("bare CR in a header value", raw_api(t, body, headers=[("X-Cr", b"a\rb")]), mode="wait-shut"),
        Case("Expect: 100-continue", raw_api(t, body, headers=[("Expect", "100-continue")]), expect=(200,),
             must_answer=True),
        Case("Expect: something else", raw_api(t, body, headers=[("Expect", "teapot")]), mode="wait-shut"),
        Case("no Host", raw_api(t, body, host=False), expect=(200,), must_answer=True),
        Case("two Hosts", raw_api(t, body, headers=[("Host", "example.com")])),
        Case("HTTP/1.0, no Host", raw_api(t, body, host=False, version="HTTP/1.0"), expect=(200,), must_answer=True),
        Case("Connection: close", raw_api(t, body, headers=[("Connection", "close")]), expect=(200,), must_answer=True),
        Case("Upgrade: h2c", raw_api(t, body, headers=[("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"),
                                                      ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")])),
        Case("Upgrade: websocket", raw_api(t, body, headers=[("Connection", "Upgrade"), ("Upgrade", "websocket"),
                                                            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")])),
        Case("Content-Encoding: gzip (not gzipped)", raw_api(t, body, headers=[("Content-Encoding", "gzip")])),
    ]

    def variant() -> Case:
        op = rng.randrange(4)
        if op == 0:
            name = "".join(rng.choice("abcXYZ-_:;() @\t") for _ in range(rng.randint(1, 20))).encode()
            value = bytes(rng.randrange(32, 256) for _ in range(rng.randint(0, 200)))
            return Case("random header (random)", raw_api(t, body, headers=[(name, value)]), mode="wait-shut")
        if op == 1:
            v = rng.choice([str(rng.randint(-10**6, 10**6)), str(rng.randint(0, len(body) * 2)),
                            "".join(rng.choice("0123456789abcx-+ ,.") for _ in range(rng.randint(1, 12)))])
            return Case("random Content-Length (random)", raw_api(t, body, length=v), mode="wait-shut")
        if op == 2:
            ct = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz/;=-+. \"") for _ in range(rng.randint(0, 60)))
            return Case("random Content-Type (random)", raw_api(t, body, content_type=ct), expect=(200,))
        k = rng.randint(1, 300)
        return Case("many headers (random count)", raw_api(t, body, headers=[(f"X-R{i}", "v" * rng.randint(0, 50))
                                                                          for i in range(k)]), expect=(200,))

    return _fill(fixed, n, variant)


def sizes(t: Target, n: int, rng: random.Random) -> list[Case]:
    """Limits: a text over the longest allowed (413), a batch over the largest (413), a body over the
    request limit (413 from waitress, before the body is read), empty and whitespace texts (200)."""
    L, B = t.max_text_length, t.max_batch_size
    fixed = [
        Case("text one over the limit", api(t, {"text": "가" * (L + 1)}), expect=(413,), must_answer=True),
        Case("text far over the limit", api(t, {"text": "a" * (L * 3)}), expect=(413,), must_answer=True),
        Case("bare string over the limit", api(t, "나" * (L + 1)), expect=(413,), must_answer=True),
        Case("text of exactly the limit", api(t, {"text": ("서울 " * L)[:L]}), expect=(200,), must_answer=True),
        Case("batch one over the limit", api(t, {"texts": ["a"] * (B + 1)}, "/api/batch"), expect=(413,),
             must_answer=True),
        Case("batch of 10,000", api(t, {"texts": ["a"] * 10_000}, "/api/batch"), expect=(413,), must_answer=True),
        Case("batch with one text over the limit", api(t, {"texts": ["a", "b" * (L + 1)]}, "/api/batch"),
             expect=(413,), must_answer=True),
        Case("batch of exactly the limit", api(t, {"texts": ["서울"] * B}, "/api/batch"), expect=(200,),
             must_answer=True),
        Case("body announced over the limit", request("POST", "/api", auth=t.auth, length=t.body_limit + 1),
             expect=(413,), must_answer=True),
        Case("body announced at 1 TB", request("POST", "/api", auth=t.auth, length=10**12), expect=(413,),
             must_answer=True),
        Case("body announced over the limit, batch", request("POST", "/api/batch", auth=t.auth, length=t.body_limit * 2),
             expect=(413,), must_answer=True),
        Case("body over the limit, sent", raw_api(t, b'"' + b"a" * t.body_limit + b'"')),
        Case("chunked body over the limit, sent", request(
            "POST", "/api", b"".join(b"%x\r\n" % 65536 + b"a" * 65536 + b"\r\n" for _ in range(t.body_limit // 65536 + 2))
            + b"0\r\n\r\n", auth=t.auth, length=None, headers=[("Transfer-Encoding", "chunked")])),
        *[Case("empty or whitespace text", api(t, {"text": s}), expect=(200,), must_answer=True, texts=(s,))
          for s in ("", " ", "\n\t", "\u3000", "\u00a0", " " * L, "\r\n" * (L // 2))],
        *[Case("empty or whitespace bare string", api(t, s), expect=(200,), must_answer=True, texts=(s,))
          for s in ("", "   ")],
        Case("whitespace over the limit", api(t, {"text": " " * (L + 1)}), expect=(413,), must_answer=True),
        Case("batch of empty texts", api(t, {"texts": [""] * B}, "/api/batch"), expect=(200,), must_answer=True,
             texts=("",) * B),
        Case("batch of whitespace texts", api(t, {"texts": [" ", "\t", "\n"]}, "/api/batch"), expect=(200,),
             must_answer=True, texts=(" ", "\t", "\n")),
    ]

    def variant() -> Case:
        op = rng.randrange(5)
        if op == 0:
            k = L + rng.randint(1, 5000)
            return Case("text over the limit (random length)", api(t, {"text": "".join(rng.choice("가나 ab") for _ in
                                                                                       range(k))}), expect=(413,))
        if op == 1:
            k = rng.randint(0, L)
            s = "".join(rng.choice(" \t\n\u3000") for _ in range(k))
            return Case("whitespace text within the limit (random length)", api(t, {"text": s}), expect=(200,), texts=(s,))
        if op == 2:
            k = B + rng.randint(1, 3 * B)
            return Case("batch over the limit (random size)", api(t, {"texts": ["a"] * k}, "/api/batch"), expect=(413,))
        if op == 3:
            return Case("body announced over the limit (random)", request(
                "POST", rng.choice(["/api", "/api/batch"]), auth=t.auth, length=rng.randint(t.body_limit + 1, 10**13)),
                expect=(413,))
        texts = tuple(rng.choice(["", " ", "a", "서울"]) for _ in range(rng.randint(0, B)))
        return Case("batch within the limit (random size)", api(t, {"texts": list(texts)}, "/api/batch"),
                    expect=(200,), texts=texts)

    return _fill(fixed, n, variant)


_METHODS = ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "CONNECT", "FOO", "get", "post", "PROPFIND",
            "M" * 300]
_PATHS = ["/api", "/api/batch", "/health", "/"]
_ODD_PATHS = ["/api/", "//api", "/api//", "/API", "/api%2fbatch", "/api/batch/", "/api/../health", "/%00", "/api%00",
              "/../../etc/passwd", "/api;x", "/api#frag", "/ｆｏｏ", "/%ff%fe", "/api?text=abc", "/api?&&&===",
              "/api/batch?texts=a&texts=b", "*", "http://127.0.0.1/api", "api", "/api/batch/../batch", "/\\api",
              "/static/../../x", "/index.html", "/favicon.ico", "/api\x01", "/%", "/%zz", "/" + "a" * 20_000,
              "/" + "b" * 40_000, "/api?" + "q=1&" * 5000]


def methods_paths(t: Target, n: int, rng: random.Random) -> list[Case]:
    """Every method on every route (GET/PUT/DELETE/PATCH/OPTIONS/HEAD/TRACE/unknown verbs), odd and very
    long paths, query strings."""
    body = jbody({"text": "서울"})
    fixed = []
    for m in _METHODS:
        for p in _PATHS:
            expect = (405,) if m in ("PUT", "DELETE", "PATCH", "TRACE") and p in ("/api", "/api/batch") else ()
            fixed.append(Case(f"{m[:10]} {p}", request(m, p, body if m != "HEAD" else b"", auth=t.auth), method=m,
                              expect=expect, must_answer=bool(expect)))
    fixed += [Case("GET /health", request("GET", "/health", content_type=None), method="GET", expect=(200,),
                   must_answer=True),
              Case("GET /", request("GET", "/", content_type=None), method="GET", expect=(200,), must_answer=True)]
    for p in _ODD_PATHS:
        for m in ("POST", "GET"):
            fixed.append(Case(f"{m} odd path", request(m, p, body if m == "POST" else b"", auth=t.auth), method=m,
                              mode="wait-shut"))

    def variant() -> Case:
        m = rng.choice(_METHODS + ["POST"] * 3)
        p = rng.choice(_PATHS + _ODD_PATHS[:20])
        if rng.random() < 0.4:
            p += "?" + "&".join(f"{rng.choice(['text', 'x', 'texts', ''])}={rng.randint(0, 99)}"
                                for _ in range(rng.randint(0, 5)))
        return Case("method x path (random)", request(m, p, body if m != "HEAD" else b"", auth=t.auth), method=m,
                    mode="wait-shut")

    return _fill(fixed, n, variant)


def batch_shapes(t: Target, n: int, rng: random.Random) -> list[Case]:
    """``/api/batch`` bodies of every wrong shape: ``texts`` not a list, mixed types, nested, empty, too many."""
    B = t.max_batch_size
    fixed = [Case(f"texts is {label}", api(t, {"texts": v}, "/api/batch"), expect=(400,), must_answer=True)
             for label, v in (("a string", "abc"), ("a number", 1), ("null", None), ("an object", {"a": "b"}),
                              ("a boolean", True))]
    fixed += [Case(f"body is {label}", api(t, v, "/api/batch"), expect=(400,), must_answer=True)
              for label, v in (("a list", ["a", "b"]), ("a string", "abc"), ("no texts", {"text": "a"}),
                               ("empty object", {}), ("null", None))]
    fixed += [Case(f"items: {label}", api(t, {"texts": v}, "/api/batch"), expect=(400,), must_answer=True)
              for label, v in (("a number", [1]), ("null", [None]), ("mixed", ["a", 1]), ("nested list", ["a", ["b"]]),
                               ("only lists", [["a"]]), ("objects", [{"text": "a"}]), ("booleans", [True, False]),
                               ("deep", [[[[[["a"]]]]]]), ("float", ["a", 1.5, "b"]))]
    fixed += [
        Case("texts is empty", api(t, {"texts": []}, "/api/batch"), expect=(200,), must_answer=True),
        Case("one text", api(t, {"texts": ["서울"]}, "/api/batch"), expect=(200,), must_answer=True, texts=("서울",)),
        Case("too many texts", api(t, {"texts": ["a"] * (B + 1)}, "/api/batch"), expect=(413,), must_answer=True),
        Case("too many non-strings", api(t, {"texts": [1] * (B * 3)}, "/api/batch"), expect=(413,), must_answer=True),
        Case("duplicate texts key", raw_api(t, b'{"texts": ["a"], "texts": 5}', "/api/batch"), expect=(400,),
             must_answer=True),
        Case("texts nested deep", raw_api(t, b'{"texts": ' + b"[" * 5000 + b"]" * 5000 + b"}", "/api/batch"),
             expect=(400,), must_answer=True),
        Case("extra keys", api(t, {"texts": ["a"], "text": "b", "x": None}, "/api/batch"), expect=(200,),
             must_answer=True, texts=("a",)),
    ]

    def variant() -> Case:
        k = rng.randint(0, 2 * B)
        items = [_text(rng)[: rng.randint(0, 40)] if rng.random() < 0.85 else _random_json(rng, strings=False)
                 for _ in range(k)]
        if k > B:
            expect: tuple[int, ...] = (413,)
        elif all(isinstance(x, str) for x in items):
            expect = (200, 503)
        else:
            expect = (400,)
        texts = tuple(items) if expect == (200, 503) else ()
        return Case("random items (random)", api(t, {"texts": items}, "/api/batch"), expect=expect, texts=texts)

    return _fill(fixed, n, variant)


_TLS_HELLO = bytes.fromhex("16030100a5010000a10303") + bytes(32) + bytes.fromhex("000020c02bc02fc02cc030cca9cca8c009c013"
                                                                                   "c00ac014009c009d002f0035c012000a0100")
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def protocol_garbage(t: Target, n: int, rng: random.Random) -> list[Case]:
    """Bytes that are not HTTP/1.1: random bytes, HTTP/0.9, the HTTP/2 preface, bare LF, absurd request
    lines, other protocols. Each is sent, and the connection half-closed when no answer comes."""
    body = jbody({"text": "서울"})
    valid = raw_api(t, body)
    lines = [b"GET", b"GET /", b"/ GET HTTP/1.1", b"GET / HTTP/1.1 extra", b"GET  /  HTTP/1.1", b"GET / HTTP/9.9",
             b"GET / HTTP/1.1.1", b"GET / FOO/1.1", b"GET / HTTP/", b"GET / http/1.1", b"G\x00T / HTTP/1.1",
             b"GET\t/\tHTTP/1.1", "ПОСТ /api HTTP/1.1".encode(), b"GET /" + b"a" * 20_000 + b" HTTP/1.1",
             b"GET /" + b"a" * 40_000 + b" HTTP/1.1", b" GET / HTTP/1.1", b"GET / HTTP/1.1\x00", b"\x16\x03\x01",
             b"POST /api HTTP/1.1 HTTP/1.1", b"POST /api HTTP/0.9", b"POST /api HTTP/2.0", b"POST /api HTTP/1.01",
             b"POST /api HTTP/01.1", b"POST /api HTTP/1.1" + b" " * 5000]
    fixed = [Case("absurd request line", ln + b"\r\nHost: x\r\n\r\n", mode="wait-shut") for ln in lines]
    fixed += [
        Case("HTTP/0.9", b"GET /\r\n", mode="wait-shut"), Case("HTTP/0.9 health", b"GET /health\r\n\r\n", mode="wait-shut"),
        Case("HTTP/2 preface", _H2_PREFACE, mode="wait-shut"),
        Case("HTTP/2 preface and SETTINGS", _H2_PREFACE + bytes.fromhex("000000040000000000"), mode="wait-shut"),
        Case("bare LF", valid.replace(b"\r\n", b"\n"), mode="wait-shut"),
        Case("bare CR", valid.replace(b"\r\n", b"\r"), mode="wait-shut"),
        Case("mixed LF and CRLF", valid.replace(b"\r\n", b"\n", 1), mode="wait-shut"),
        Case("TLS ClientHello", _TLS_HELLO, mode="wait-shut"), Case("SSH banner", b"SSH-2.0-OpenSSH_9.0\r\n", mode="wait-shut"),
        Case("SMTP", b"HELO example.com\r\nQUIT\r\n", mode="wait-shut"),
        Case("only CRLFs", b"\r\n" * 100, mode="wait-shut"),
        Case("blank lines, then a request", b"\r\n\r\n" + valid, mode="wait-shut"),
        Case("a request, then garbage", valid + bytes(range(256)), mode="wait-shut"),
        Case("pipelined: valid, garbage, valid", valid + b"GARBAGE\r\n\r\n" + valid, mode="wait-shut"),
        Case("NULs", b"\x00" * 4096, mode="wait-shut"),
        Case("0xff bytes", b"\xff" * 4096, mode="wait-shut"),
        Case("request line of 64 KiB, no end", b"GET /" + b"x" * 65536, mode="shut"),
        Case("headers never end", b"POST /api HTTP/1.1\r\nX: " + b"y" * 10_000, mode="shut"),
        Case("nothing", b"", mode="shut"),
    ]

    def variant() -> Case:
        op = rng.randrange(3)
        if op == 0:
            data = bytes(rng.randrange(256) for _ in range(rng.randint(1, 2048)))
            return Case("random bytes (random)", data, mode="shut")
        if op == 1:
            head_end = valid.index(b"\r\n\r\n")
            data = bytearray(valid)
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(head_end)] = rng.randrange(256)
            return Case("request head with random bytes changed (random)", bytes(data), mode="wait-shut")
        words = [b"GET", b"POST", b"/api", b"HTTP/1.1", b"\r\n", b" ", b":", b"Host", b"\n", b"\x00", b"\r\n\r\n"]
        return Case("shuffled HTTP words (random)", b"".join(rng.choice(words) for _ in range(rng.randint(1, 30))),
                    mode="wait-shut")

    # What the server makes of these is unknown (a GET of the page may come out): "?" is no POST, so
    # only error answers must be JSON.
    return [replace(c, method="?") for c in _fill(fixed, n, variant)]


def slow_clients(t: Target, n: int, rng: random.Random) -> list[Case]:
    """Connections held open while valid requests must still be answered: requests trickled a byte at
    a time, stalled mid-request line, mid-headers or mid-body, idle connections, answers never read."""
    body = jbody({"text": "서울"})
    kinds = [
        Case("headers trickled", b"POST /api HTTP/1.1\r\nHost: x\r\n", mode="trickle", tail=b"X-Slow: " + b"a" * 65536),
        Case("body trickled", request("POST", "/api", auth=t.auth, length=100_000), mode="trickle",
             tail=b'"' + b"b" * 99_998 + b'"'),
        Case("chunked body trickled", request("POST", "/api", auth=t.auth, length=None,
                                              headers=[("Transfer-Encoding", "chunked")]),
             mode="trickle", tail=b"1\r\nc\r\n" * 10_000),
        Case("request line trickled", b"P", mode="trickle", tail=b"OST /api" + b"i" * 60_000),
        Case("idle connection", b"", mode="stall"),
        Case("stalled in the request line", b"POS", mode="stall"),
        Case("stalled in the headers", b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Le", mode="stall"),
        Case("stalled halfway through the body", request("POST", "/api", body + b" " * 1000, auth=t.auth)[:-500],
             mode="stall"),
        Case("answer never read", api(t, {"texts": [_text(rng) for _ in range(8)]}, "/api/batch"), mode="stall"),
    ]
    return [kinds[i % len(kinds)] for i in range(max(n, len(kinds)))]


def connection_floods(t: Target, n: int, rng: random.Random) -> list[Case]:
    """Hundreds of connections opened at once, then closed at once (FIN or reset), half-closed, or
    carrying a whole request closed unread or read (those must be answered 200)."""
    valid = api(t, {"text": KNOWN_TEXT})
    partial = b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{"
    kinds = [Case("opened and closed", b"", mode="open-close"), Case("reset", b"", mode="rst"),
             Case("partial request, reset", partial, mode="rst"), Case("partial request, half-closed", partial,
                                                                       mode="half-close"),
             Case("whole request, half-closed", valid, mode="half-close"),
             Case("whole request, closed unread", valid, mode="send-close"),
             Case("whole request, read", valid, mode="send-read", expect=(200,), must_answer=True,
                  texts=(KNOWN_TEXT,))]
    return [kinds[i % len(kinds)] for i in range(max(n, len(kinds)))]


def authorization(t: Target, n: int, rng: random.Random) -> list[Case]:
    """The token: missing, wrong, malformed ``Bearer`` headers, huge and non-ASCII tokens (401 JSON with
    ``WWW-Authenticate``), and the right token in the shapes the server accepts (200)."""
    body = jbody({"text": "서울"})
    tok = t.token
    wrong: list[tuple[str, Bytes]] = [
        ("empty", ""), ("scheme only", "Bearer"), ("scheme and a space", "Bearer "), ("wrong token", "Bearer wrong"),
        ("Basic scheme, right token", f"Basic {tok}"), ("Token scheme, right token", f"Token {tok}"),
        ("no space after Bearer", f"Bearer{tok}"), ("right token, then a word", f"Bearer {tok} extra"),
        ("the token less its last character", f"Bearer {tok[:-1]}"), ("the token and one more character",
                                                                       f"Bearer {tok}x"),
        ("the token upper-cased, one more character", f"Bearer {tok.upper()}x"), ("a tab after Bearer", f"Bearer\t{tok}"),
        ("the token reversed", f"Bearer {tok[::-1]}x"), ("a token of 1 KiB", "Bearer " + "A" * 1024),
        ("a token of 16 KB", "Bearer " + "B" * 16_000), ("a Korean token", "Bearer 토큰"),
        ("the token and an accented letter", "Bearer " + tok + "é"), ("latin-1 bytes", b"Bearer \xe9\xff\xfe"),
        ("UTF-8 bytes", b"Bearer caf\xc3\xa9"), ("null", "Bearer null"), ("undefined", "Bearer undefined"),
        ("the token in quotes", f'Bearer "{tok}"'), ("the token and a comma", f"Bearer {tok},"),
        ("a comma after Bearer", f"Bearer, {tok}"), ("Negotiate", "Negotiate YIIB"), ("Digest", "Digest username=x"),
        ("the token without a scheme", f"{tok}"), ("a zero-width space before the token", "Bearer \u200b" + tok),
    ]
    fixed = [Case(f"Authorization: {label}", request("POST", "/api", body, auth=v), expect=(401,), must_answer=True)
             for label, v in wrong]
    fixed += [
        Case("no Authorization", request("POST", "/api", body), expect=(401,), must_answer=True),
        Case("no Authorization, batch", request("POST", "/api/batch", jbody({"texts": ["a"]})), expect=(401,),
             must_answer=True),
        Case("wrong token, batch", request("POST", "/api/batch", jbody({"texts": ["a"]}), auth="Bearer x"),
             expect=(401,), must_answer=True),
        Case("no token, bad JSON", request("POST", "/api", b"{"), expect=(401,), must_answer=True),
        Case("two Authorization headers, both right", request("POST", "/api", body, auth=t.auth,
                                                              headers=[("Authorization", t.auth)]), expect=(401,),
             must_answer=True),
        Case("two Authorization headers, wrong then right", request("POST", "/api", body, auth="Bearer x",
                                                                    headers=[("Authorization", t.auth)]),
             expect=(401,), must_answer=True),
        Case("token of 40 KiB", request("POST", "/api", body, auth="Bearer " + "C" * 40_960), expect=(431,)),
        Case("NUL in the token", request("POST", "/api", body, auth=b"Bearer a\x00b"), mode="wait-shut",
             expect=(400, 401)),
        Case("control characters in the token", request("POST", "/api", body, auth=b"Bearer a\x01\x7fb"),
             mode="wait-shut", expect=(400, 401)),
        Case("lower-case scheme, right token", request("POST", "/api", body, auth=f"bearer {tok}"), expect=(200,),
             must_answer=True),
        Case("spaces around, right token", request("POST", "/api", body, auth=f"Bearer   {tok}  "), expect=(200,),
             must_answer=True),
        Case("right token on GET /api", request("GET", "/api", auth=t.auth), method="GET", expect=(405,)),
        Case("wrong token on /health", request("GET", "/health", auth="Bearer x"), method="GET", expect=(200,),
             must_answer=True),
    ]

    def variant() -> Case:
        op = rng.randrange(3)
        if op == 0:
            alphabet = "abcXYZ0189-_.~+/=토큰é€😀 "
            s = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 300)))
            return Case("random token (random)", request("POST", rng.choice(["/api", "/api/batch"]),
                                                         jbody({"texts": ["a"]}), auth="Bearer " + s), expect=(401,))
        if op == 1:
            i = rng.randrange(len(tok))
            c = rng.choice([ch for ch in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_" if ch != tok[i]])
            return Case("token with one character changed (random)", request("POST", "/api", body,
                                                                             auth=f"Bearer {tok[:i]}{c}{tok[i + 1:]}"),
                        expect=(401,))
        scheme = "".join(ch.upper() if rng.random() < 0.5 else ch for ch in "bearer")
        return Case("scheme in random case, right token (random)", request("POST", "/api", body,
                                                                           auth=f"{scheme} {tok}"), expect=(200,))

    return _fill(fixed, n, variant)


_WEIRD = ["😀", "🇰🇷", "👨\u200d👩\u200d👧\u200d👦", "👍🏽", "1\ufe0f\u20e3", "e\u0301", "\u0301", "\u200d", "\u200c",
          "\u200b", "\u2060", "\ufeff", "مرحبا", "שלום", "\u202e", "\u202d", "\u200e", "\u200f", "\u2028", "\u2029",
          "\x85", "\t", "\x0b", "\x0c", "\x01", "ㄱㄴㄷ", "ﾊﾝｸﾞﾙ", "ＡＢＣ１２３", "𠀀𠀁", "𝐀𝐁𝐂", "𝄞", "葛\U000E0100", "\ue000",
          "\uffff", "\ufffe", "\U0010ffff", "Ωμέγα", "Привет", "สวัสดี", "नमस्ते", "漢字", "ｶﾀｶﾅ", "\u00ad", "\u034f",
          "\u115f\u1160", "\u3164", "﷽", "Z\u0351\u0360\u0361\u0489"]


def _check_texts() -> list[str]:
    return ["서울 😀 부산", "🇰🇷 대한민국", "👨\u200d👩\u200d👧\u200d👦 가족", "김철수\u0301는 서울에", "e\u0301" * 50,
            "가" + "\u0300" * 500, "\u200d".join("삼성전자"), "\u200b서울\u200b", "مرحبا 서울 שלום",
            "\u202e서울에서\u202c 만났다", "\ufeff서울", "서\ufeff울", "\ufeff", unicodedata.normalize("NFD", KNOWN_TEXT),
            "ㄱㄴㄷ ﾊﾝｸﾞﾙ ＡＢＣ１２３", "𠀀𠀁 𝐀𝐁𝐂 𝄞", "葛\U000E0100 서울", "\ue000\uffff\ufffe\U0010ffff",
            "서울\u2028부산\u2029대구", "a\x85b\x0bc\x0cd", "\x01\x02\x03", "Ωμέγα Привет สวัสดี नमस्ते 漢字",
            "😀" * 2000, "\u00ad\u034f\u3164", "﷽" * 10, " 😀 ", "\t서울\t", KNOWN_TEXT + "\u200d" * 100]


def unicode_texts(t: Target, n: int, rng: random.Random) -> list[Case]:
    """Valid but unusual texts (emoji, combining marks, zero-width joiners, RTL, BOM inside the text,
    astral and private-use characters): each must be 200 and echo the text, its entity offsets cutting
    the entity's text out of it."""
    fixed = []
    for i, s in enumerate(_check_texts()):
        fixed.append(Case("unusual text", api(t, {"text": s}, ascii_only=i % 2 == 1), expect=(200,), must_answer=True,
                          texts=(s,)))
    fixed.append(Case("unusual texts in a batch", api(t, {"texts": _check_texts()[:t.max_batch_size]}, "/api/batch"),
                      expect=(200, 503), must_answer=True, texts=tuple(_check_texts()[:t.max_batch_size])))

    def rand_text() -> str:
        parts = []
        for _ in range(rng.randint(1, 12)):
            parts.append(rng.choice(_WEIRD) if rng.random() < 0.6 else _text(rng)[: rng.randint(1, 12)])
        return "".join(parts)

    def variant() -> Case:
        if rng.random() < 0.8:
            s = rand_text()
            return Case("unusual text (random)", api(t, {"text": s}, ascii_only=rng.random() < 0.5), expect=(200,),
                        must_answer=True, texts=(s,))
        texts = tuple(rand_text() for _ in range(rng.randint(1, 6)))
        return Case("unusual texts in a batch (random)", api(t, {"texts": list(texts)}, "/api/batch"),
                    expect=(200, 503), must_answer=True, texts=texts)

    return _fill(fixed, n, variant)


Builder = Callable[[Target, int, random.Random], list[Case]]
#: The classes in the order bench/fuzz.py runs them, with their request counts (full run, --quick).
CLASSES: dict[str, tuple[Builder, int, int]] = {
    "json_bodies": (json_bodies, 1500, 120),
    "encodings": (encodings, 1000, 90),
    "headers": (headers, 1000, 90),
    "sizes": (sizes, 400, 50),
    "methods_paths": (methods_paths, 1000, 110),
    "batch_shapes": (batch_shapes, 800, 70),
    "protocol_garbage": (protocol_garbage, 1200, 100),
    "slow_clients": (slow_clients, 400, 60),
    "connection_floods": (connection_floods, 1500, 300),
    "authorization": (authorization, 800, 70),
    "unicode_texts": (unicode_texts, 600, 60),
}


def build(name: str, target: Target, quick: bool, seed: int) -> list[Case]:
    """The cases of class ``name``: the same bytes for the same target, mode and seed."""
    builder, full, small = CLASSES[name]
    return builder(target, small if quick else full, random.Random(f"{seed}-{name}"))


def bad_request_families(target: Target, seed: int) -> dict[str, list[Case]]:
    """bench/soak.py's bad requests, from four fuzz classes: each a well-formed HTTP request with one
    certain answer (bad JSON 400, oversized text 413, wrong token 401, bad method 405)."""
    def pick(name: str, status: int, n: int) -> list[Case]:
        cases = CLASSES[name][0](target, n, random.Random(f"{seed}-soak-{name}"))
        return [c for c in cases if c.expect == (status,) and c.mode == "send"]

    families = {
        "bad JSON": pick("json_bodies", 400, 200),
        "oversized text": [c for c in pick("sizes", 413, 200) if c.kind.startswith(("text", "bare string"))],
        "wrong token": pick("authorization", 401, 200),
        "bad method": pick("methods_paths", 405, 0),
    }
    for name, cases in families.items():
        assert cases, name
    return families


# =============================================================================== sending and reading
@dataclass
class Answer:
    """What came back on one connection: an HTTP answer, nothing (closed), or a connection error."""

    status: Optional[int] = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    error: Optional[str] = None  # a connection error: its type (timeout, ConnectionResetError ...)
    send_error: Optional[str] = None  # the send failed (the answer, if any, was read after it)
    raw: bytes = b""  # bytes that came back but were no HTTP answer
    latency_s: float = 0.0


def _recv(sock: socket.socket, buf: bytearray) -> bool:
    chunk = sock.recv(65536)
    if not chunk:
        return False
    buf += chunk
    if len(buf) > MAX_ANSWER_BYTES:
        raise OSError("answer too large")
    return True


def read_answer(sock: socket.socket, method: str, buf: Optional[bytearray] = None) -> Answer:
    """One HTTP answer from ``sock`` (interim 1xx answers skipped): by Content-Length, chunked, or to the close."""
    buf = buf if buf is not None else bytearray()
    while True:
        end = buf.find(b"\r\n\r\n")
        while end < 0:
            if not _recv(sock, buf):
                return Answer(raw=bytes(buf))  # closed: nothing, or something that is no HTTP answer
            end = buf.find(b"\r\n\r\n")
        head = bytes(buf[:end]).decode("latin-1").split("\r\n")
        del buf[: end + 4]
        parts = head[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            return Answer(raw="\r\n".join(head).encode("latin-1"))
        status = int(parts[1])
        hdrs: dict[str, str] = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            key = name.strip().lower()
            hdrs[key] = f"{hdrs[key]}, {value.strip()}" if key in hdrs else value.strip()
        if 100 <= status < 200:
            continue
        if method == "HEAD" or status in (204, 304):
            return Answer(status, hdrs)
        if "content-length" in hdrs and hdrs["content-length"].isdigit():
            n = int(hdrs["content-length"])
            while len(buf) < n and _recv(sock, buf):
                pass
            return Answer(status, hdrs, bytes(buf[:n]))
        while _recv(sock, buf):
            pass
        body = bytes(buf)
        if "chunked" in hdrs.get("transfer-encoding", "").lower():
            body = _dechunk(body)
        return Answer(status, hdrs, body)


def _dechunk(data: bytes) -> bytes:
    out, i = bytearray(), 0
    while True:
        j = data.find(b"\r\n", i)
        if j < 0:
            return bytes(out)
        size = int(data[i:j].split(b";")[0] or b"0", 16)
        if size == 0:
            return bytes(out)
        out += data[j + 2: j + 2 + size]
        i = j + 2 + size + 2


def connect(port: int, timeout: float = ANSWER_TIMEOUT_S) -> socket.socket:
    return socket.create_connection((HOST, port), timeout=timeout)


def reset(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0) instead of a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def exchange(port: int, case: Case, timeout: float = ANSWER_TIMEOUT_S) -> Answer:
    """``case`` on a fresh connection, sent as its mode says, and what came back."""
    t0 = time.perf_counter()
    try:
        sock = connect(port, timeout)
    except OSError as exc:
        return Answer(error=f"connect: {type(exc).__name__}")
    with sock:
        send_error = None
        try:
            sock.sendall(case.data)
            if case.mode == "shut":
                sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            send_error = type(exc).__name__  # the server may have answered (413/431) and closed: read it
        buf = bytearray()
        try:
            if case.mode == "wait-shut" and send_error is None:
                sock.settimeout(WAIT_S)
                try:
                    _recv(sock, buf)
                except socket.timeout:  # nothing yet: tell the server no more will come
                    sock.shutdown(socket.SHUT_WR)
                sock.settimeout(timeout)
            answer = read_answer(sock, case.method, buf)
        except socket.timeout:
            answer = Answer(error="timeout", raw=bytes(buf))
        except OSError as exc:
            answer = Answer(error=send_error or type(exc).__name__, raw=bytes(buf))
        answer.send_error = send_error
        answer.latency_s = time.perf_counter() - t0
        return answer


def known_request(token: str) -> tuple[bytes, dict[str, str]]:
    """The body and headers of the known valid request."""
    return (jbody({"text": KNOWN_TEXT}), {"Content-Type": "application/json", "Authorization": f"Bearer {token}"})


def probe(port: int, token: str, timeout: float = ANSWER_TIMEOUT_S) -> tuple[Optional[int], bytes, Optional[str]]:
    """The known valid request on a fresh ``http.client`` connection: (status, answer bytes, error)."""
    body, hdrs = known_request(token)
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("POST", "/api", body=body, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, resp.read(), None
    except (OSError, http.client.HTTPException) as exc:
        return None, b"", type(exc).__name__
    finally:
        conn.close()


def get_json(port: int, path: str, timeout: float = ANSWER_TIMEOUT_S) -> tuple[Optional[int], Any]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    except (OSError, http.client.HTTPException, ValueError):
        return None, None
    finally:
        conn.close()


def compare(got: bytes, baseline: bytes) -> str:
    """``byte-identical``, ``JSON-equal`` or ``different``."""
    if got == baseline:
        return "byte-identical"
    try:
        return "JSON-equal" if json.loads(got) == json.loads(baseline) else "different"
    except ValueError:
        return "different"


def float_difference(got: Any, want: Any) -> Optional[float]:
    """The largest difference between the numbers of two answers of the same structure, strings and
    integers equal (0.0 when none differ); None when they differ otherwise."""
    if isinstance(want, float) or isinstance(got, float):
        if isinstance(got, bool) or isinstance(want, bool) or not (isinstance(got, (int, float))
                                                                    and isinstance(want, (int, float))):
            return None
        return abs(float(got) - float(want))
    if isinstance(want, dict) or isinstance(want, list):
        if type(got) is not type(want) or len(got) != len(want):
            return None
        if isinstance(want, dict) and got.keys() != want.keys():
            return None
        pairs = [(got[k], want[k]) for k in want] if isinstance(want, dict) else list(zip(got, want))
        worst = 0.0
        for a, b in pairs:
            d = float_difference(a, b)
            if d is None:
                return None
            worst = max(worst, d)
        return worst
    return 0.0 if type(got) is type(want) and got == want else None


def same_prediction(got: Any, want: Any, tol: float = 1e-4) -> bool:
    """Two answers alike: the same structure, strings and integers, and numbers within ``tol`` (under
    micro-batching a probability may move in its 6th decimal, docs/serving.md)."""
    d = float_difference(got, want)
    return d is not None and d <= tol


def is_application_5xx(status: Optional[int], request_bytes: bytes) -> bool:
    """A 5xx that is not the server's deliberate 503 nor its 501 to an unsupported Transfer-Encoding."""
    if status is None or status < 500 or status == 503:
        return False
    return not (status == 501 and b"transfer-encoding" in request_bytes.lower())


def _answer_problem(case: Case, answer: Answer) -> Optional[str]:
    """Why an answer breaks the case's expectations, or None."""
    if answer.status is None:
        return "no answer" if case.must_answer else None
    if case.expect and answer.status not in case.expect:
        return f"status {answer.status}, expected {'/'.join(map(str, case.expect))}"
    if answer.status == 401 and "www-authenticate" not in answer.headers:
        return "401 without WWW-Authenticate"
    if case.texts and answer.status == 200:
        try:
            got = json.loads(answer.body)
            items = [got] if len(case.texts) == 1 and "results" not in got else got["results"]
        except (ValueError, KeyError, TypeError):
            return "a 200 answer that is not the API's JSON"
        if len(items) != len(case.texts):
            return f"{len(items)} answers for {len(case.texts)} texts"
        for text, item in zip(case.texts, items):
            if item.get("text") != text:
                return f"the answer's text is not the text sent: {item.get('text')!r:.80} for {text!r:.80}"
            for ent in item.get("entities", []):
                s, e = ent.get("start"), ent.get("end")
                if not (isinstance(s, int) and isinstance(e, int) and 0 <= s < e <= len(text)) or text[s:e] != ent.get("text"):
                    return f"entity {ent!r:.120} does not cut its text out of {text!r:.80}"
    return None


def _json_problem(case: Case, answer: Answer) -> Optional[str]:
    """Why an answer is not the JSON it should be, or None: every error answer is the API's
    ``{"error", "status"}``, every 200 to a POST is JSON; HEAD answers have no body, and GET or OPTIONS
    may answer the page or nothing."""
    if answer.status is None or case.method == "HEAD":
        return None
    if answer.status < 400 and not (answer.status == 200 and case.method == "POST"):
        return None
    try:
        got = json.loads(answer.body)
    except ValueError:
        return "not JSON"
    if answer.status >= 400 and not (isinstance(got, dict) and isinstance(got.get("error"), str)
                                     and got.get("status") == answer.status):
        return 'not the API\'s {"error", "status"} shape'
    return None


def shown_bytes(data: bytes, limit: int = 240) -> str:
    """Bytes for a record: ascii() of the head, and the length when cut."""
    return ascii(data[:limit])[2:-1] + (f"... ({len(data)} bytes)" if len(data) > limit else "")


class Tally:
    """What one class got back: statuses, connection errors, application 5xx, non-JSON answers,
    expectation failures, with a few examples (the request and what came back) of each problem."""

    EXAMPLES = 5

    def __init__(self) -> None:
        self.requests = 0
        self.statuses: Counter[str] = Counter()
        self.by_kind: dict[str, Counter[str]] = {}
        self.connection_errors: Counter[str] = Counter()
        self.closed_without_answer = 0
        self.not_http_answers = 0
        self.answered_after_send_error = 0
        self.not_read = 0
        self.problems: dict[str, int] = {"application_5xx": 0, "non_json_answers": 0, "expectation_failures": 0}
        self.examples: dict[str, list[dict[str, Any]]] = {k: [] for k in self.problems}

    def _example(self, what: str, case: Case, answer: Optional[Answer], why: str) -> None:
        self.problems[what] += 1
        if len(self.examples[what]) < self.EXAMPLES:
            ex: dict[str, Any] = {"kind": case.kind, "mode": case.mode, "request": shown_bytes(case.data), "why": why}
            if answer is not None:
                ex["status"] = answer.status
                ex["answer"] = shown_bytes(answer.body or answer.raw)
                ex["content_type"] = answer.headers.get("content-type")
                if answer.error:
                    ex["error"] = answer.error
            self.examples[what].append(ex)

    def add(self, case: Case, answer: Answer) -> None:
        self.requests += 1
        outcome = str(answer.status) if answer.status is not None else (answer.error or "closed")
        self.by_kind.setdefault(case.kind, Counter())[outcome] += 1
        if answer.status is not None:
            self.statuses[str(answer.status)] += 1
            if answer.send_error:
                self.answered_after_send_error += 1
        elif answer.error:
            self.connection_errors[answer.error] += 1
        elif answer.raw:
            self.not_http_answers += 1
        else:
            self.closed_without_answer += 1
        if answer.status is None and answer.raw:
            self._example("non_json_answers", case, answer, "bytes that are no HTTP answer")
        if is_application_5xx(answer.status, case.data):
            self._example("application_5xx", case, answer, f"status {answer.status}")
        why = _json_problem(case, answer)
        if why:
            self._example("non_json_answers", case, answer, why)
        why = _answer_problem(case, answer)
        if why:
            self._example("expectation_failures", case, answer, why)

    def add_unread(self, case: Case, error: Optional[str] = None) -> None:
        """A connection whose answer is not read (floods, slow clients): only its connection error counts."""
        self.requests += 1
        self.by_kind.setdefault(case.kind, Counter())[error or "not read"] += 1
        if error:
            self.connection_errors[error] += 1
        else:
            self.not_read += 1

    def fail(self, case: Case, why: str, answer: Optional[Answer] = None) -> None:
        self._example("expectation_failures", case, answer, why)

    def record(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "statuses": dict(sorted(self.statuses.items())),
            "connection_errors": dict(self.connection_errors),
            "closed_without_answer": self.closed_without_answer,
            "not_http_answers": self.not_http_answers,
            "answered_after_send_error": self.answered_after_send_error,
            "not_read": self.not_read,
            **self.problems,
            "examples": {k: v for k, v in self.examples.items() if v},
            "by_kind": {k: dict(v) for k, v in self.by_kind.items()},
        }


# =============================================================================== the server
def ensure_checkpoint(ckpt_path: Optional[Path], script: str) -> Path:
    """``ckpt_path``, or the best checkpoint of bench/work/<script>-run, trained there first (the tiny
    recipe on the sample corpus, 1 epoch, about 10 s) when it holds none. ``choose_checkpoint`` runs in
    a child: it imports torch, which this process (the load generator) does without."""
    if ckpt_path is not None:
        if not Path(ckpt_path).is_file():
            sys.exit(f"{ckpt_path}: no such checkpoint file")
        return Path(ckpt_path).resolve()
    root = WORK / f"{script}-run"

    why = ""

    def best() -> Optional[Path]:
        nonlocal why
        code = ("import sys\nfrom ner_lit.checkpoint.runs import choose_checkpoint\n"
                "try:\n    print(choose_checkpoint('best', sys.argv[1]).path)\n"
                "except ValueError as exc:\n    print(exc, file=sys.stderr)\n")
        out = subprocess.run([sys.executable, "-c", code, str(root)], cwd=REPO, capture_output=True, text=True)
        line = out.stdout.strip()
        why = out.stderr.strip()[-2000:]
        return Path(line) if out.returncode == 0 and line else None

    found = best() if root.is_dir() else None
    if found is None:
        cmd = [sys.executable, "-m", "ner_lit", "fit", "--config", "tiny", "--data.data_dir", "ner_lit:sample",
               "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar",
               "false"]
        print(f"no --ckpt_path: training the tiny recipe into {rel(root)} ...", flush=True)
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"training failed ({done.returncode}):\n{done.stderr[-3000:]}")
        found = best()
        if found is None:
            sys.exit(f"no best checkpoint under {root} after training: {why}")
    return (REPO / found).resolve() if not found.is_absolute() else found


def start_server(name: str, ckpt: Path, token: str, log_dir: Path) -> tuple[Server, float]:
    """``python -m ner_lit serve --ckpt_path CKPT --host 127.0.0.1 --port 0 --api_key TOKEN``, ready:
    the server and its start-up time in seconds."""
    log_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    server = Server(name, server_argv(ckpt, token), log_dir)
    server.wait_ready()
    return server, time.perf_counter() - t0


def server_argv(ckpt: Path, token: str) -> list[str]:
    """The serve command line. The token rides in ``--api_key=TOKEN``: a ``secrets.token_urlsafe``
    begins with "-" one time in 32, and ``--api_key -x`` reads as a missing value."""
    return [sys.executable, "-m", "ner_lit", "serve", "--ckpt_path", str(ckpt), "--host", HOST, "--port", "0",
            f"--api_key={token}"]


def server_command(ckpt: Path) -> str:
    return f"python -m ner_lit serve --ckpt_path {rel(ckpt)} --host {HOST} --port 0 --api_key <random token>"


def log_facts(server: Server) -> dict[str, Any]:
    """What the server's stderr log says: whether it holds a traceback, the first few, its ERROR lines."""
    text = server.log_path.read_text(encoding="utf-8", errors="replace") if server.log_path.exists() else ""
    lines = text.splitlines()
    tracebacks = []
    for i, line in enumerate(lines):
        if line.startswith("Traceback") and len(tracebacks) < 3:
            tracebacks.append("\n".join(lines[max(0, i - 1): i + 40])[:3000])
    return {"path": rel(server.log_path), "traceback": "Traceback" in text, "tracebacks": tracebacks,
            "error_lines": sum(1 for ln in lines if " ERROR " in ln or ln.startswith("ERROR")),
            "warning_lines": sum(1 for ln in lines if " WARNING " in ln)}
