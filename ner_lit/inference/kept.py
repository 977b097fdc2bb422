"""What ``serve`` makes at start-up and keeps for the next start: int8 weights after an answer check, and
the verdict that lets a restart load the kept graph without building a network.

* :func:`quantize` -- a predictor's model under ONNX Runtime with int8 weights, used only if its
  entities on the check sentences agree with the float model's (:mod:`ner_lit.inference.quantization`);
* :func:`note_kept` -- after a start passed every check, that verdict recorded beside the packed
  graph the runtime cache keeps (:class:`~ner_lit.inference.runtimes.RuntimeCache`);
* :func:`from_kept` -- a restart: the checkpoint's spec and identity, the kept graph, its verdict;
  no network is built, so no check needs one.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

from ner_lit.inference import quantization
from ner_lit.inference.choice import EagerReleased, PackingStatus, RuntimeRefused, RuntimeStatus
from ner_lit.inference.quantization import Agreement, Int8Recipe, QuantizationRefused, check_texts, compare_answers, recipe_for
from ner_lit.inference.runtimes import int8_compiler


def quantize(predictor: Any, pack: bool, width: int, kind: str = "int8", recipe: Optional[Int8Recipe] = None,
             tolerance: Optional[float] = None) -> bool:
    """Run ``predictor``'s model from now on under ONNX Runtime with int8 weights (``recipe``, default the
    recipe ``kind`` names, as :func:`~ner_lit.inference.quantization.recipe_for` gives it for this CPU),
    packed if asked, and release the eager model, if its answers pass the check: its entities on the
    check sentences (:func:`~ner_lit.inference.quantization.check_texts`) against the float model's,
    at most ``tolerance`` of them differing (default :data:`~ner_lit.inference.quantization.TOLERANCE`).
    Where it fails, nothing changed, the eager model stays, and ``runtime.refused`` says why;
    ``predictor.quantization`` keeps the check's :class:`Agreement`.

    int8 matrix products do fewer, cheaper operations per token than float ones (VNNI
    instructions where the CPU has them) and the weights take a quarter of the bytes; the
    answers may move a little, which the check bounds. CPU only.
    """
    if predictor.device.type != "cpu":
        return _refused(predictor, f"int8 runs under ONNX Runtime on a CPU only, not on {predictor.device}")
    texts = check_texts()
    want = predictor.predict(texts)  # the float model's answers, before anything changes
    make = int8_compiler(predictor.runtime_cache, recipe or recipe_for(kind), predictor.identity)
    checked: list[Agreement] = []

    def accept() -> None:
        checked.append(compare_answers(want, predictor.predict(texts),
                                       quantization.TOLERANCE if tolerance is None else tolerance))
        if not checked[-1].ok:
            raise QuantizationRefused(f"{kind} refused: {checked[-1]}")

    runner = predictor.runner
    try:
        if pack:
            try:
                runner.compile_packed(make, f"{kind} ONNX Runtime export", width, accept)
            except QuantizationRefused:
                raise
            except RuntimeRefused:  # packing itself refused: int8 padded still serves
                pack = False
        if not pack:
            runner.compile(make, f"{kind} ONNX Runtime export", accept)
    except (RuntimeRefused, EagerReleased) as exc:
        return _refused(predictor, str(exc))
    predictor.runtime, predictor.quantization = RuntimeStatus(f"ONNX Runtime {kind}"), checked[-1]
    predictor.packing = PackingStatus(True, runner.pack_width) if runner.packed is not None else PackingStatus()
    if recipe is None and (tolerance is None or tolerance == quantization.TOLERANCE):  # what from_kept looks for
        note_kept(predictor, kind)
    return True


def _refused(predictor: Any, reason: str) -> bool:
    predictor.runtime = RuntimeStatus(predictor.runtime.name, predictor.runtime.refused + (reason,))
    return False


def from_kept(cls: type, path: str | Path, cache: Path, quantize: str = "none") -> Optional[Any]:
    """The checkpoint's predictor (a ``cls``) as an earlier ``serve`` of it left it, ready, or None.

    An earlier start that made the packed ONNX Runtime graph (float, or the ``quantize``
    recipe) and passed every start-up check (the logit checks; for int8 the answer check,
    with the same check sentences and tolerance) recorded that beside the graph it kept.
    Here the checkpoint's records are read and its weights hashed against their recorded
    digest (a damaged file is refused as on a first start), the graph is found by the
    checkpoint's identity, its sha256 checked, and loaded: no network is built, so no check
    needs one. Anything else (no such graph or record, another recipe, a graph that fails its
    digest) gives None, and the caller loads and checks as on a first start.
    """
    from ner_lit.inference.loading import LoadedTagger, kept_spec
    from ner_lit.inference.runner import PACK_WIDTH
    from ner_lit.inference.runtimes import PackedLogits, RuntimeCache, identity_key, kept_runner

    spec, identity = kept_spec(path)
    if identity is None:
        return None
    recipe = None if quantize == "none" else recipe_for(quantize)
    key = identity_key(PackedLogits.__name__, PackedLogits.inputs, identity, recipe)
    served = RuntimeCache(cache).record(key).get("served")
    if not isinstance(served, dict) or served != {**served, **_verdict_terms(quantize)}:
        return None
    runner = kept_runner(cache, key, PackedLogits.inputs)
    if runner is None:
        return None
    config = SimpleNamespace(**dict(spec.model_config or {}))  # what is read of it: sizes, ids, its name
    tokenizer = _kept_names(served.get("tokenizer"), spec) or spec.tokenizer()
    predictor = cls._of(LoadedTagger(_NoNetwork(config), tokenizer, spec, str(path), identity), "cpu")
    predictor.runner.use_kept(runner, int(served["first_position"]), int(served.get("width", PACK_WIDTH)))
    predictor.runtime = RuntimeStatus("ONNX Runtime" if quantize == "none" else f"ONNX Runtime {quantize}")
    predictor.packing = PackingStatus(True, predictor.runner.pack_width)
    if served.get("check"):
        predictor.quantization = Agreement(**served["check"])
    predictor.kept = True
    predictor.release_tokenizer()  # as a first start ends: one copy of the vocabulary, the aligner's
    return predictor


def note_kept(predictor: Any, quantize: str) -> None:
    """Record beside the kept packed graph that it passed every start-up check, for :func:`from_kept`."""
    key = getattr(predictor.runner.packed, "cache_key", None)
    if key is None or predictor.runtime_cache is None or predictor.identity is None or not predictor.packing.packed:
        return
    from ner_lit.alignment.tokenizers import PieceNames
    from ner_lit.inference.runtimes import RuntimeCache

    names = predictor.tokenizer if isinstance(predictor.tokenizer, PieceNames) else PieceNames.of(predictor.tokenizer,
                                                                                                    predictor.aligner)
    kept_names = names.record()
    if kept_names is not None:
        kept_names["files_sha256"] = predictor.tokenizer_digest
    agreement = predictor.quantization
    check = None if agreement is None else {"entities": agreement.entities, "differ": agreement.differ,
                                            "allowed": agreement.allowed}
    RuntimeCache(predictor.runtime_cache).note(key, served={**_verdict_terms(quantize), "check": check,
                                                            "first_position": predictor.runner.first_position,
                                                            "width": predictor.runner.pack_width,
                                                            "tokenizer": kept_names})


def _kept_names(record: Any, spec: Any) -> Optional[Any]:
    """The tokenizer names an earlier start recorded for the checkpoint's very tokenizer files, with
    the text tokenizer read back from its kept copy: no transformers tokenizer is loaded. None
    (load the tokenizer) where there is no such record, other files, or no intact copy."""
    from ner_lit.alignment.tokenizers import PieceNames

    if not isinstance(record, dict) or record.get("files_sha256") != spec.tokenizer_digest():
        return None
    return PieceNames.from_record(record)


class _NoNetwork:
    """Stands for the network where only its config is needed (:func:`from_kept`)."""

    def __init__(self, config) -> None:
        self.config = config

    def to(self, device) -> "_NoNetwork":
        return self

    def eval(self) -> "_NoNetwork":
        return self


def _verdict_terms(quantize: str) -> dict:
    """What a recorded start-up verdict holds for: the recipe, and for int8 the answer check's
    sentences, tolerance and ner_lit version (which decodes the answers)."""
    from ner_lit.version import __version__

    terms: dict = {"quantize": quantize}
    if quantize != "none":
        terms.update(check_texts=hashlib.sha256("\n".join(check_texts()).encode()).hexdigest(),
                     tolerance=quantization.TOLERANCE, ner_lit=__version__)
    return terms
