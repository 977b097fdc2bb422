"""Fixtures and helpers for the serving tests (test_serve_*.py import what they use).

Two predictors stand behind the server under test:

* :class:`FakePredictor` finds entities from a small gazetteer, so tests of the HTTP
  layer and of the page know exactly which entities to expect, and it records every
  batch it is called with.
* :func:`build_tiny_model_dir` writes a real, tiny, random Hugging Face model (a
  WordPiece tokenizer over Korean syllables + a 2-layer BERT, 13 KLUE labels), so the
  served path through ``ner_lit.inference.predictor.Predictor`` is exercised end to end in seconds.

:func:`start_server_process` runs the app under waitress in a separate process on
127.0.0.1 (port chosen by the OS) and stops it on exit.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

KLUE_LABELS = ["B-DT", "I-DT", "B-LC", "I-LC", "B-OG", "I-OG", "B-PS", "I-PS", "B-QT", "I-QT", "B-TI", "I-TI", "O"]

#: Sentences the tests send; the tiny model's vocabulary covers their syllables, except
#: the ones that must come out as [UNK].
SENTENCES = [
    "이순신은 1545년 서울에서 태어났다.",
    "삼성전자는 오늘 오후 3시에 수원에서 발표했다.",
    "세종대왕이 한글을 만들었다.",
    "김철수 씨는 부산 해운대에서 사과 두 개를 샀다.",
    "내일 아침 9시 30분에 대한민국 국회가 열린다.",
    "스티브 잡스는 애플을 세웠다.",
    "아무 개체명도 없는 평범한 문장입니다.",
    "",
    "   ",
    "긴 문장 " * 40,
    "뷁 섞인 문장과 😀 이모지",
]

# --------------------------------------------------------------------------- fake predictor
GAZETTEER: dict[str, str] = {
    "이순신": "PS",
    "세종대왕": "PS",
    "김철수": "PS",
    "서울": "LC",
    "부산": "LC",
    "삼성전자": "OG",
    "국회": "OG",
    "1545년": "DT",
    "오늘": "DT",
    "오후 3시": "TI",
    "두 개": "QT",
    "칠레": "XX",  # a type with no colour of its own: the page's fallback colour
}


@dataclass
class FakeEntity:
    text: str
    label: str
    start: int
    end: int
    score: float


@dataclass
class FakeToken:
    token: str
    label: str
    prob: float


@dataclass
class FakePrediction:
    text: str
    entities: list[FakeEntity]
    tokens: list[FakeToken]


def fake_predict_one(text: str) -> FakePrediction:
    """Gazetteer entities (leftmost-longest, no overlaps) and one token per non-space char."""
    spans: list[tuple[int, int, str]] = []
    taken = [False] * len(text)
    for name in sorted(GAZETTEER, key=len, reverse=True):
        start = text.find(name)
        while start != -1:
            end = start + len(name)
            if not any(taken[start:end]):
                spans.append((start, end, GAZETTEER[name]))
                for i in range(start, end):
                    taken[i] = True
            start = text.find(name, end)
    spans.sort()
    entities = [FakeEntity(text[a:b], lab, a, b, 0.9 + 0.01 * (len(text[a:b]) % 10)) for a, b, lab in spans]
    tag = ["O"] * len(text)
    for a, b, lab in spans:
        tag[a] = f"B-{lab}"
        for i in range(a + 1, b):
            tag[i] = f"I-{lab}"
    tokens = [FakeToken(ch, tag[i], 0.75) for i, ch in enumerate(text) if not ch.isspace()]
    return FakePrediction(text, entities, tokens)


@dataclass
class FakePredictor:
    """A predictor with known answers that records how it is called.

    ``delay_s`` makes each call slow, so concurrent requests pile up behind it;
    ``fail_on`` makes any batch containing that text raise, like a model crashing.
    """

    delay_s: float = 0.0
    fail_on: str | None = None
    labels: list[str] = field(default_factory=lambda: list(KLUE_LABELS))
    source: str = "/models/fake.ckpt"
    name: str = "fake-gazetteer"
    scores: dict[str, float] = field(default_factory=lambda: {"val_F1c": 91.25, "val_F1e": 84.5})
    max_length: int = 512
    batches: list[list[str]] = field(default_factory=list)
    threads: set[str] = field(default_factory=set)

    # The server's three stages: only ``forward`` is the "model" (recorded, slow, failing).
    def prepare(self, texts: list[str]) -> list[str]:
        return list(texts)

    def forward(self, texts: list[str]) -> list[FakePrediction]:
        return self.predict(texts)

    def finish(self, text: str, item: str, output: FakePrediction) -> FakePrediction:
        assert item == text == output.text, "finish got another request's item or output"
        return output

    def predict(self, texts: list[str]) -> list[FakePrediction]:
        self.batches.append(list(texts))
        self.threads.add(threading.current_thread().name)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_on is not None and self.fail_on in texts:
            raise RuntimeError("secret internal detail: CUDA out of memory at layer 3")
        return [fake_predict_one(t) for t in texts]


# --------------------------------------------------------------------------- tiny real model
def _vocab_of(chars: set[str]) -> list[str]:
    ordered = sorted(chars)
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + ordered + [f"##{c}" for c in ordered]


def _tiny_vocab() -> list[str]:
    return _vocab_of({ch for s in SENTENCES for ch in s if not ch.isspace()} - {"뷁", "😀"})


def build_tiny_model_dir(out: Path, texts: list[str] | None = None, max_positions: int = 64) -> Path:
    """Save a tiny random BERT token classifier + fast WordPiece tokenizer to ``out``.

    The vocabulary covers the characters of ``texts`` (default: :data:`SENTENCES`, less the ones
    that must come out as [UNK]); ``max_positions`` bounds the token rows the model takes.
    bench/serve_bench.py's ``--quick`` serves this model too, over its own sentences.
    """
    import torch
    from transformers import BertConfig, BertForTokenClassification, BertTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    pieces = _tiny_vocab() if texts is None else _vocab_of({ch for t in texts for ch in t if not ch.isspace()})
    vocab = {piece: i for i, piece in enumerate(pieces)}
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=False, strip_accents=False)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_positions,
        num_labels=len(KLUE_LABELS),
        id2label=dict(enumerate(KLUE_LABELS)),
        label2id={lab: i for i, lab in enumerate(KLUE_LABELS)},
        initializer_range=0.5,  # spread the random logits so argmax labels are not near-ties
    )
    model = BertForTokenClassification(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


# --------------------------------------------------------------------------- server process
_SERVER_SCRIPT = """
import sys
sys.path[:0] = [{repo!r}, {tests!r}]
from ner_lit.serving.app import create_app
from ner_lit.serving.launch import serve
from ner_lit.serving.server import run_server
kind, arg = {kind!r}, {arg!r}
if kind == "fake":
    from serve_fixtures import FakePredictor
    app = create_app(FakePredictor(), **{app_kwargs!r})
    run_server(app, host="127.0.0.1", port=0, server={server!r}, threads={threads}, **{server_kwargs!r})
