"""int8 weights for ONNX Runtime, and the answer check that decides whether a quantized model may serve.

Dynamic quantization (ONNX Runtime's ``quantize_dynamic``) stores chosen weights as int8 and
quantizes each activation on the fly, so its matrix products run as integer ones (VNNI where
the CPU has it). Its logits are no longer the float model's to 1e-4, so the logit check every
other runtime passes (:func:`ner_lit.inference.runtimes.checked_compile`) only refuses
non-finite output for it; what decides is :func:`compare_answers`: the quantized model's
entities on example sentences against the float model's, with a stated tolerance
(:data:`TOLERANCE`). ``bench/quantize.py`` measured the recipes on a trained checkpoint and
``bench/results/quantize.md`` has the table :data:`RECIPES` were chosen from.
"""
from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal, Sequence

from ner_lit.inference.choice import RuntimeRefused

#: What ``serve --quantize`` and ``test``/``validate``/``predict --quantize`` accept: ``none`` (float
#: weights) or a recipe of :data:`RECIPES`.
QUANTIZE_CHOICES = ("none", "int8", "int8-small")


@dataclass(frozen=True)
class Int8Recipe:
    """What ``quantize_dynamic`` is asked for: which operator types get int8 weights, per output
    channel or per tensor, the 7-bit ``reduce_range`` (for CPUs without VNNI, whose 8-bit
    products can saturate), and the nodes left in float (regular expressions searched in their
    names, such as ``classifier`` or ``layer\\.11/``)."""

    op_types: tuple[str, ...] = ("MatMul",)
    per_channel: bool = True
    reduce_range: bool = False
    keep_float: tuple[str, ...] = ()
    weights: Literal["int8", "uint8"] = "int8"

    def key(self) -> dict:
        """Everything here that changes the graph: part of the runtime cache's key."""
        return asdict(self)


#: ``int8``: per-channel int8 weights in every weight MatMul but the feed-forward output ones (the
#: ``layer.N/output/dense`` products, whose GELU inputs have the widest range); the word embeddings
#: and everything else in float. On multilingual-e5-small it keeps dev F1e within 0.2 of float
#: (bench/results/quantize.md).
INT8 = Int8Recipe(keep_float=(r"layer\.\d+/output/dense",))
#: ``int8-small``: every weight MatMul and the word embeddings (Gather) in int8: the smallest graph
#: and resident memory (the embeddings are most of the weights) and the fastest, for about half a
#: point of F1e.
INT8_SMALL = Int8Recipe(op_types=("MatMul", "Gather"))
RECIPES = {"int8": INT8, "int8-small": INT8_SMALL}


def has_vnni(flags: str | None = None) -> bool:
    """Whether this CPU has the VNNI dot-product instructions (AVX512-VNNI or AVX-VNNI), from /proc/cpuinfo."""
    if flags is None:
        try:
            flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags.split()))


def recipe_for(kind: str, vnni: bool | None = None) -> Int8Recipe:
    """The recipe ``kind`` names (:data:`RECIPES`), as this CPU (or one with ``vnni`` or not) runs it
    best: without VNNI, ONNX Runtime multiplies uint8 activations by int8 weights with an
    instruction whose 16-bit sums can saturate (its documentation's advice: ``reduce_range`` or
    uint8 weights), so there the weights are uint8, which takes a path that does not."""
    if kind not in RECIPES:
        raise ValueError(f"quantize must be one of {', '.join(RECIPES)}, got {kind!r}")
    recipe = RECIPES[kind]
    return recipe if (has_vnni() if vnni is None else vnni) else replace(recipe, weights="uint8")


#: How many of the float model's check entities the quantized model may miss or add (as a
#: fraction of them, at least one): beyond it the quantized model is refused. On a trained
#: multilingual-e5-small, int8 weights in every MatMul move 14 of 290 (4.8%) and cost 0.34 dev F1e; a broken
#: quantization (near-random output, onnxruntime issue 9599) moves most of them
#: (bench/results/quantize.md).
TOLERANCE = 0.10


class QuantizationRefused(RuntimeRefused):
    """A quantized model whose answers differ from the float model's beyond the tolerance."""


def quantize_graph(float_path: Path, out_path: Path, recipe: Int8Recipe = INT8) -> None:
    """Write ``float_path``'s ONNX graph with int8 weights to ``out_path`` (the float file is not changed)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    nodes = onnx.load(str(float_path), load_external_data=False).graph.node
    exclude = [n.name for n in nodes if any(re.search(pattern, n.name) for pattern in recipe.keep_float)]
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
