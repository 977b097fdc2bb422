"""Texts in, entities out: the inference path shared by ``serve`` and exported models.

:class:`Predictor` is a facade over these parts, each with one job:

* :mod:`ner_lit.inference.loading` -- the network, tokenizer and :class:`~ner_lit.checkpoint.spec.TaggerSpec` of
  a checkpoint or an exported directory;
* :mod:`ner_lit.inference.runtimes` -- TorchScript and ONNX Runtime, and the logit checks that decide
  whether one may run; :mod:`ner_lit.inference.choice` records which runs (``runtime``, ``packing``);
* :mod:`ner_lit.inference.runner` -- windows batched, padded or packed, through the runtime in use;
* :mod:`ner_lit.alignment.answers` -- decoded tags to entities and the per-token list, as ``predict`` makes them.

It uses the same ``Aligner`` as training and evaluation, so a text longer than the model's
window is predicted through the same overlapping windows, never truncated.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Optional, Sequence

import torch

from ner_lit.alignment.aligner import Aligner
from ner_lit.alignment.answers import Prediction, prediction
from ner_lit.alignment.tokenizers import PieceNames
from ner_lit.alignment.windows import DEFAULT_CHAR_SLOTS, Decoded, EncodedSentence, Window
from ner_lit.corpus.records import Sentence
from ner_lit.inference.choice import (
    PackingStatus,
    RuntimeStatus,
    compile_packed,
    compile_runtime,
    pack_runner,
)
from ner_lit.inference.loading import from_checkpoint, from_model_dir
from ner_lit.inference.quantization import (
    Agreement,
    Int8Recipe,
)
from ner_lit.inference.runner import PACK_WIDTH, ModelRunner
from ner_lit.inference.runtimes import compiler

__all__ = ["PACK_WIDTH", "Prediction", "Predictor", "WindowPiece"]


@dataclass
class WindowPiece:
    """Consecutive windows of one long sentence, run through the model apart from the rest
    of it, so that a long text is spread over several model batches (which other requests
    join) rather than holding one; :meth:`Predictor.forward` gives their logits, and
    :meth:`Predictor.join` decodes the sentence from all its pieces' logits."""

    windows: list[Window]


def pieces_of(encoded: EncodedSentence, limit: int) -> list[EncodedSentence | WindowPiece]:
    """``encoded`` itself, or, when its windows hold more than ``limit`` tokens, pieces of
    consecutive windows of at most that many tokens each (a window alone may be more)."""
    if sum(len(w.input_ids) for w in encoded.windows) <= limit:
        return [encoded]
    pieces: list[EncodedSentence | WindowPiece] = []
    current: list[Window] = []
    for window in encoded.windows:
        if current and sum(len(w.input_ids) for w in current) + len(window.input_ids) > limit:
            pieces.append(WindowPiece(current))
            current = []
        current.append(window)
    pieces.append(WindowPiece(current))
    return pieces


