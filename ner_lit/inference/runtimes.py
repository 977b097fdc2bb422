"""What can run a token classifier besides eager PyTorch, and the checks that decide whether it may.

A runtime is made by a :data:`Compiler` from a module and example inputs: a frozen
TorchScript trace (:func:`torchscript`) or an ONNX export under ONNX Runtime
(:func:`onnxruntime_session`, whose exported graphs a :class:`RuntimeCache` can keep). Either records one path through the model's Python code,
so :func:`checked_compile` compares it with the eager model on other shapes than the one
it was made from, padded and unpadded, before anything uses it.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from ner_lit.files import atomic_writer, file_sha256, write_json_atomic
from ner_lit.inference.choice import RuntimeRefused
from ner_lit.inference.quantization import Int8Recipe, quantize_graph
from ner_lit.memory import map_sparsely

#: Runs the model on tensors: ``(input_ids, attention_mask[, position_ids]) -> logits``.
Runner = Callable[..., torch.Tensor]
#: Makes a runner from a module and example inputs (a trace, an export).
Compiler = Callable[[torch.nn.Module, tuple], Runner]

#: How far a trace's or a packed forward's logits may be from the eager padded ones.
SAME_LOGITS = 1e-4


class LogitsOnly(torch.nn.Module):
    """The model as ``(input_ids, attention_mask) -> logits``: the signature a trace records."""

    #: Each input's name and its dimensions that vary (rows, width), for an ONNX export.
    inputs = {"input_ids": ("rows", "width"), "attention_mask": ("rows", "width")}

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


class PackedLogits(torch.nn.Module):
    """The model over packed rows: ``(input_ids, 4D additive mask, position_ids) -> logits``."""

    inputs = {
        "input_ids": ("rows", "width"),
        "attention_mask": ("rows", None, "width", "width"),
        "position_ids": ("rows", "width"),
    }

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits


def torchscript(module: torch.nn.Module, example: tuple) -> Runner:
    return torch.jit.freeze(torch.jit.trace(module, example, check_trace=False))


def onnxruntime_session(module: torch.nn.Module, example: tuple, cache: Optional[Path] = None,
                        quantize: Optional[Int8Recipe] = None, identity: Optional[dict] = None) -> Runner:
    """``module`` exported to ONNX (TorchScript-based exporter) and loaded in an ONNX Runtime session.

    The export goes through a file that the session is loaded from by name: given the bytes
    instead, onnxruntime's Python session keeps them for as long as it lives (a second copy of
    every weight). It runs with torch's intra-op thread count, releases the GIL while it runs,
    and its threads sleep rather than spin when idle, so request threads keep their cores.

    With ``cache`` (a folder), the exported file is kept there under a key of everything the
    graph depends on (:func:`graph_key`: the module's kind and inputs, every weight, the torch,
    onnx and exporter settings) and loaded from there next time, after its recorded sha256 is
    checked: a restart of the same model skips the export (:class:`RuntimeCache`). ``identity``
    (a checkpoint's model config and recorded weights digest) stands for the weights in the key,
    so that a restart can find the graph before building any network (:func:`kept_runner`).

    With ``quantize``, the exported graph gets int8 weights (:func:`ner_lit.inference.quantization.quantize_graph`)
    before it is loaded and kept; the cache key includes the recipe.
    """
    names = list(module.inputs)  # type: ignore[attr-defined]
    store = RuntimeCache(cache) if cache is not None else None
    key = graph_key(module, quantize, identity) if store is not None else ""
    path = store.find(key) if store is not None else None
    if path is not None:
        session = _session(path)
    else:
        with tempfile.TemporaryDirectory(prefix="ner_lit-onnx-") as tmp:
            exported = Path(tmp) / "model.onnx"
            export_onnx(module, example, exported)
            if quantize is not None:
                quantize_graph(exported, Path(tmp) / "model.int8.onnx", quantize)
                exported.unlink()
                exported = Path(tmp) / "model.int8.onnx"
            kept = store.keep(key, exported) if store is not None else None
            session = _session(kept or exported)  # the kept form: its lookup tables are mapped, not read
    run = _runner(session, names)
    run.from_cache = path is not None  # type: ignore[attr-defined]
    run.cache_key = key or None  # type: ignore[attr-defined]
    return run


def kept_runner(cache: Path, key: str, inputs: dict) -> Optional[Runner]:
    """The ONNX Runtime session of the graph kept under ``key`` (its sha256 checked), or None."""
    path = RuntimeCache(cache).find(key)
    if path is None:
        return None
    run = _runner(_session(path), list(inputs))
    run.from_cache, run.cache_key = True, key  # type: ignore[attr-defined]
    return run


def _session(path: Path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads sleep: request threads keep the cores
    options.log_severity_level = 3  # errors only: its warnings about the exported graph are not the user's
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    tables = Path(path).with_suffix(".data")
    if tables.exists():  # a kept graph's lookup tables, mapped by the session (split_tables)
        map_sparsely(tables)
    return session


def _runner(session, names: list[str]) -> Runner:
    def run(*tensors: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {n: t.cpu().numpy() for n, t in zip(names, tensors)})[0])

    return run


#: The ONNX opset of every export (part of the cache key).
OPSET = 17


def export_onnx(module: torch.nn.Module, example: tuple, path: Path) -> None:
    """``torch.onnx.export`` of a :class:`LogitsOnly`/:class:`PackedLogits` module, rows and widths dynamic."""
    names = list(module.inputs)  # type: ignore[attr-defined]
    axes = {n: {d: a for d, a in enumerate(dims) if a is not None} for n, dims in module.inputs.items()}  # type: ignore[attr-defined]
    axes["logits"] = {0: "rows", 1: "width"}
    torch.onnx.export(module, example, str(path), input_names=names, output_names=["logits"], dynamic_axes=axes,
                      dynamo=False, opset_version=OPSET)


def graph_key(module: torch.nn.Module, quantize: Optional[Int8Recipe] = None, identity: Optional[dict] = None) -> str:
    """sha256 of what an exported graph depends on: the module's kind and inputs, the exporter's
    versions and settings, the int8 recipe if any, and the network: its config and every weight
    (:func:`weights_digest`), or, given an ``identity`` (a checkpoint's ``model_config`` and
    recorded ``weights_sha256``, which loading it verified), that (:func:`identity_key`)."""
    if identity is not None:
        return identity_key(type(module).__name__, module.inputs, identity, quantize)  # type: ignore[attr-defined]
    from ner_lit.checkpoint.format import weights_digest

    config = getattr(getattr(module, "model", None), "config", None)
    settings = _settings(type(module).__name__, getattr(module, "inputs", None), quantize)
    settings["config"] = config.to_json_string(use_diff=False) if config is not None else None
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    h.update(weights_digest(module.state_dict()).encode())
    return h.hexdigest()


def identity_key(kind: str, inputs: dict, identity: dict, quantize: Optional[Int8Recipe] = None) -> str:
    """:func:`graph_key` of a checkpoint's network, from its spec alone: no network needs to be built."""
    settings = _settings(kind, inputs, quantize)
    settings["identity"] = identity
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def _settings(kind: str, inputs: Any, quantize: Optional[Int8Recipe]) -> dict:
    from importlib.metadata import version  # not ``import onnx``: a restart that only looks a graph up spares its second

    settings = {"kind": kind, "inputs": inputs, "opset": OPSET, "torch": torch.__version__, "onnx": version("onnx"),
                "cache_format": RuntimeCache.FORMAT}
    if quantize is not None:  # only then: a float graph's key is what it was before int8 existed
        import onnxruntime

        settings["int8"] = {**quantize.key(), "onnxruntime": onnxruntime.__version__}
    return settings


#: A lookup table (the data of a ``Gather``: word embeddings) at least this large is kept beside its
#: graph rather than in it (:func:`split_tables`).
TABLE_MIN_BYTES = 16 << 20
#: Offsets of tables in the data file are multiples of this (the mmap allocation granularity of any OS).
TABLE_ALIGN = 1 << 16


def split_tables(src: Path, dst: Path, data_name: str) -> Optional[Path]:
    """``src`` saved as ``dst`` with its large lookup tables in ``dst.parent / data_name`` (ONNX
    external data, page aligned), or None (``dst`` not written) where it has none.

    ONNX Runtime maps external data into memory instead of reading it, and a ``Gather`` reads
    its table in place: only the rows a text uses are ever paged in. multilingual-e5-small's
    word embeddings are 384 MB of its 470 MB graph, and a Korean corpus uses a small share of
    their 250,002 rows. Weights of matrix products stay in the graph: ONNX Runtime repacks
    those into memory of its own anyway.
    """
    import onnx
    from onnx.external_data_helper import set_external_data

    model = onnx.load(str(src))
    gathered = {node.input[0] for node in model.graph.node if node.op_type == "Gather"}
    tables = [t for t in model.graph.initializer if t.name in gathered and len(t.raw_data) >= TABLE_MIN_BYTES]
    if not tables:
        return None
    data = dst.parent / data_name
    with atomic_writer(data, "wb") as out:
        offset = 0
        for table in tables:
            raw = table.raw_data
            set_external_data(table, location=data_name, offset=offset, length=len(raw))
            table.ClearField("raw_data")
            table.data_location = onnx.TensorProto.EXTERNAL
            pad = -(offset + len(raw)) % TABLE_ALIGN
            out.write(raw + b"\0" * pad)
            offset += len(raw) + pad
    with atomic_writer(dst, "wb") as out:
        out.write(model.SerializeToString())
    return data


class RuntimeCache:
    """Exported graphs kept in a folder, each ``<key>.onnx`` with ``<key>.json`` recording its sha256,
    and its large lookup tables in ``<key>.data`` (:func:`split_tables`; digest recorded too).

    A graph is used only when its record is there and the files' digests match it (a torn or
    edited file is removed and exported again); all are written atomically, the record last.
    Only the ``keep`` most recently used graphs stay (a multilingual model's graph is hundreds
    of MB). Any file-system trouble makes it a cache miss, never an error: the export still runs.
    """

    FORMAT = 2  # 2: lookup tables beside the graph

    def __init__(self, folder: Path, keep: int = 3) -> None:
        self.folder = Path(folder)
        self.keep_count = keep

    def find(self, key: str) -> Optional[Path]:
        graph, record, data = self.folder / f"{key}.onnx", self.folder / f"{key}.json", self.folder / f"{key}.data"
        try:
            recorded = json.loads(record.read_text(encoding="utf-8"))
            if recorded.get("sha256") != file_sha256(graph):
                raise ValueError("digest")
            if recorded.get("data_sha256") is not None and recorded["data_sha256"] != file_sha256(data):
                raise ValueError("data digest")
            os.utime(record)  # most recently used
        except (OSError, ValueError, AttributeError):
            for stale in (graph, record, data):
                with contextlib.suppress(OSError):
                    stale.unlink()
            return None
        return graph

    def record(self, key: str) -> dict:
        """``key``'s record (empty where there is none or it can not be read)."""
        try:
            recorded = json.loads((self.folder / f"{key}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return recorded if isinstance(recorded, dict) else {}

    def note(self, key: str, **facts: Any) -> None:
        """Add ``facts`` to ``key``'s record (atomically; never an error: a cache is only a cache)."""
        recorded = self.record(key)
        if not recorded:
            return
        try:
            write_json_atomic(self.folder / f"{key}.json", {**recorded, **facts})
        except OSError:
            return

    def keep(self, key: str, exported: Path) -> Optional[Path]:
        """Keep ``exported`` under ``key`` (its large lookup tables split off); the kept graph, or None
        where it could not be written."""
        graph = self.folder / f"{key}.onnx"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            data = split_tables(exported, graph, f"{key}.data")
            if data is None:
                with atomic_writer(graph, "wb") as out, open(exported, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
            record = {"format": self.FORMAT, "sha256": file_sha256(graph), "bytes": graph.stat().st_size}
            if data is not None:
                record.update(data_sha256=file_sha256(data), data_bytes=data.stat().st_size)
            write_json_atomic(self.folder / f"{key}.json", record)
            self._evict()
        except OSError:
            return None
        return graph

    def _evict(self) -> None:
        records = sorted(self.folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for record in records[self.keep_count:]:
            for stale in (record, record.with_suffix(".onnx"), record.with_suffix(".data")):
                with contextlib.suppress(OSError):
                    stale.unlink()


def compiler(runtime: str, cache: Optional[Path] = None, identity: Optional[dict] = None) -> Compiler:
    """The compiler of "onnxruntime" or "torchscript" (looked up when called, so a test may replace one);
    ``cache``: the folder ONNX Runtime's exported graphs are kept in (:class:`RuntimeCache`), under
    keys of the network's ``identity`` where given (:func:`graph_key`)."""
    if runtime == "onnxruntime" and cache is not None:
        return functools.partial(onnxruntime_session, cache=cache, identity=identity)
    return {"onnxruntime": onnxruntime_session, "torchscript": torchscript}[runtime]


def int8_compiler(cache: Optional[Path] = None, recipe: Int8Recipe | None = None, identity: Optional[dict] = None) -> Compiler:
    """ONNX Runtime with int8 weights (``recipe``, default ``int8`` as :func:`~ner_lit.inference.quantization.recipe_for`
    gives it for this CPU).
    Its logits are not the float model's to :data:`SAME_LOGITS`: the start-up checks refuse only
    non-finite ones (its ``same_logits``), and the caller compares answers instead."""
    from ner_lit.inference.quantization import recipe_for

    make = functools.partial(onnxruntime_session, cache=cache, quantize=recipe or recipe_for("int8"), identity=identity)
    make.same_logits = math.inf  # type: ignore[attr-defined]
    return make


def logit_tolerance(make: Compiler) -> float:
    """How far ``make``'s logits may be from the eager model's: :data:`SAME_LOGITS` unless it says otherwise."""
    return getattr(make, "same_logits", SAME_LOGITS)


def example_batch(vocab: int, pad_id: int, rows: int, width: int, seed: int,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids, every row but the first padded, each to another length."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (rows, width), generator=g)
    mask = torch.ones(rows, width, dtype=torch.long)
    for r in range(1, rows):
        mask[r, max(1, width - 3 * r) :] = 0
    ids[mask == 0] = pad_id
    return ids.to(device), mask.to(device)


def checked_compile(model: torch.nn.Module, make: Compiler, what: str, *, vocab: int, pad_id: int, limit: int,
                    device: torch.device) -> Runner:
    """``model`` traced or exported by ``make``, if it gives the eager logits on other shapes than the
    one it was made from (padded and not); else :class:`RuntimeRefused` saying by how much or why."""
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about Python values: the check below decides
            compiled = make(LogitsOnly(model).eval(), example_batch(vocab, pad_id, 3, limit, 0, device))
            for rows, width in ((1, max(2, limit // 3)), (4, limit)):
                ids, mask = example_batch(vocab, pad_id, rows, width, rows, device)
                eager = model(input_ids=ids, attention_mask=mask).logits
                diff = float((compiled(ids, mask).to(eager.device) - eager).abs().max())
                if not diff <= logit_tolerance(make):  # NaN never passes
                    raise RuntimeRefused(f"its {what} differs by {diff:.2g} on a {rows}x{width} batch")
    except RuntimeRefused:
        raise
    except Exception as exc:  # noqa: BLE001 - any model the tracer or exporter can not follow stays eager
        raise RuntimeRefused(f"{what} failed: {type(exc).__name__}") from None
    return compiled
