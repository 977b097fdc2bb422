"""``serve``'s start-up: load the predictor, choose its runtime, print the banner, run the server.
"""
from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path
from typing import Literal

from ner_lit.checkpoint.tokenizer import default_cache_dir
from ner_lit.inference.choice import RUNTIMES, choose_runtime, prepare_runtime
from ner_lit.inference.quantization import QUANTIZE_CHOICES
from ner_lit.memory import release_freed_memory
from ner_lit.serving.app import (
    DEFAULT_CHANNEL_TIMEOUT,
    DEFAULT_CONNECTION_LIMIT,
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_TEMPLATE,
    PredictorLike,
    ServeError,
    create_app,
    make_batcher,
)
from ner_lit.serving.server import _url, check_port, run_server

#: ``choose_runtime`` and ``prepare_runtime`` are ``ner_lit.inference.choice``'s, named here too for serve's callers.
__all__ = ["choose_runtime", "describe", "load_predictor", "prepare_runtime", "serve"]


def load_predictor(ckpt_path: str | None, model_dir: str | None, device: str = "cpu") -> PredictorLike:
    """Load the predictor from exactly one of a checkpoint or an exported model directory.

    Every failure (wrong options, missing file, a file that is no checkpoint) becomes one
    :class:`ServeError` whose message names the path, so the user sees one clear line.
    """
    if (ckpt_path is None) == (model_dir is None):
        raise ServeError("give exactly one of --ckpt_path (a ner_lit checkpoint) or --model_dir (an exported model)")
    from ner_lit.inference.predictor import Predictor

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


def kept_predictor(ckpt_path: str | None, cache: Path | None, runtime: str, pack: bool, quantize: str,
                   device: str) -> PredictorLike | None:
    """The checkpoint served as an earlier start of the same settings left it (``Predictor.from_kept``:
    its kept graph, which passed every check then), or None: then it is loaded and checked anew.
    Any failure here is a None too; the full start reports it."""
    if not kept_predictor_possible(ckpt_path, cache, runtime, pack, device):
        return None
    from ner_lit.inference.predictor import Predictor

    try:
        return Predictor.from_kept(ckpt_path, cache, quantize)
    except Exception:  # noqa: BLE001 - the full start-up path loads, checks and reports
        return None


def kept_predictor_possible(ckpt_path: str | None, cache: Path | None, runtime: str, pack: bool, device: str) -> bool:
    """Whether these settings start from a kept graph: a checkpoint, the runtime cache, packed ONNX Runtime on a CPU."""
    return ckpt_path is not None and cache is not None and runtime == "onnxruntime" and pack and device == "cpu"


#: A checkpoint at least this large has its first start made by a helper process (ner_lit.serving.prepare):
#: what that start leaves behind grows with the model, the helper's own start-up (about 3 s) does not.
HELPER_MIN_BYTES = 100 << 20