class Predictor:
    """A token-classification model, its tokenizer and labels, ready to tag raw text.

    Size: the public facade over loading, the runner, the runtime choice and what start-up keeps;
    most methods are a few lines that hand the job to the module that owns it.

    ``tagging`` says how the model's outputs are read (:mod:`ner_lit.alignment`): ``char``, a
    row of labels per character a token owns (what ner_lit trains), or ``token``, one label
    per token (a plain Hugging Face token classifier, and taggers of format 2 and before).
    Loaded with :meth:`from_checkpoint` or :meth:`from_pretrained`, the tagger's spec says which.
    """

    def __init__(
        self,
        model,
        tokenizer,
        labels: Sequence[str],
        max_length: int = 512,
        stride: int = 64,
        source: str = "",
        name: str = "",
        scores: dict[str, float] | None = None,
        device: str = "cpu",
        batch_size: int = 64,
        decoding: str = "viterbi",
        tagging: str = "token",
        char_slots: int = DEFAULT_CHAR_SLOTS,
    ) -> None:
        self.device = torch.device(device)
        model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.labels = list(labels)
        limit = getattr(model.config, "max_position_embeddings", max_length) or max_length
        self.max_length = min(max_length, limit)
        if self.max_length < max_length:  # windows shortened to fit the model: shorten their overlap too
            stride = min(stride, self.max_length // 2)
        # Otherwise the windows are those asked for (a checkpoint's: those of training and `predict`).
        self.aligner = Aligner(tokenizer, self.labels, max_length=self.max_length, stride=stride, decoding=decoding,
                               tagging=tagging, char_slots=char_slots)
        self.source = source
        self.name = name or getattr(model.config, "_name_or_path", "") or type(model).__name__
        self.scores = dict(scores or {})
        self.runner = ModelRunner(model, self.aligner.num_outputs, tokenizer.pad_token_id or 0, self.max_length, self.device,
                                  batch_size)
        self._tokenizer_lock = threading.Lock()
        self.runtime = RuntimeStatus()  # what runs the model (eager until a compiled runtime passes its check)
        #: where ONNX Runtime's exported graphs are kept between starts (serve sets it); None: export every time
        self.runtime_cache: Optional[Path] = None
        self.packing = PackingStatus()  # whether windows share model rows (padded until pack())
        self.quantization: Optional[Agreement] = None  # after quantize(): its answer check
        #: a checkpoint's model config and weights digest, which name its graphs in the runtime cache
        self.identity: Optional[dict] = None
        self.tokenizer_digest: Optional[str] = None  # the sha256 of a checkpoint's tokenizer files (kept starts)
        self.kept: bool | str = False  # whether from_kept() made it, "helper" after a helper process's first start (the banner says)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu") -> "Predictor":
        return cls._of(from_checkpoint(path), device)

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, device: str = "cpu", max_length: Optional[int] = None,
                        stride: Optional[int] = None, decoding: Optional[str] = None) -> "Predictor":
        """An exported directory, with the windows, decoding and scores its ``ner_lit.json`` records
        (see :func:`ner_lit.inference.loading.from_model_dir`); the arguments given override them."""

        return cls._of(from_model_dir(model_dir, max_length, stride, decoding), device)

    @classmethod
    def _of(cls, loaded, device: str) -> "Predictor":
        spec = loaded.spec
        predictor = cls(loaded.model, loaded.tokenizer, spec.labels, max_length=spec.max_length, stride=spec.stride,
                        source=loaded.source, name=loaded.name, scores=dict(spec.scores), device=device,
                        decoding=spec.decoding, tagging=spec.tagging, char_slots=spec.char_slots)
        if spec.crf is not None:  # a CRF head: its learned transitions join the Viterbi path
            predictor.aligner.decoder.use_crf(spec.crf["transitions"], spec.crf["start"])
        predictor.identity = loaded.identity
        predictor.tokenizer_digest = spec.tokenizer_digest()  # what a restart's kept tokenizer names must match
        return predictor

    @classmethod
    def from_kept(cls, path: str | Path, cache: Path, quantize: str = "none") -> Optional["Predictor"]:
        """The checkpoint's predictor as an earlier ``serve`` of it left it, or None
        (:func:`ner_lit.inference.kept.from_kept`: no network is built)."""
        from ner_lit.inference.kept import from_kept

        return from_kept(cls, path, cache, quantize)


    # ------------------------------------------------------------------ the runner's parts
    @property
    def model(self):
        """The eager network (None after :meth:`release_eager`)."""
        return self.runner.model

    @model.setter
    def model(self, value) -> None:
        self.runner.model = value

    @property
    def batch_size(self) -> int:
        return self.runner.batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self.runner.batch_size = value

    # ------------------------------------------------------------------ runtimes (chosen by ner_lit.inference.choice)
    def trace(self) -> bool:
        """Run the model from now on as a frozen TorchScript trace, if it gives the same logits.

        A trace runs the whole forward pass in C++: no Python per layer, and the GIL released
        for all of it, so request threads of a server can tokenize and decode meanwhile.
        Returns whether the trace is in use; ``runtime`` says why not.
        """
        return self._compile("torchscript")

    def use_onnxruntime(self) -> bool:
        """Run the model from now on exported to ONNX under ONNX Runtime, if it gives the same logits.

        ONNX Runtime fuses the layers' small operations (bias, GELU, layer norm) into its
        matrix products and keeps the weights pre-packed, most of the time of a short
        sentence's forward pass on a CPU (bench/results/serve.md has the server figures).
        CPU only. Returns whether it is in use; ``runtime`` says why not.
        """
        return self._compile("onnxruntime")

    def _compile(self, runtime: str) -> bool:
        """Where the compiled model differs or fails, the eager model stays and ``runtime`` says why.
        :meth:`pack` afterwards packs with the same runtime."""
        self.runtime = compile_runtime(self.runner, runtime, partial(compiler, cache=self.runtime_cache, identity=self.identity))
        if self.runtime.compiled:
            self.packing = PackingStatus()
        return self.runtime.compiled

    def pack(self, width: int = PACK_WIDTH, release: bool = False) -> bool:
        """Put several windows in one model row from now on, if the model gives the same logits.

        Padded, a batch of short sentences runs every one of them as long as its longest,
        and the linear layers, most of the model's time, work on the padding. Packed, each
        window attends only to itself (a 4D additive mask) and gets the position ids it has
        alone, with the runtime in use (call :meth:`trace` or :meth:`use_onnxruntime` first
        to pack that runtime too). Where that differs, or anything fails, windows stay
        padded and ``packing`` says why. Returns whether packing is in use. With ``release`` (what
        ``serve`` does), the eager model is freed once the packed runtime runs every batch, as
        :meth:`release_eager` frees it, and start-up never holds both compiled graphs.
        """
        self.packing = pack_runner(self.runner, width, release)
        return self.packing.packed

    def serve_packed(self, runtime: str, width: int = PACK_WIDTH) -> bool:
        """What a server wants in one step: ``runtime`` ("onnxruntime" or "torchscript") over packed
        rows, the eager model released, with one export (see :meth:`ModelRunner.compile_packed`).
        Returns whether that is in use; where not, nothing changed and :meth:`use_onnxruntime` or
        :meth:`trace`, :meth:`pack` and :meth:`release_eager` give the step by step path and its reasons."""
        done = compile_packed(self.runner, runtime, partial(compiler, cache=self.runtime_cache, identity=self.identity), width)
        if done is not None:
            self.runtime, self.packing = done
            from ner_lit.inference.kept import note_kept

            note_kept(self, "none")
        return done is not None

    def quantize(self, pack: bool = True, width: int = PACK_WIDTH, kind: str = "int8", recipe: Optional[Int8Recipe] = None,
                 tolerance: Optional[float] = None) -> bool:
        """Run the model from now on under ONNX Runtime with int8 weights, if its answers pass the
        check against the float model's (:func:`ner_lit.inference.kept.quantize`, which says how);
        where they do not, nothing changed and ``runtime.refused`` says why."""
        from ner_lit.inference.kept import quantize

        return quantize(self, pack, width, kind, recipe, tolerance)


    def release_tokenizer(self) -> None:
        """Keep the aligner's text tokenizer only: the transformers tokenizer gives way to the piece
        names answers need (:class:`~ner_lit.alignment.tokenizers.PieceNames`), so a server holds one
        copy of the vocabulary (a 250k-piece one is hundreds of MB), not two. Encoding and answers
        are unchanged."""
        if isinstance(self.tokenizer, PieceNames):
            return
        names = PieceNames.of(self.tokenizer, self.aligner)
        self.tokenizer = self.aligner.tokenizer = names

    def release_eager(self) -> bool:
        """Free the eager network once a compiled runtime (and its packing, if any) is chosen for good:
        a server then holds only the weights it runs. Afterwards :meth:`trace`, :meth:`use_onnxruntime`
        and :meth:`pack` refuse (``runtime``/``packing`` say why). Returns whether it was freed."""
        return self.runner.release_eager()

    # The three stages of a prediction. ``serve`` runs them apart: each request thread
    # prepares and finishes its own text, and only ``forward`` goes through the
    # micro-batcher, so tokenizing and answering one request overlaps the model running
    # another's.
    def prepare(self, texts: Sequence[str]) -> list[EncodedSentence]:
        """Tokenize and window texts (no model). Safe to call from many threads."""
        out = []
        for i, text in enumerate(texts):
            # A fast tokenizer refuses concurrent use ("Already borrowed") while its padding
            # or truncation state is being set; one lock keeps any version of it safe. It is
            # taken for one text at a time, so a short request's text waits for at most one
            # other text, never for a whole batch of long ones.
            with self._tokenizer_lock:
                (encoded,) = self.aligner.encode([Sentence(str(i), text)], with_labels=False)
            out.append(replace(encoded, index=i))
        return out

    @property
    def batch_tokens(self) -> int:
        """The tokens of one full model batch (``batch_size`` windows of ``max_length``): how
        much work a server's micro-batch takes at most (see :meth:`cost`)."""
        return self.batch_size * self.max_length

    @staticmethod
    def cost(item: EncodedSentence | WindowPiece) -> int:
        """An item's work for the model: its tokens, specials included."""
        return sum(len(w.input_ids) for w in item.windows)

    def split(self, encoded: EncodedSentence) -> list[EncodedSentence | WindowPiece]:
        """``encoded`` as items for :meth:`forward` (:func:`pieces_of` at half a model batch,
        :attr:`batch_tokens`), so a batch always has room for other requests beside one of them."""
        return pieces_of(encoded, max(1, self.batch_tokens // 2))

    def join(self, encoded: EncodedSentence, outputs: Sequence[torch.Tensor]) -> Decoded:
        """A sentence's tags from the logits :meth:`forward` gave its pieces (in order)."""
        width = max(o.shape[1] for o in outputs)
        logits = torch.zeros(sum(o.shape[0] for o in outputs), width, self.aligner.num_outputs)
        row = 0
        for o in outputs:
            logits[row : row + o.shape[0], : o.shape[1]] = o
            row += o.shape[0]
        return self.aligner.decode([encoded], logits).sentence(0)

    def forward(self, encoded: Sequence[EncodedSentence | WindowPiece]) -> list[Decoded | torch.Tensor]:
        """The model over every window of ``encoded``, decoded: each sentence's tags.

        Decoding (softmax, the Viterbi path) runs here over the whole batch at once: its
        cost grows with the longest sentence, not with their number, so a batch of several
        costs little more than one sentence would in each request's own thread. Windows are packed or
        length-sorted into batches (see :meth:`ModelRunner.logits`). Each result is one sentence's
        :class:`Decoded`, ready for :meth:`finish`; for a :class:`WindowPiece` (of
        :meth:`split`), its windows' logits, for :meth:`join`.
        """
        logits = self.runner.logits([w for e in encoded for w in e.windows])
        first_row, row = [], 0
        for e in encoded:
            first_row.append(row)
            row += len(e.windows)
        whole = [j for j, e in enumerate(encoded) if isinstance(e, EncodedSentence)]
        out: list[Decoded | torch.Tensor] = []
        if whole:
            decoded = self.aligner.decode([encoded[j] for j in whole], logits, [first_row[j] for j in whole])  # type: ignore[misc]
        k = 0
        for j, e in enumerate(encoded):
            if isinstance(e, EncodedSentence):
                out.append(decoded.sentence(k))
                k += 1
            else:
                width = max(len(w.input_ids) for w in e.windows)
                out.append(logits[first_row[j] : first_row[j] + len(e.windows), :width].clone())
        return out

    def finish(self, text: str, encoded: EncodedSentence, decoded: Decoded) -> Prediction:
        """One sentence's prediction from its tags (from :meth:`forward`)."""
        return prediction(text, encoded, decoded, 0, self.aligner, self.tokenizer)

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """All three stages in this thread, decoding many sentences per call."""
        encoded = self.prepare(texts)
        order = sorted(range(len(encoded)), key=lambda i: -self.cost(encoded[i]))
        results: list[Prediction | None] = [None] * len(texts)
        for lo in range(0, len(order), self.batch_size):
            chunk = [encoded[i] for i in order[lo : lo + self.batch_size]]
            windows = [w for e in chunk for w in e.windows]
            if not windows:
                continue
            decoded = self.aligner.decode(chunk, self.runner.logits(windows))
            for j, e in enumerate(chunk):
                results[e.index] = prediction(texts[e.index], e, decoded, j, self.aligner, self.tokenizer)
        return [r if r is not None else Prediction(t, [], []) for r, t in zip(results, texts)]
