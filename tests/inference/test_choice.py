"""The runtime choice's typed status: its banner text, the refusals it records, and the order serve tries things in."""
from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

from ner_lit.inference.choice import (
    EagerReleased,
    PackingStatus,
    RuntimeRefused,
    RuntimeStatus,
    compile_packed,
    compile_runtime,
    pack_runner,
    prepare_runtime,
)


@pytest.mark.parametrize("status, text", [
    (RuntimeStatus(), "eager"),
    (RuntimeStatus("ONNX Runtime"), "ONNX Runtime"),
    (RuntimeStatus("eager", ("its TorchScript trace differs by 0.5 on a 4x64 batch",)),
     "eager (its TorchScript trace differs by 0.5 on a 4x64 batch)"),
    (RuntimeStatus("TorchScript", ("ONNX Runtime export failed: ImportError", "x")),
     "TorchScript (ONNX Runtime export failed: ImportError; x)"),
])
def test_a_runtime_status_reads_as_the_banner_did(status, text):
    assert str(status) == text


@pytest.mark.parametrize("status, text", [
    (PackingStatus(), "padded"),
    (PackingStatus(True, 128), "packed (128 tokens a row)"),
    (PackingStatus(reason="packing failed: TypeError"), "padded (packing failed: TypeError)"),
])
def test_a_packing_status_reads_as_the_banner_did(status, text):
    assert str(status) == text


def test_statuses_are_values_that_can_not_be_changed_in_place():
    assert RuntimeStatus("TorchScript") == RuntimeStatus("TorchScript") and RuntimeStatus("TorchScript").compiled
    assert not RuntimeStatus().compiled
    with pytest.raises(AttributeError):
        RuntimeStatus().name = "TorchScript"  # type: ignore[misc]


class _Runner:
    """A runner whose compile and pack succeed or raise as told."""

    def __init__(self, device: str = "cpu", error: BaseException | None = None) -> None:
        self.device = SimpleNamespace(type=device)
        self.error = error
        self.pack_width = 64
        self.calls: list[tuple] = []

    def _do(self, *call) -> None:
        self.calls.append(call)
        if self.error is not None:
            raise self.error

    def compile(self, make, what) -> None:
        self._do("compile", what)

    def pack(self, width, release=False) -> None:
        self._do("pack", width, release)

    def compile_packed(self, make, what, width) -> None:
        self._do("compile_packed", what, width)


def _compilers(runtime: str):
    return {"onnxruntime": "onnx-maker", "torchscript": "trace-maker"}[runtime]


def test_a_refused_runtime_is_recorded_in_refused_and_eager_runs():
    runner = _Runner(error=RuntimeRefused("its TorchScript trace differs by 0.5 on a 4x64 batch"))
    status = compile_runtime(runner, "torchscript", _compilers)
    assert status == RuntimeStatus("eager", ("its TorchScript trace differs by 0.5 on a 4x64 batch",))
    assert runner.calls == [("compile", "TorchScript trace")]


def test_a_released_eager_model_is_a_refusal_too():
    status = compile_runtime(_Runner(error=EagerReleased("the eager model was released")), "onnxruntime", _compilers)
    assert status == RuntimeStatus("eager", ("the eager model was released",))


def test_onnxruntime_off_a_cpu_is_refused_without_trying():
    runner = _Runner("cuda")
    status = compile_runtime(runner, "onnxruntime", _compilers)
    assert status.name == "eager" and status.refused[0].startswith("ONNX Runtime is used on CPU only")
    assert runner.calls == [] and compile_packed(runner, "onnxruntime", _compilers, 64) is None


def test_packing_that_fails_unexpectedly_stays_padded_naming_the_error():
    assert pack_runner(_Runner(error=TypeError("no position_ids")), 64) == PackingStatus(reason="packing failed: TypeError")
    assert pack_runner(_Runner(), 64, release=True) == PackingStatus(True, 64)


def test_one_step_packing_is_not_tried_for_eager_or_an_unknown_name():
    runner = _Runner()
    assert compile_packed(runner, "eager", _compilers, 64) is None
    assert compile_packed(runner, "tensorrt", _compilers, 64) is None
    assert runner.calls == []
    assert compile_packed(runner, "torchscript", _compilers, 64) == (RuntimeStatus("TorchScript"), PackingStatus(True, 64))


class _Predictor:
    """What serve's start-up drives: records the order of its steps."""

    def __init__(self, one_step: bool) -> None:
        self.one_step, self.steps = one_step, []
        self.runtime, self.packing = RuntimeStatus(), PackingStatus()

    def serve_packed(self, runtime: str) -> bool:
        self.steps.append("serve_packed")
        if self.one_step:
            self.runtime, self.packing = RuntimeStatus("ONNX Runtime"), PackingStatus(True, 64)
        return self.one_step

    def use_onnxruntime(self) -> bool:
        self.steps.append("use_onnxruntime")
        self.runtime = RuntimeStatus("ONNX Runtime")
        return True

    def trace(self) -> bool:
        raise AssertionError("not reached: ONNX Runtime passed")

    def pack(self, release: bool = False) -> bool:
        self.steps.append(f"pack(release={release})")
        self.packing = PackingStatus(True, 64)
        return True

    def release_eager(self) -> bool:
        self.steps.append("release_eager")
        return True

    def release_tokenizer(self) -> None:
        self.steps.append("release_tokenizer")


def test_prepare_runtime_tries_the_one_step_first_and_returns_the_statuses():
    one = _Predictor(one_step=True)
    assert prepare_runtime(one, "onnxruntime") == (RuntimeStatus("ONNX Runtime"), PackingStatus(True, 64))
    assert one.steps == ["serve_packed", "release_tokenizer"]
    steps = _Predictor(one_step=False)
    assert prepare_runtime(steps, "onnxruntime") == (RuntimeStatus("ONNX Runtime"), PackingStatus(True, 64))
    assert steps.steps == ["serve_packed", "use_onnxruntime", "pack(release=True)", "release_eager", "release_tokenizer"]


def test_the_choice_imports_no_torch():
    """serve --help imports serve's start-up, which imports the choice: it must stay light."""
    code = "import sys, ner_lit.inference.choice, ner_lit.serving.launch; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
