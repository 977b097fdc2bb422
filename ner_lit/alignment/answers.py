"""The answer for a tagged text: one record type for a predicted entity, built in one place.

``predict`` (``NERModel.predict_step``, written by ``PredictionWriter``), the Predictor and
``serve``'s ``/api`` all turn decoded character tags into entities here, so the three can
not give different spans, scores or field names for the same tags. Gold spans of a corpus
stay :class:`ner_lit.corpus.Entity` (no score, no text): they are what the metrics compare.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from ner_lit.corpus.records import spans_from_tags

#: Digits a score or probability keeps in an answer: past float32's noise, short in JSON.
SCORE_DIGITS = 6


def finite(x: float | None) -> float | None:
    """JSON has no NaN: a broken score goes out as null rather than as invalid JSON."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def score(x: float | None) -> float | None:
    """A probability as a record keeps it: rounded to :data:`SCORE_DIGITS`; None where it is not finite."""
    x = finite(x)
    return None if x is None else round(x, SCORE_DIGITS)


@dataclass(frozen=True)
class PredictedEntity:
    """An entity found in a text: its characters, type, offsets (end exclusive) and the mean top
    probability of its characters (None when no probabilities were given)."""

    text: str
    label: str
    start: int
    end: int
    score: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The entity as every answer carries it, fields in this order: text, label, start, end, score."""
        return {"text": self.text, "label": self.label, "start": int(self.start), "end": int(self.end),
                "score": finite(self.score)}


@dataclass(frozen=True)
class TokenResult:
    """One token of the original system's per-token list (``/api``'s ``result``)."""

    token: str
    label: str
    prob: float


@dataclass
class Prediction:
    """A text, its entities and its tokens: what the Predictor answers and ``/api`` sends."""

    text: str
    entities: list[PredictedEntity]
    tokens: list[TokenResult]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def entities_from_tags(text: str, tags: Sequence[str], probs: Sequence[float] | None = None) -> list[PredictedEntity]:
    """Strict IOB2 entities of a character tag sequence, read as KLUE scores them.

    Spans are found on the non-whitespace characters (whitespace is not scored, and a
    model's whitespace tags mean nothing), then mapped back to offsets in ``text``: an
    entity that runs over a space, such as a date, comes out as one span. Scores are the
    mean of the characters' probabilities, rounded as every answer carries them (:func:`score`).
    """
    keep = [i for i, c in enumerate(text) if not c.isspace()]
    out = []
    for sp in spans_from_tags([tags[i] for i in keep]):
        start, end = keep[sp.start], keep[sp.end - 1] + 1
        mean = None
        if probs is not None:
            chars = [float(probs[keep[i]]) for i in range(sp.start, sp.end)]
            mean = score(sum(chars) / len(chars))
        out.append(PredictedEntity(text[start:end], sp.label, start, end, mean))
    return out


def answer(text: str, tags: Sequence[str], probs: Sequence[float] | None = None) -> dict[str, Any]:
    """The JSON-ready answer for one text from its character tag names and their probabilities:
    ``{"text", "entities": [{text, label, start, end, score}]}`` (``predict``'s row, less its id;
    ``/api`` adds the token list, see :func:`prediction_json`)."""
    return {"text": text, "entities": [e.to_json() for e in entities_from_tags(text, tags, probs)]}


def prediction_json(pred: Any) -> dict[str, Any]:
    """``/api``'s answer for a prediction (a :class:`Prediction`, or any record with the same
    attributes): ``{"text", "entities", "result": [{token, label, prob}]}``, in that order."""
    return {
        "text": pred.text,
        "entities": [PredictedEntity(e.text, e.label, e.start, e.end, e.score).to_json() for e in pred.entities],
        "result": [{"token": t.token, "label": t.label, "prob": finite(t.prob)} for t in pred.tokens],
    }


def prediction(text: str, encoded: Any, decoded: Any, j: int, aligner: Any, tokenizer: Any) -> Prediction:
    """Sentence ``j`` of a decoded batch (``ner_lit.alignment.Decoded``) as a :class:`Prediction`:
    entities from its character tags (:func:`entities_from_tags`, as ``predict`` makes them) and
    the per-token list, each content token shown as the tokenizer's piece (the text's own
    characters where the piece is the unknown token)."""
    entities = entities_from_tags(text, aligner.tag_names(decoded.char_tags[j]), decoded.char_probs[j].tolist())
    e = encoded
    ids = [e.windows[e.token_window[t]].input_ids[e.token_pos[t]] for t in range(e.num_tokens)]
    pieces = tokenizer.convert_ids_to_tokens(ids)
    unk = tokenizer.unk_token_id
    tags, probs = decoded.token_tags[j].tolist(), decoded.token_probs[j].tolist()
    tokens = [TokenResult(text[a:b] if ids[t] == unk else piece, aligner.labels[int(tags[t])], score(probs[t]))
              for t, (piece, (a, b)) in enumerate(zip(pieces, e.offsets)) if a != b]
    return Prediction(text, entities, tokens)
