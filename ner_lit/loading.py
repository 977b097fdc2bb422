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

from ner_lit.spec import SECTION, SpecError, TaggerSpec


@dataclass
class LoadedTagger:
    """A network, its tokenizer and its spec, with where they came from."""

    model: Any
    tokenizer: Any
    spec: TaggerSpec
    source: str

    @property
    def name(self) -> str:
        return self.spec.name or getattr(self.model.config, "_name_or_path", "") or type(self.model).__name__


def from_checkpoint(path: str | Path) -> LoadedTagger:
    """The tagger of a ner_lit checkpoint, after every check of :func:`ner_lit.checkpoint.load_checkpoint`."""
    from transformers import AutoModelForTokenClassification

    from ner_lit.checkpoint import CheckpointError, load_checkpoint

    ckpt = load_checkpoint(path)
    spec = TaggerSpec.from_dict(ckpt[SECTION], str(path))
    state = {k[len("model.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    del ckpt  # the rest of the file (optimizer state, loops) is never touched
    with _no_init():  # allocated, never written: the checkpoint's tensors replace every one
        model = AutoModelForTokenClassification.from_config(spec.hf_config())
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit the model config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return LoadedTagger(model.eval(), spec.tokenizer(), spec, str(path))


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

    from ner_lit.checkpoint import CheckpointError

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
    labels = tuple(model.config.id2label[i] for i in range(model.config.num_labels))
    if labels != spec.labels:
        raise CheckpointError(f"{model_dir}: its config.json labels {list(labels)} differ from its ner_lit.json {list(spec.labels)}")
    return LoadedTagger(model.eval(), tokenizer, spec, str(model_dir))