def worth_a_helper(ckpt_path: str | None) -> bool:
    try:
        return ckpt_path is not None and Path(ckpt_path).stat().st_size >= HELPER_MIN_BYTES
    except OSError:
        return False  # the full start says what is wrong with it


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
    if torch_threads is not None:  # what serve() knows once the runtime is chosen
        lines.append(
            f"  device:      {predictor.device}, {torch_threads} torch thread(s), {predictor.runtime}, "
            f"{predictor.packing}, {model_workers} model worker(s)"
        )
    kept = getattr(predictor, "kept", False)
    if kept == "helper":
        lines.append("  start-up:    the graph a helper process made and checked, loaded as a restart loads it")
    elif kept:
        lines.append("  start-up:    the graph an earlier start made and checked (its sha256 checked now)")
    agreement = getattr(predictor, "quantization", None)
    if agreement is not None:
        lines.append(f"  int8 check:  {agreement}")
    return "\n".join(lines)


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
    runtime_cache: bool = True,
    quantize: Literal["none", "int8", "int8-small"] = "none",
    model_workers: int = 1,
    connection_limit: int = DEFAULT_CONNECTION_LIMIT,
    channel_timeout: int = DEFAULT_CHANNEL_TIMEOUT,
    request_timeout: int = DEFAULT_REQUEST_TIMEOUT,
    max_concurrent_batches: int | None = None,
    api_key: str | None = None,
    insecure: bool = False,
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
        runtime_cache: keep ONNX Runtime's exported graph in ner_lit's cache folder
            (``$NER_LIT_CACHE/runtimes``), keyed by the weights and the export settings, so a
            restart of the same checkpoint loads it (sha256 checked) and answers in seconds;
            a first start of a checkpoint of 100 MB or more has a helper process make it, so
            the server holds none of that work. false: export (and check) in-process every time.
        quantize: int8 serves the model under ONNX Runtime with int8 weights in most matrix
            products (faster; F1 within a few tenths), int8-small also with int8 word embeddings
            (far less memory, about half a point of F1); bench/results/quantize.md has the table.
            Start-up first checks the int8 model's entities on 100 example sentences against the
            float model's (at most 10% may differ); where the check fails, the float model serves
            and the banner says why. none serves the float weights.
        model_workers: threads that run forward passes, each on its own batch. More than 1
            pays where the model releases the GIL (not eager) and cores are spare: on 2 cores,
            2 workers with --torch_threads 1 (docs/serving.md says why).
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
        api_key: a token POST /api and /api/batch then require (``Authorization: Bearer <token>``);
            default: the environment variable NER_LIT_API_KEY (better than the command line,
            where other users of the machine can read it), else none. /health and the page stay open.
        insecure: serve on a --host other than a loopback address without a token, which
            exposes the API to the network; refused without this.
    """
    if torch_threads is not None and torch_threads < 1:
        raise ServeError(f"torch_threads must be at least 1, got {torch_threads}")
    if model_workers < 1:
        raise ServeError(f"model_workers must be at least 1, got {model_workers}")
    if runtime not in RUNTIMES:  # before the model loads, as every option's check
        raise ServeError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if quantize not in QUANTIZE_CHOICES:
        raise ServeError(f"quantize must be one of {', '.join(QUANTIZE_CHOICES)}, got {quantize!r}")
    if quantize != "none" and runtime != "onnxruntime":
        raise ServeError(f"--quantize {quantize} runs under ONNX Runtime: use --runtime onnxruntime, not {runtime}")
    api_key = api_key if api_key is not None else (os.environ.get(API_KEY_ENV) or None)
    check_exposure(host, api_key, insecure)
    check_port(host, port)  # before the model loads: a busy port is known in a moment
    import torch

    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
    cache = default_cache_dir() / "runtimes" if runtime_cache else None
    predictor = kept_predictor(ckpt_path, cache, runtime, pack, quantize, device)
    if predictor is None and kept_predictor_possible(ckpt_path, cache, runtime, pack, device) and worth_a_helper(ckpt_path):
        from ner_lit.serving.prepare import prepare_apart

        print("ner_lit serve: a first start with these settings: a helper process builds, exports and checks the "
              "graph, kept for restarts", file=sys.stderr, flush=True)
        if prepare_apart(str(ckpt_path), cache, quantize, torch_threads):
            predictor = kept_predictor(ckpt_path, cache, runtime, pack, quantize, device)
            if predictor is not None:
                predictor.kept = "helper"
    if predictor is None:
        predictor = load_predictor(ckpt_path, model_dir, device=device)
        predictor.runtime_cache = cache
        prepare_runtime(predictor, runtime, pack, quantize)
    release_freed_memory()  # what start-up freed (the eager model, the export, a tokenizer) goes back to the system
    batcher = make_batcher(predictor, max_batch_size, max_wait_ms=max_wait_ms, workers=model_workers)
    try:
        app = create_app(
            predictor,
            template=template,
            max_text_length=max_text_length,
            max_batch_size=max_batch_size,
            batcher=batcher,
            max_concurrent_batches=max(1, threads // 2) if max_concurrent_batches is None else max_concurrent_batches,
            api_key=api_key,
        )
        print(describe(predictor, _url(host, port), torch.get_num_threads(), model_workers), flush=True)
        if api_key is not None:
            print("  api:         POST /api and /api/batch need 'Authorization: Bearer <token>'", flush=True)
        try:
            run_server(app, host=host, port=port, server=server, threads=threads, connection_limit=connection_limit,
                       channel_timeout=channel_timeout, request_timeout=request_timeout)
        except KeyboardInterrupt:
            pass
    finally:
        batcher.close(timeout=10)


#: Where ``serve`` reads the API token when ``--api_key`` is not given.
API_KEY_ENV = "NER_LIT_API_KEY"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def check_exposure(host: str, api_key: str | None, insecure: bool) -> None:
    """Refuse to put an open API on the network: a --host other than loopback needs a token or --insecure."""
    if api_key is None and not insecure and not is_loopback(host):
        raise ServeError(
            f"--host {host} exposes the API to the network without a token; give one with {API_KEY_ENV}=... "
            "(or --api_key), or pass --insecure to serve it open"
        )

