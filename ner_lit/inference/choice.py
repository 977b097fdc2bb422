"""Which runtime runs a predictor's model, and whether its windows share model rows: the choice and its status.

A predictor says how its model runs in two typed records, :class:`RuntimeStatus` (eager,
TorchScript or ONNX Runtime, and why the runtimes asked for before it were refused) and
:class:`PackingStatus` (padded or packed, and why not packed); their text is what ``serve``'s
banner shows. This module owns the whole choice: trying a runtime or packing on a
:class:`~ner_lit.inference.runner.ModelRunner` and recording the outcome
(:func:`compile_runtime`, :func:`pack_runner`, :func:`compile_packed`), and the order in which
``serve`` tries them (:func:`choose_runtime`, :func:`prepare_runtime`).

It imports no torch: ``serve --help`` reads the server's options without loading the model's
libraries, and the refusals a runner raises are defined here for that reason.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

from ner_lit.errors import UserError

#: The runtimes ``serve`` can be asked for, in the order it falls back through them.
RUNTIMES = ("onnxruntime", "torchscript", "eager")
EAGER = "eager"
#: The name each runtime has in the status (and the banner).
NAMES = {"onnxruntime": "ONNX Runtime", "torchscript": "TorchScript", "eager": EAGER}
#: What making each compiled runtime is called in a refusal.
MAKING = {"onnxruntime": "ONNX Runtime export", "torchscript": "TorchScript trace"}


class RuntimeRefused(Exception):
    """A runtime (or packing) that failed its check; the message says why, for the status."""


class EagerReleased(RuntimeError):
    """The eager model was released (``ModelRunner.release_eager``): nothing can be compiled any more."""


class UnknownRuntime(UserError):
    """A runtime name that is none of :data:`RUNTIMES`."""


@dataclass(frozen=True)
class RuntimeStatus:
    """What runs the model (``name``: "eager", "TorchScript" or "ONNX Runtime") and, in order, why
    each runtime tried before it was refused. Its text is the banner's: ``eager`` or
    ``TorchScript (reason; reason)``."""

    name: str = EAGER
    refused: tuple[str, ...] = ()

    @property
    def compiled(self) -> bool:
        """Whether a compiled runtime (not the eager model) runs."""
        return self.name != EAGER

    def __str__(self) -> str:
        return f"{self.name} ({'; '.join(self.refused)})" if self.refused else self.name


@dataclass(frozen=True)
class PackingStatus:
    """Whether windows share model rows: packed ``width`` tokens a row, or padded (with the
    ``reason`` packing was refused, if it was tried). Its text is the banner's:
    ``packed (128 tokens a row)``, ``padded`` or ``padded (reason)``."""

    packed: bool = False
    width: int | None = None
    reason: str | None = None

    def __str__(self) -> str:
        if self.packed:
            return f"packed ({self.width} tokens a row)"
        return f"padded ({self.reason})" if self.reason else "padded"


#: A runtime's name ("onnxruntime", "torchscript") -> its compiler (``ner_lit.inference.runtimes.compiler``).
Compilers = Callable[[str], Callable]


class Compiling(Protocol):
    """What the choice needs of a runner (``ner_lit.inference.runner.ModelRunner`` has it)."""

    device: Any
    pack_width: int

    def compile(self, make: Callable, what: str) -> None: ...

    def pack(self, width: int, release: bool = False) -> None: ...

    def compile_packed(self, make: Callable, what: str, width: int) -> None: ...


def compile_runtime(runner: Compiling, runtime: str, compilers: Compilers) -> RuntimeStatus:
    """Run ``runner``'s model as ``runtime`` ("onnxruntime" or "torchscript", made by ``compilers(runtime)``)
    from now on, if it passes its check; else the status says why not."""
    if runtime == "onnxruntime" and runner.device.type != "cpu":
        return RuntimeStatus(EAGER, (f"ONNX Runtime is used on CPU only, not on {runner.device}",))
    try:
        runner.compile(compilers(runtime), MAKING[runtime])
    except (RuntimeRefused, EagerReleased) as exc:
        return RuntimeStatus(EAGER, (str(exc),))
    return RuntimeStatus(NAMES[runtime])


def pack_runner(runner: Compiling, width: int, release: bool = False) -> PackingStatus:
    """Pack ``runner``'s windows ``width`` tokens a row, if the model gives the same logits so;
    else (or where anything fails) the status says why it stays padded."""
    try:
        runner.pack(width, release)
    except (RuntimeRefused, EagerReleased) as exc:
        return PackingStatus(reason=str(exc))
    except Exception as exc:  # noqa: BLE001 - a model that can not take packed rows stays padded
        return PackingStatus(reason=f"packing failed: {type(exc).__name__}")
    return PackingStatus(True, runner.pack_width)


def compile_packed(runner: Compiling, runtime: str, compilers: Compilers,
                   width: int) -> tuple[RuntimeStatus, PackingStatus] | None:
    """``runtime`` over packed rows in one step (``ModelRunner.compile_packed``), or None where that
    is refused, an unknown name or eager, or ONNX Runtime off a CPU: the runner is then as it was,
    and the step by step path (:func:`compile_runtime`, :func:`pack_runner`) says why."""
    if runtime not in MAKING or (runtime == "onnxruntime" and runner.device.type != "cpu"):
        return None
    try:
        runner.compile_packed(compilers(runtime), MAKING[runtime], width)
    except (RuntimeRefused, EagerReleased):
        return None
    return RuntimeStatus(NAMES[runtime]), PackingStatus(True, runner.pack_width)


class Tunable(Protocol):
    """What ``serve``'s start-up needs of a predictor (``ner_lit.inference.predictor.Predictor`` has it)."""

    runtime: RuntimeStatus
    packing: PackingStatus

    def use_onnxruntime(self) -> bool: ...

    def trace(self) -> bool: ...

    def pack(self, release: bool = False) -> bool: ...

    def serve_packed(self, runtime: str) -> bool: ...

    def release_eager(self) -> bool: ...

    def release_tokenizer(self) -> None: ...

    def quantize(self, pack: bool = True, kind: str = "int8") -> bool: ...


