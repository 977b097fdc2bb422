"""Texts in, entities out: the inference path shared by ``serve`` and exported models.

It uses the same ``Aligner`` as training and evaluation, so a text longer than the model's
window is predicted through the same overlapping windows, never truncated.
"""
from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer

from ner_lit.alignment import Aligner, EncodedSentence, Window, entities_from_tags, pad_windows
from ner_lit.checkpoint import CheckpointError, SECTION, load_checkpoint, materialize_tokenizer
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


class _LogitsOnly(torch.nn.Module):
    """The model as ``(input_ids, attention_mask) -> logits``: the signature a trace records."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


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
        self._traced: torch.jit.ScriptModule | None = None
        self.runtime = "eager"  # how the model runs: "eager", or "TorchScript" after trace()

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
        (measured on the reference model, 2 cores: about 1.3x the requests/s). A trace records
        one path through the model's Python code, so it is checked against the eager model on
        other shapes, padded and unpadded; where it differs (or fails), the eager model stays
        and ``runtime`` says why. Returns whether the trace is in use.
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
                traced = torch.jit.freeze(torch.jit.trace(_LogitsOnly(self.model).eval(), example(3, limit, 0), check_trace=False))
                for rows, width in ((1, max(2, limit // 3)), (4, limit)):
                    ids, mask = example(rows, width, rows)
                    eager = self.model(input_ids=ids, attention_mask=mask).logits
                    diff = float((traced(ids, mask) - eager).abs().max())
                    if not diff <= 1e-4:
                        self.runtime = f"eager (its TorchScript trace differs by {diff:.2g} on a {rows}x{width} batch)"
                        return False
        except Exception as exc:  # noqa: BLE001 - any model the tracer can not follow stays eager
            self.runtime = f"eager (TorchScript trace failed: {type(exc).__name__})"
            return False
        self._traced = traced
        self.runtime = "TorchScript"
        return True

    # The three stages of a prediction. ``serve`` runs them apart: each request thread
    # prepares and finishes its own text, and only ``forward`` goes through the
    # micro-batcher, so tokenizing and decoding one request overlaps the model running
    # another's.
    def prepare(self, texts: Sequence[str]) -> list[EncodedSentence]:
        """Tokenize and window texts (no model). Safe to call from many threads."""
        sentences = [Sentence(str(i), t) for i, t in enumerate(texts)]
        # A fast tokenizer refuses concurrent use ("Already borrowed") while its padding or
        # truncation state is being set; one lock keeps any version of it safe.
        with self._tokenizer_lock:
            return self.aligner.encode(sentences, with_labels=False)

    def forward(self, encoded: Sequence[EncodedSentence]) -> list[torch.Tensor]:
        """The model over every window of ``encoded``; each sentence's logits rows.

        Each result is ``[windows, positions, labels]`` (float32, CPU), ready for
        :meth:`finish`. Windows are length-sorted into batches of at most ``batch_size``,
        so a long text does not pad a batch of short ones.
        """
        logits = self._logits([w for e in encoded for w in e.windows])
        out, row = [], 0
        for e in encoded:
            out.append(logits[row : row + len(e.windows)])
            row += len(e.windows)
        return out

    def finish(self, text: str, encoded: EncodedSentence, logits: torch.Tensor) -> Prediction:
        """Decode one sentence's logits rows (from :meth:`forward`) into its prediction."""
        return self._prediction(text, encoded, self.aligner.decode([encoded], logits), 0)

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
    def _logits(self, windows: Sequence[Window]) -> torch.Tensor:
        """``[windows, longest, labels]`` logits (float32, CPU) in the order given.

        Run in length-sorted batches of at most ``batch_size`` windows; rows shorter than the
        longest window are zero-padded, which decoding never reads.
        """
        n_labels = len(self.labels)
        longest = max((len(w.input_ids) for w in windows), default=0)
        out = torch.zeros(len(windows), longest, n_labels)
        order = sorted(range(len(windows)), key=lambda i: -len(windows[i].input_ids))
        pad = self.tokenizer.pad_token_id or 0
        for lo in range(0, len(order), self.batch_size):
            rows = order[lo : lo + self.batch_size]
            batch = pad_windows([windows[i] for i in rows], pad)
            ids, mask = batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)
            if self._traced is not None:
                logits = self._traced(ids, mask).float().cpu()
            else:
                logits = self.model(input_ids=ids, attention_mask=mask).logits.float().cpu()
            out[torch.tensor(rows), : logits.shape[1]] = logits
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
