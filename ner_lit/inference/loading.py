"""A trained tagger, loaded for inference from a checkpoint or an exported directory.

Both are read through their :class:`~ner_lit.spec.TaggerSpec`, so a directory exported by
``fit`` predicts with the windows, decoding and label list of the checkpoint it came from,
and reports that checkpoint's validation scores.

Only what inference uses is kept: the network in eval mode and the tokenizer. A checkpoint
is memory-mapped (``torch.load(mmap=True, weights_only=True)``) and its weights are
assigned to the network as they lie in the file (no second copy); the rest of the file
(optimizer state of a ``last.ckpt``, loops, callbacks) is never read into memory, and the
checkpoint dict is dropped before this returns.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

from ner_lit.checkpoint.format import CheckpointError, check_weights_digest, load_checkpoint, weights_digest
from ner_lit.checkpoint.spec import SECTION, SpecError, TaggerSpec


@dataclass
class LoadedTagger:
    """A network, its tokenizer and its spec, with where they came from."""

    model: Any
    tokenizer: Any
    spec: TaggerSpec
    source: str
    #: a checkpoint's model config and recorded weights digest (verified at load): what names its
    #: network in the runtime cache's keys (:func:`ner_lit.inference.runtimes.identity_key`); None otherwise
    identity: Optional[dict] = None

    @property
    def name(self) -> str:
        return self.spec.name or getattr(self.model.config, "_name_or_path", "") or type(self.model).__name__


def from_checkpoint(path: str | Path) -> LoadedTagger:
    """The tagger of a ner_lit checkpoint, after every check of :func:`ner_lit.checkpoint.load_checkpoint`."""

    ckpt = load_checkpoint(path)
    spec = TaggerSpec.from_dict(ckpt[SECTION], str(path))
    state = ckpt["state_dict"]
    digest = ckpt[SECTION].get("weights_sha256")
    del ckpt  # the rest of the file (optimizer state, loops) is never touched
    return replace(_tagger(spec, state, str(path)), identity=identity_of(spec, digest))


def identity_of(spec: TaggerSpec, digest: Optional[str]) -> Optional[dict]:
    """What names a checkpoint's network in the runtime cache: its model config and weights digest."""
    if digest is None or spec.model_config is None:
        return None
    return {"model_config": dict(spec.model_config), "weights_sha256": digest}


def kept_spec(path: str | Path) -> tuple[TaggerSpec, Optional[dict]]:
    """A checkpoint's spec and identity: what a restart needs to find the graph it kept (whose own
    sha256 is checked before use). No network is built; the weights are only hashed against their
    recorded digest, so that a damaged file is refused on a restart as on a first start, although
    the graph kept from its intact self would serve."""
    ckpt = load_checkpoint(path, verify=False)
    check_weights_digest(ckpt, path)
    section = ckpt[SECTION]
    del ckpt
    try:
        spec = TaggerSpec.from_dict(section, str(path))
    except SpecError as exc:
        raise CheckpointError(str(exc)) from None
    return spec, identity_of(spec, section.get("weights_sha256"))


def from_checkpoint_on(path: str | Path, module: Any) -> Optional[LoadedTagger]:
    """The tagger of a ner_lit checkpoint built on the tensors of ``module`` (the ``NERModel`` that wrote
    it, still in memory) when they are the very weights the file holds, else None.

    What exporting the best model at the end of ``fit`` uses: when the best checkpoint is the
    latest state (its recorded weights digest is the module's), the export needs no second copy
    of the network, and none of the file's tensors is read (a checkpoint's pages, once read,
    count in the process's resident memory as much as a copy would). The tokenizer is the
    module's own object when the checkpoint records the same files. Only the checkpoint's
    pickled records are read, through :func:`ner_lit.checkpoint.load_checkpoint` without
    ``verify`` (the digest check it skips is the comparison made here).
    """

    ckpt = load_checkpoint(path, verify=False)
    section = ckpt[SECTION]
    del ckpt
    recorded = section.get("weights_sha256")
    state = module.state_dict()
    on_cpu = all(t.device.type == "cpu" for t in state.values() if hasattr(t, "device"))
    if recorded is None or not on_cpu or weights_digest(state) != recorded:
        return None  # on an accelerator the weights are not in host memory: loading the file costs no second copy there
    try:
        spec = TaggerSpec.from_dict(section, str(path))
    except SpecError as exc:
        raise CheckpointError(str(exc)) from None
    own = getattr(module, "spec", None)
    same_files = own is not None and dict(own.tokenizer_files) == dict(spec.tokenizer_files)
    return _tagger(spec, state, str(path), module.tokenizer if same_files else None)


def _tagger(spec: TaggerSpec, state: dict[str, Any], source: str, tokenizer: Any = None) -> LoadedTagger:
    """The network of ``spec`` holding the ``model.`` tensors of a NERModel state dict as they are (no copy)."""
    from transformers import AutoModelForTokenClassification


    weights = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    with _no_init():  # allocated, never written: the given tensors replace every one
        model = AutoModelForTokenClassification.from_config(spec.hf_config())
    missing, unexpected = model.load_state_dict(weights, strict=False, assign=True)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise CheckpointError(f"{source}: weights do not fit the model config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return LoadedTagger(model.eval(), spec.tokenizer() if tokenizer is None else tokenizer, spec, source)


def _no_init():
    """transformers' context that skips weight initialisation (a network's random weights, written
    only to be replaced, would take their full size in memory); none where a version lacks it."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:
        import contextlib

        return contextlib.nullcontext()
    return no_init_weights()


def from_model_dir(model_dir: str | Path, max_length: Optional[int] = None, stride: Optional[int] = None,
                   decoding: Optional[str] = None) -> LoadedTagger:
    """The tagger of an exported Hugging Face directory, with its ``ner_lit.json`` settings (or, for a
    directory another tool wrote, those :meth:`TaggerSpec.from_model_dir` infers); ``max_length``,
    ``stride`` and ``decoding``, where given, override the directory's."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer


    model_dir = Path(model_dir)
    try:
        spec = TaggerSpec.from_model_dir(model_dir)
        overrides = {k: v for k, v in (("max_length", max_length), ("stride", stride), ("decoding", decoding))
                     if v is not None}
        if overrides:
            spec = replace(spec, **overrides)
    except SpecError as exc:
        raise CheckpointError(str(exc)) from None
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForTokenClassification.from_pretrained(model_dir)
    outputs = tuple(model.config.id2label[i] for i in range(model.config.num_labels))
    if outputs != tuple(spec.id2label[i] for i in range(spec.num_outputs)):
        raise CheckpointError(f"{model_dir}: its config.json outputs {list(outputs)[:16]} differ from what its ner_lit.json's "
                              f"labels and tagging give {[spec.id2label[i] for i in range(min(16, spec.num_outputs))]}")
    return LoadedTagger(model.eval(), tokenizer, spec, str(model_dir))