def choose_runtime(predictor: Tunable, runtime: str) -> RuntimeStatus:
    """Put ``runtime`` in use, or the first one after it (onnxruntime, torchscript, eager) that
    passes its start-up check; ``predictor.runtime`` (also returned) says what runs and why the
    ones asked for before it do not."""
    if runtime not in RUNTIMES:
        raise UnknownRuntime(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    refused: list[str] = []
    chosen = EAGER
    for name in RUNTIMES[RUNTIMES.index(runtime) :]:
        if name == EAGER:
            break
        if predictor.use_onnxruntime() if name == "onnxruntime" else predictor.trace():
            chosen = predictor.runtime.name
            break
        refused.extend(predictor.runtime.refused)
    predictor.runtime = RuntimeStatus(chosen, tuple(refused))
    return predictor.runtime


def prepare_runtime(predictor: Tunable, runtime: str, pack: bool = True,
                    quantize: str = "none") -> tuple[RuntimeStatus, PackingStatus]:
    """What ``serve`` does to a loaded predictor before the first request: put ``runtime`` in use
    (:func:`choose_runtime`), pack if asked, and then, where a compiled runtime runs every batch,
    release the eager network, so the server holds only the weights it runs, and the transformers
    tokenizer, so it holds one copy of the vocabulary (the aligner's). Returns the predictor's
    ``runtime`` and ``packing`` after it.

    Packed with a compiled runtime, the predictor first tries that in one step
    (``Predictor.serve_packed``: one export, not a padded one made and freed again); where that
    is refused, the step by step path below runs and its statuses say why.

    With ``quantize`` "int8" or "int8-small" (ONNX Runtime only) that int8 model is tried first
    (``Predictor.quantize``); where its answer check refuses it, the float runtime is chosen as
    without it, and the status says why int8 is not used."""
    if quantize != "none":
        if runtime != "onnxruntime":
            raise UnknownRuntime(f"{quantize} runs under ONNX Runtime only, not {runtime}")
        if predictor.quantize(pack, kind=quantize):
            predictor.release_tokenizer()
            return predictor.runtime, predictor.packing
        refused = predictor.runtime.refused
        status = prepare_runtime(predictor, runtime, pack)
        predictor.runtime = RuntimeStatus(predictor.runtime.name, refused + predictor.runtime.refused)
        return predictor.runtime, status[1]
    if pack and predictor.serve_packed(runtime):
        predictor.release_tokenizer()
        return predictor.runtime, predictor.packing
    choose_runtime(predictor, runtime)
    if pack:
        predictor.pack(release=True)
    predictor.release_eager()
    predictor.release_tokenizer()
    return predictor.runtime, predictor.packing