else:  # the real entry point, exactly as the CLI calls it
    serve(model_dir=arg, host="127.0.0.1", port=0, server={server!r}, threads={threads}, **{app_kwargs!r},
          **{server_kwargs!r})
"""


@dataclass
class ServerProcess:
    url: str
    process: subprocess.Popen
    log_path: Path
    banner: list[str]  # what the process printed before "Serving on ..."

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@contextmanager
def start_server_process(
    tmp: Path,
    kind: str = "fake",
    arg: str = "",
    server: str = "waitress",
    threads: int = 8,
    startup_timeout_s: float = 120.0,
    server_kwargs: dict[str, Any] | None = None,
    **app_kwargs: Any,
) -> Iterator[ServerProcess]:
    """Run the app under waitress in a child process on loopback; stop it on exit.

    ``kind`` is "fake" (``create_app`` over a FakePredictor) or "model_dir" (``serve()``
    itself over the Hugging Face directory ``arg``). The child binds port 0 and prints the
    URL it got, so parallel runs never collide. ``server_kwargs`` go to ``run_server``
    (or ``serve``): connection limits and timeouts.
    """
    log_path = tmp / f"server-{kind}.log"
    script = _SERVER_SCRIPT.format(
        repo=str(REPO), tests=str(TESTS), kind=kind, arg=arg, app_kwargs=app_kwargs, server=server, threads=threads,
        server_kwargs=server_kwargs or {},
    )
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log_path, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=stderr, env=env, cwd=str(tmp)
        )
    try:
        url, banner = _wait_for_url(proc, startup_timeout_s, log_path)
        # Keep draining stdout so the child can never block on a full pipe.
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # type: ignore[union-attr]
        yield ServerProcess(url, proc, log_path, banner)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _wait_for_url(proc: subprocess.Popen, timeout_s: float, log_path: Path) -> tuple[str, list[str]]:
    result: list[str] = []
    banner: list[str] = []

    def read() -> None:
        for raw in proc.stdout:  # type: ignore[union-attr]
            line = raw.decode("utf-8", "replace").rstrip()
            if line.startswith("Serving on "):
                result.append(line.split()[2])
                return
            banner.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout_s)
    if not result:
        proc.kill()
        raise AssertionError(
            f"server did not start within {timeout_s} s (exit {proc.poll()}):\n"
            + log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        )
    return result[0], banner


# --------------------------------------------------------------------------- HTTP client
def post_json(url: str, payload: Any, timeout: float = 30.0) -> tuple[int, Any]:
    """POST JSON with urllib; (status, parsed body) for success and HTTP errors alike."""
    data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read().decode("utf-8"))


def get_json(url: str, timeout: float = 30.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read().decode("utf-8"))


# --------------------------------------------------------------------------- comparing answers
#: Batched inference pads texts to a common length; on CPU that moves a probability in its
#: 6th decimal (matmuls over a different shape sum in a different order). Labels, spans and
#: tokens must match exactly; scores within this tolerance.
SCORE_TOLERANCE = 1e-5


def assert_same_answer(got: Any, want: Any, where: str = "answer") -> None:
    """Equal JSON, except floats may differ by SCORE_TOLERANCE."""
    if isinstance(want, float) or isinstance(got, float):
        assert isinstance(got, (int, float)) and isinstance(want, (int, float)), f"{where}: {got!r} != {want!r}"
        assert abs(got - want) <= SCORE_TOLERANCE, f"{where}: {got!r} != {want!r}"
    elif isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), f"{where}: keys {got!r} != {want!r}"
        for k in want:
            assert_same_answer(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: {got!r} != {want!r}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same_answer(g, w, f"{where}[{i}]")
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def scrambled(real):
    """A quantizer whose graph answers wrongly (as int8 models have: onnxruntime issue 9599): the
    classifier's bias pushed hard towards one label."""
    import onnx
    from onnx import numpy_helper

    def quantize(src, out, recipe):
        real(src, out, recipe)
        model = onnx.load(str(out))
        for init in model.graph.initializer:
            if "classifier" in init.name and "bias" in init.name:
                bias = numpy_helper.to_array(init).copy()
                bias[1] += 1000.0
                init.CopyFrom(numpy_helper.from_array(bias, init.name))
        onnx.save(model, str(out))
    return quantize
