"""Texts in, entities out: the inference path shared by ``serve`` and exported models.

It uses the same ``Aligner`` as training and evaluation, so a text longer than the model's
window is predicted through the same overlapping windows, never truncated.
"""
from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer

from ner_lit.alignment import (
    Aligner,
    Decoded,
    EncodedSentence,
    PackedBatch,
    Window,
    entities_from_tags,
    pack_windows,
    pad_windows,
)
from ner_lit.checkpoint import SECTION, CheckpointError, load_checkpoint, materialize_tokenizer
from ner_lit.corpus import Sentence


@dataclass
class PredictedEntity:
    text: str
    label: str
    start: int  # character offsets into the input text, end exclusive
    end: int
    score: float


@dataclass
class TokenResult:
    token: str
    label: str
    prob: float


@dataclass
class Prediction:
    text: str
    entities: list[PredictedEntity]
    tokens: list[TokenResult]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class WindowPiece:
    """Consecutive windows of one long sentence, run through the model apart from the rest
    of it, so that a long text is spread over several model batches (which other requests
    join) rather than holding one; :meth:`Predictor.forward` gives their logits, and
    :meth:`Predictor.join` decodes the sentence from all its pieces' logits."""

    windows: list[Window]


#: Tokens per packed row (a longer window gets a row of its own): long enough for efficient
#: matrix products over few rows, short enough that attention, quadratic in a row's length,
#: stays small next to the linear layers.
PACK_WIDTH = 128

#: How far a trace's or a packed forward's logits may be from the eager padded ones.
_SAME_LOGITS = 1e-4


#: Runs the model on tensors: ``(input_ids, attention_mask[, position_ids]) -> logits``.
Runner = Callable[..., torch.Tensor]
#: Makes a runner from a module and example inputs (a trace, an export).
Compiler = Callable[[torch.nn.Module, tuple], Runner]


class _LogitsOnly(torch.nn.Module):
    """The model as ``(input_ids, attention_mask) -> logits``: the signature a trace records."""

    #: Each input's name and its dimensions that vary (rows, width), for an ONNX export.
    inputs = {"input_ids": ("rows", "width"), "attention_mask": ("rows", "width")}

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


class _PackedLogits(torch.nn.Module):
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


def _torchscript(module: torch.nn.Module, example: tuple) -> Runner:
    return torch.jit.freeze(torch.jit.trace(module, example, check_trace=False))


def _onnxruntime(module: torch.nn.Module, example: tuple) -> Runner:
    """``module`` exported to ONNX (TorchScript-based exporter) and loaded in an ONNX Runtime session."""
    import tempfile

    import onnxruntime

    names = list(module.inputs)  # type: ignore[attr-defined]
    axes = {n: {d: a for d, a in enumerate(dims) if a is not None} for n, dims in module.inputs.items()}  # type: ignore[attr-defined]
    axes["logits"] = {0: "rows", 1: "width"}
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads sleep: request threads keep the cores
    options.log_severity_level = 3  # errors only: its warnings about the exported graph are not the user's
    with tempfile.TemporaryDirectory(prefix="ner_lit-onnx-") as tmp:
        path = f"{tmp}/model.onnx"
        torch.onnx.export(module, example, path, input_names=names, output_names=["logits"], dynamic_axes=axes,
                          dynamo=False, opset_version=17)
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def run(*tensors: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {n: t.cpu().numpy() for n, t in zip(names, tensors)})[0])

    return run


