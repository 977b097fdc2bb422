"""int8 weights for ONNX Runtime, and the answer check that decides whether a quantized model may serve.

Dynamic quantization (ONNX Runtime's ``quantize_dynamic``) stores chosen weights as int8 and
quantizes each activation on the fly, so its matrix products run as integer ones (VNNI where
the CPU has it). Its logits are no longer the float model's to 1e-4, so the logit check every
other runtime passes (:func:`ner_lit.inference.runtimes.checked_compile`) only refuses
non-finite output for it; what decides is :func:`compare_answers`: the quantized model's
entities on example sentences against the float model's, with a stated tolerance
(:data:`TOLERANCE`). ``bench/quantize.py`` measured the recipes on a trained checkpoint and
``bench/results/quantize.md`` has the table :data:`INT8` was chosen from.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Sequence

from ner_lit.inference.choice import RuntimeRefused

#: What ``serve --quantize`` and ``Predictor.quantize`` accept.
Quantize = Literal["none", "int8"]
QUANTIZE_CHOICES = ("none", "int8")


@dataclass(frozen=True)
class Int8Recipe:
    """What ``quantize_dynamic`` is asked for: which operator types get int8 weights, per output
    channel or per tensor, the 7-bit ``reduce_range`` (for CPUs without VNNI, whose 8-bit
    products can saturate), and node names (substrings) left in float."""

    op_types: tuple[str, ...] = ("MatMul",)
    per_channel: bool = True
    reduce_range: bool = False
    keep_float: tuple[str, ...] = ()
    weights: Literal["int8", "uint8"] = "int8"

    def key(self) -> dict:
        """Everything here that changes the graph: part of the runtime cache's key."""
        return asdict(self)


#: The recipe ``serve --quantize int8`` uses on a CPU with VNNI (bench/results/quantize.md:
#: per-channel int8 weights of every weight MatMul, the word embeddings and everything else in float).
INT8 = Int8Recipe()
#: ... and on one without: uint8 weights. Without VNNI, ONNX Runtime multiplies uint8 activations by
#: int8 weights with an instruction whose 16-bit sums saturate (its documentation's advice:
#: ``reduce_range`` or uint8 weights); uint8 x uint8 takes another path that does not.
INT8_NO_VNNI = Int8Recipe(weights="uint8")


def has_vnni(flags: str | None = None) -> bool:
    """Whether this CPU has the VNNI dot-product instructions (AVX512-VNNI or AVX-VNNI), from /proc/cpuinfo."""
    if flags is None:
        try:
            flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags.split()))


def recipe_for_this_cpu() -> Int8Recipe:
    """:data:`INT8` where the CPU has VNNI, :data:`INT8_NO_VNNI` where it does not."""
    return INT8 if has_vnni() else INT8_NO_VNNI

#: How many of the float model's check entities the quantized model may miss or add (as a
#: fraction of them, at least one): beyond it the quantized model is refused.
TOLERANCE = 0.02


class QuantizationRefused(RuntimeRefused):
    """A quantized model whose answers differ from the float model's beyond the tolerance."""


def quantize_graph(float_path: Path, out_path: Path, recipe: Int8Recipe = INT8) -> None:
    """Write ``float_path``'s ONNX graph with int8 weights to ``out_path`` (the float file is not changed)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    nodes = onnx.load(str(float_path), load_external_data=False).graph.node
    exclude = [n.name for n in nodes if any(part in n.name for part in recipe.keep_float)]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to run a pre-processing step, logged on every call, is not the user's
    try:
        quantize_dynamic(str(float_path), str(out_path), op_types_to_quantize=list(recipe.op_types),
                         per_channel=recipe.per_channel, reduce_range=recipe.reduce_range,
                         weight_type=QuantType.QInt8 if recipe.weights == "int8" else QuantType.QUInt8,
                         nodes_to_exclude=exclude, extra_options={"MatMulConstBOnly": True})
    finally:
        root.setLevel(level)


def check_texts() -> list[str]:
    """The sentences a quantized model's answers are checked on: the 100 of the packaged sample's
    dev split (Korean news-style sentences with dates, people, places, organisations)."""
    from ner_lit.corpus.klue import iter_klue_tsv
    from ner_lit.sample import SAMPLE_DEV

    return [s.text for s in iter_klue_tsv(SAMPLE_DEV)]


@dataclass(frozen=True)
class Agreement:
    """How a quantized model's entities compare with the float model's on the check sentences."""

    entities: int  # the float model's
    differ: int  # missed plus added (a changed span or type counts as one of each)
    allowed: int

    @property
    def ok(self) -> bool:
        return self.differ <= self.allowed

    def __str__(self) -> str:
        return (f"{self.differ} of {self.entities} check entities differ from the float model's "
                f"(at most {self.allowed} allowed)")


def compare_answers(float_answers: Sequence, quantized_answers: Sequence, tolerance: float | None = None) -> Agreement:
    """The entities (span and type) of two models' predictions of the same texts, compared
    (``tolerance``: the share that may differ, default :data:`TOLERANCE`)."""
    tolerance = TOLERANCE if tolerance is None else tolerance
    want = {(i, e.start, e.end, e.label) for i, p in enumerate(float_answers) for e in p.entities}
    got = {(i, e.start, e.end, e.label) for i, p in enumerate(quantized_answers) for e in p.entities}
    return Agreement(len(want), len(want ^ got), max(1, int(tolerance * len(want))))