class Predictor:
    """A token-classification model, its tokenizer and labels, ready to tag raw text."""

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
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.labels = list(labels)
        limit = getattr(model.config, "max_position_embeddings", max_length) or max_length
        self.max_length = min(max_length, limit)
        if self.max_length < max_length:  # windows shortened to fit the model: shorten their overlap too
            stride = min(stride, self.max_length // 2)
        # Otherwise the windows are those asked for (a checkpoint's: those of training and `predict`).
        self.aligner = Aligner(tokenizer, self.labels, max_length=self.max_length, stride=stride, decoding=decoding)
        self.source = source
        self.name = name or getattr(model.config, "_name_or_path", "") or type(model).__name__
        self.scores = dict(scores or {})
        self.batch_size = batch_size
        self._tokenizer_lock = threading.Lock()
        self._compiled: Runner | None = None  # the model as a trace or an export, after trace() / use_onnxruntime()
        self._compiler: Compiler | None = None  # how that one was made: pack() makes its packed runner alike
        self._compiled_what = ""
        self.runtime = "eager"  # how the model runs: "eager", "TorchScript" or "ONNX Runtime"
        self._packed: Runner | None = None  # the model over packed rows, after pack()
        self._first_position = 0  # the position id a packed window starts from
        self._pack_width = PACK_WIDTH
        self.packing = "padded"  # how windows share a forward pass: "padded", or "packed ..." after pack()

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu") -> "Predictor":
        ckpt = load_checkpoint(path)
        info = ckpt[SECTION]
        tok_dir = materialize_tokenizer(info["tokenizer_files"])
        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
        config = AutoConfig.for_model(**info["model_config"])
        model = AutoModelForTokenClassification.from_config(config)
        state = {k[len("model.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise CheckpointError(f"{path}: weights do not fit the model config (missing {missing[:3]}, unexpected {unexpected[:3]})")
        return cls(
            model,
            tokenizer,
            info["labels"],
            max_length=info["max_length"],
            stride=info["stride"],
            source=str(path),
            name=info.get("name", ""),
            scores=info.get("scores", {}),
            device=device,
            decoding=info.get("decoding", "viterbi"),
        )

    @classmethod
    def from_pretrained(
        cls, model_dir: str | Path, device: str = "cpu", max_length: int = 512, stride: int = 64, decoding: str = "viterbi"
    ) -> "Predictor":
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise CheckpointError(f"{model_dir}: not a Hugging Face model directory (no config.json)")
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForTokenClassification.from_pretrained(model_dir)
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        return cls(model, tokenizer, labels, max_length=max_length, stride=stride, source=str(model_dir), device=device,
                   decoding=decoding)

    def trace(self) -> bool:
        """Run the model from now on as a frozen TorchScript trace, if it gives the same logits.

        A trace runs the whole forward pass in C++: no Python per layer, and the GIL released
        for all of it, so request threads of a server can tokenize and decode meanwhile
        (measured on the reference model, 2 cores: about 1.3x the requests/s). Returns
        whether the trace is in use; see :meth:`_compile_with` for the checks.
        """
        return self._compile_with("TorchScript", "TorchScript trace", _torchscript)

    def use_onnxruntime(self) -> bool:
        """Run the model from now on exported to ONNX under ONNX Runtime, if it gives the same logits.

        ONNX Runtime fuses the layers' small operations (bias, GELU, layer norm) into its
        matrix products and keeps the weights pre-packed, which is most of the time of a
        short sentence's forward pass on a CPU: measured on the reference model, one
        31-token sentence 1.6x faster than the TorchScript trace (bench/results/serve.md
        for the server figures). It runs with torch's intra-op thread count, releases the
        GIL while it runs, and its threads sleep rather than spin when idle, so request
        threads keep their cores. CPU only. Returns whether it is in use; see
        :meth:`_compile_with` for the checks.
        """
        if self.device.type != "cpu":
            self.runtime = f"eager (ONNX Runtime is used on CPU only, not on {self.device})"
            return False
        return self._compile_with("ONNX Runtime", "ONNX Runtime export", _onnxruntime)

    def _compile_with(self, name: str, what: str, make: Compiler) -> bool:
        """Run the model as ``make`` traces or exports it from now on, if that gives the eager logits.

        A trace or export records one path through the model's Python code, so the result
        is checked against the eager model on other shapes than the one it was made from,
        padded and unpadded; where it differs (or fails), the eager model stays and
        ``runtime`` says why. :meth:`pack` afterwards packs with the same runtime.
        """
        import warnings

        vocab = int(getattr(self.model.config, "vocab_size", 0) or 100)
        limit = min(self.max_length, 64)

        def example(rows: int, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
            g = torch.Generator().manual_seed(seed)
            ids = torch.randint(0, vocab, (rows, width), generator=g)
            mask = torch.ones(rows, width, dtype=torch.long)
            for r in range(1, rows):  # every row but the first padded, each to another length
                mask[r, max(1, width - 3 * r) :] = 0
            ids[mask == 0] = self.tokenizer.pad_token_id or 0
            return ids.to(self.device), mask.to(self.device)

        try:
            with torch.inference_mode(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TracerWarnings about Python values: the check below decides
                compiled = make(_LogitsOnly(self.model).eval(), example(3, limit, 0))
                for rows, width in ((1, max(2, limit // 3)), (4, limit)):
                    ids, mask = example(rows, width, rows)
                    eager = self.model(input_ids=ids, attention_mask=mask).logits
                    diff = float((compiled(ids, mask).to(eager.device) - eager).abs().max())
                    if not diff <= _SAME_LOGITS:
                        self.runtime = f"eager (its {what} differs by {diff:.2g} on a {rows}x{width} batch)"
                        return False
        except Exception as exc:  # noqa: BLE001 - any model the tracer or exporter can not follow stays eager
            self.runtime = f"eager ({what} failed: {type(exc).__name__})"
            return False
        self._compiled, self._compiler, self._compiled_what = compiled, make, what
        self._packed = None  # packed rows, if wanted, must be packed again with this runtime
        self.packing = "padded"
        self.runtime = name
        return True

    def pack(self, width: int = PACK_WIDTH) -> bool:
        """Put several windows in one model row from now on, if the model gives the same logits.

        Padded, a batch of short sentences runs every one of them as long as its longest,
        and the linear layers, most of the model's time, work on the padding. Packed, each
        window attends only to itself (a 4D additive mask) and gets the position ids it has
        alone. Model families count positions differently (BERT from 0, RoBERTa from the
        pad id + 1), and some may not take a 4D mask or position ids at all, so both
        counts are checked here against the padded forward on example windows, with the
        runtime in use (call :meth:`trace` or :meth:`use_onnxruntime` first to pack that
        runtime too). Where neither agrees, or anything fails, windows stay padded and
        ``packing`` says why. Returns whether packing is in use.
        """
        import warnings

        width = max(2, min(width, self.max_length))
        pad = self.tokenizer.pad_token_id or 0
        windows = self._example_windows(width)
        worst = float("inf")
        try:
            with torch.inference_mode(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TracerWarnings about Python values: the checks decide
                want = self._logits(windows, packed=False)
                eager = _PackedLogits(self.model).eval()
                config_pad = getattr(self.model.config, "pad_token_id", None)
                for first in dict.fromkeys(n for n in (0, pad + 1, None if config_pad is None else config_pad + 1) if n is not None):
                    batch = pack_windows(windows, pad, width, first)
                    diff = self._packed_diff(eager, windows, batch, want)
                    worst = min(worst, diff)
                    if diff <= _SAME_LOGITS:
                        break
                else:
                    self.packing = f"padded (packed logits differ by {worst:.2g})"
                    return False
                runner: Runner = eager
                if self._compiler is not None:
                    runner = self._compiler(eager, (batch.input_ids, batch.attention_mask, batch.position_ids))
                    # Other shapes than the traced or exported one: more rows, narrower.
                    for check in (batch, pack_windows(windows, pad, max(2, width // 2), first)):
                        diff = self._packed_diff(runner, windows, check, want)
                        if not diff <= _SAME_LOGITS:
                            self.packing = f"padded (the packed {self._compiled_what} differs by {diff:.2g})"
                            return False
        except Exception as exc:  # noqa: BLE001 - a model that can not take packed rows stays padded
            self.packing = f"padded (packing failed: {type(exc).__name__})"
            return False
        self._packed, self._first_position, self._pack_width = runner, first, width
        self.packing = f"packed ({width} tokens a row)"
        return True

    def _example_windows(self, width: int) -> list[Window]:
        """Windows of several lengths, some short enough to share a row of ``width`` tokens."""
        vocab = int(getattr(self.model.config, "vocab_size", 0) or 100)
        # No pad id inside a window: RoBERTa-style models number a pad token's position apart.
        pads = {self.tokenizer.pad_token_id, getattr(self.model.config, "pad_token_id", None)} - {None}
        g = torch.Generator().manual_seed(0)
        lengths = sorted({max(2, n) for n in (width, width // 2, width // 3, 7, 5, 3, 2)}, reverse=True)
        windows = []
        for n in lengths:
            ids = [i if i not in pads else (i + 1) % vocab for i in torch.randint(0, vocab, (n,), generator=g).tolist()]
            windows.append(Window(0, ids, None))
        return windows

    def _packed_diff(self, runner: Runner, windows: Sequence[Window], batch: PackedBatch, want: torch.Tensor) -> float:
        logits = runner(*(t.to(self.device) for t in (batch.input_ids, batch.attention_mask, batch.position_ids)))
        got = torch.zeros_like(want)
        self._unpack(windows, batch, logits.float().cpu(), got, range(len(windows)))
        # Only each window's own positions: beyond them ``want`` holds the padding's logits.
        return max(float((got[k, : len(w.input_ids)] - want[k, : len(w.input_ids)]).abs().max()) for k, w in enumerate(windows))

    @staticmethod
    def _unpack(windows: Sequence[Window], batch: PackedBatch, logits: torch.Tensor, out: torch.Tensor, rows: Sequence[int]) -> None:
        """Each window's logits from its packed row into ``out[rows[k]]`` (window k of the batch)."""
        for k, w in enumerate(windows):
            n, a = len(w.input_ids), batch.start[k]
            out[rows[k], :n] = logits[batch.row[k], a : a + n]

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
        """``encoded`` as items for :meth:`forward`: itself, or, when it is more than half a
        model batch (:attr:`batch_tokens`), pieces of consecutive windows of at most that
        much each, so a batch always has room for other requests beside one of them."""
        limit = max(1, self.batch_tokens // 2)
        if self.cost(encoded) <= limit:
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

    def join(self, encoded: EncodedSentence, outputs: Sequence[torch.Tensor]) -> Decoded:
        """A sentence's tags from the logits :meth:`forward` gave its pieces (in order)."""
        width = max(o.shape[1] for o in outputs)
        logits = torch.zeros(sum(o.shape[0] for o in outputs), width, len(self.labels))
        row = 0
        for o in outputs:
            logits[row : row + o.shape[0], : o.shape[1]] = o
            row += o.shape[0]
        return self._one(self.aligner.decode([encoded], logits), 0)

    def forward(self, encoded: Sequence[EncodedSentence | WindowPiece]) -> list[Decoded | torch.Tensor]:
        """The model over every window of ``encoded``, decoded: each sentence's tags.

        Decoding (softmax, the Viterbi path) runs here over the whole batch at once: its
        cost grows with the longest sentence, not with their number, so a batch of 8 costs
        about what one sentence would in each request's own thread. Windows are packed or
        length-sorted into batches (see :meth:`_logits`). Each result is one sentence's
        :class:`Decoded`, ready for :meth:`finish`; for a :class:`WindowPiece` (of
        :meth:`split`), its windows' logits, for :meth:`join`.
        """
        logits = self._logits([w for e in encoded for w in e.windows])
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
                out.append(self._one(decoded, k))
                k += 1
            else:
                width = max(len(w.input_ids) for w in e.windows)
                out.append(logits[first_row[j] : first_row[j] + len(e.windows), :width].clone())
        return out

    @staticmethod
    def _one(decoded: Decoded, j: int) -> Decoded:
        """Sentence ``j`` of a decoded batch, as a batch of its own."""
        return Decoded([decoded.char_tags[j]], [decoded.char_probs[j]], [decoded.token_tags[j]], [decoded.token_probs[j]])

    def finish(self, text: str, encoded: EncodedSentence, decoded: Decoded) -> Prediction:
        """One sentence's prediction from its tags (from :meth:`forward`)."""
        return self._prediction(text, encoded, decoded, 0)

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """All three stages in this thread, decoding many sentences per call."""
        encoded = self.prepare(texts)
        order = sorted(range(len(encoded)), key=lambda i: -sum(len(w.input_ids) for w in encoded[i].windows))
        results: list[Prediction | None] = [None] * len(texts)
        for lo in range(0, len(order), self.batch_size):
            chunk = [encoded[i] for i in order[lo : lo + self.batch_size]]
            windows = [w for e in chunk for w in e.windows]
            if not windows:
                continue
            decoded = self.aligner.decode(chunk, self._logits(windows))
            for j, e in enumerate(chunk):
                results[e.index] = self._prediction(texts[e.index], e, decoded, j)
        return [r if r is not None else Prediction(t, [], []) for r, t in zip(results, texts)]

    @torch.inference_mode()
    def _logits(self, windows: Sequence[Window], packed: bool = True) -> torch.Tensor:
        """``[windows, longest, labels]`` logits (float32, CPU) in the order given.

        Run over at most ``batch_size`` windows at a time, taken longest first: after
        :meth:`pack` (and unless ``packed`` is false) several to a row where two or more
        fit in one, else each its own row, padded to the longest of its batch. Rows shorter
        than the longest window are zero-padded, which decoding never reads.
        """
        longest = max((len(w.input_ids) for w in windows), default=0)
        out = torch.zeros(len(windows), longest, len(self.labels))
        order = sorted(range(len(windows)), key=lambda i: -len(windows[i].input_ids))
        pad = self.tokenizer.pad_token_id or 0
        for lo in range(0, len(order), self.batch_size):
            rows = order[lo : lo + self.batch_size]
            chunk = [windows[i] for i in rows]
            if packed and self._packed is not None and len(chunk) > 1:
                batch = pack_windows(chunk, pad, self._pack_width, self._first_position)
                if len(batch.input_ids) < len(chunk):  # some windows share a row: worth the 4D mask
                    logits = self._packed(*(t.to(self.device) for t in (batch.input_ids, batch.attention_mask, batch.position_ids)))
                    self._unpack(chunk, batch, logits.float().cpu(), out, rows)
                    continue
            padded = pad_windows(chunk, pad)
            ids, mask = padded["input_ids"].to(self.device), padded["attention_mask"].to(self.device)
            if self._compiled is not None:
                logits = self._compiled(ids, mask)
            else:
                logits = self.model(input_ids=ids, attention_mask=mask).logits
            out[torch.tensor(rows), : logits.shape[1]] = logits.float().cpu()
        return out

    def _prediction(self, text: str, e, decoded, j: int) -> Prediction:
        tags = self.aligner.tag_names(decoded.char_tags[j])
        probs = decoded.char_probs[j].tolist()
        entities = [
            PredictedEntity(x.text, x.label, x.start, x.end, round(float(x.score), 6))
            for x in entities_from_tags(text, tags, probs)
        ]
        ids = [e.windows[e.token_window[t]].input_ids[e.token_pos[t]] for t in range(e.num_tokens)]
        pieces = self.tokenizer.convert_ids_to_tokens(ids)
        unk = self.tokenizer.unk_token_id
        tokens = []
        for t, (piece, (a, b)) in enumerate(zip(pieces, e.offsets)):
            if a == b:
                continue
            shown = text[a:b] if ids[t] == unk else piece
            tokens.append(
                TokenResult(shown, self.labels[int(decoded.token_tags[j][t])], round(float(decoded.token_probs[j][t]), 6))
            )
        return Prediction(text, entities, tokens)
