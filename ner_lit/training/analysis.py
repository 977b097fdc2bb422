"""Where a tagger's entity errors are, after ``test``: per type, by kind, with example sentences.

The F1 table says how much is wrong; this says what. Every gold entity that is not found
exactly is put in one class, judged against the predicted entities that overlap it:

* ``wrong_type``: a prediction with the same span and another type;
* ``too_long`` / ``too_short`` / ``crossing``: a prediction of the same type whose span contains
  the gold one, lies inside it, or overlaps it otherwise (a boundary error); of the too-long
  ones, ``too_long_particle`` counts those whose extra characters at the end are a Korean
  particle or ending (``김철수는`` for ``김철수``: what token tagging gets wrong by construction);
* ``type_and_boundary``: overlapped only by predictions of another type and another span;
* ``missed``: overlapped by no prediction.

A prediction that overlaps no gold entity is ``spurious`` (counted under its predicted type);
one that overlaps a gold entity is that gold entity's error, not counted again. Spans are over
the scored (non-whitespace) characters, as KLUE's metrics count them; examples show the text.
The confusions are the (gold type, predicted type) pairs of ``wrong_type`` and
``type_and_boundary``, most frequent first, each with a few sentences.

Counts are summed across DDP ranks like the metrics' (a torchmetrics ``Metric``); the example
sentences, a few per class and rank, are gathered to rank 0 and the first by sentence id kept.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torchmetrics import Metric

from ner_lit.training.metrics import _concat, extract_entities, parse_labels

#: The error classes, in the order of the report's columns.
KINDS = ("wrong_type", "too_long", "too_long_particle", "too_short", "crossing", "type_and_boundary", "missed", "spurious")
#: Common Korean particles and copula endings that follow a noun: what a too-long entity ends in when
#: the tagger took the word (eojeol) for the entity. Approximate by design: a list, not a morphological analyser.
PARTICLES = frozenset("""
은 는 이 가 을 를 의 에 와 과 도 만 로 으로 께 께서 에서 에게 에게서 한테 한테서 까지 부터 보다 처럼 같이 이나 나
랑 이랑 하고 에는 에서는 으로는 로는 에도 에서도 으로도 로도 에게는 와의 과의 에의 에서의 으로서 로서 으로써 로써
이다 이며 이고 이라는 라는 이란 란 인 이었다 였다 이라 라 의해 만의 조차 마저 밖에 뿐 에게도 과는 와는 과도 와도
""".split())
EXAMPLES = 3  # example sentences kept per class and per confusion


@dataclass(frozen=True)
class Example:
    """One error as a reader sees it: the sentence, the gold entity and what was predicted there."""

    sentence_id: str
    text: str
    gold: Optional[str]  # "김철수 (PS)"; None for a spurious prediction
    predicted: Optional[str]  # "김철수는 (PS)"; None for a missed entity


@dataclass(frozen=True)
class Span:
    start: int  # over the scored characters, end exclusive
    end: int
    type: int


def ends_in_particle(extra: str) -> bool:
    """Whether the characters a too-long entity has past the gold end are a particle (or two)."""
    return bool(extra) and (extra in PARTICLES or any(extra[:k] in PARTICLES and extra[k:] in PARTICLES
                                                      for k in range(1, len(extra))))


def classify(gold: Sequence[Span], pred: Sequence[Span]) -> tuple[list[tuple[str, Span, Optional[Span]]], list[Span]]:
    """(the gold entities' errors as (kind, gold, the prediction judged), the spurious predictions).

    Exact matches are left out; ``too_long`` is returned as such (the particle check needs the text).
    """
    exact = {(p.start, p.end, p.type) for p in pred} & {(g.start, g.end, g.type) for g in gold}
    errors: list[tuple[str, Span, Optional[Span]]] = []
    for g in gold:
        if (g.start, g.end, g.type) in exact:
            continue
        over = [p for p in pred if p.start < g.end and g.start < p.end]
        same_span = [p for p in over if (p.start, p.end) == (g.start, g.end)]
        same_type = [p for p in over if p.type == g.type and (p.start, p.end, p.type) not in exact]
        if same_span:
            errors.append(("wrong_type", g, same_span[0]))
        elif same_type:
            p = max(same_type, key=lambda s: min(s.end, g.end) - max(s.start, g.start))
            if p.start <= g.start and p.end >= g.end:
                kind = "too_long"
            elif p.start >= g.start and p.end <= g.end:
                kind = "too_short"
            else:
                kind = "crossing"
            errors.append((kind, g, p))
        elif over:
            errors.append(("type_and_boundary", g, over[0]))
        else:
            errors.append(("missed", g, None))
    spurious = [p for p in pred if (p.start, p.end, p.type) not in exact
                and not any(p.start < g.end and g.start < p.end for g in gold)]
    return errors, spurious


class EntityErrors(Metric):
    """Entity errors by type and kind, and the confusions between types, over the sentences of a ``test``."""

    full_state_update = False

    def __init__(self, labels: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.labels = list(labels)
        self.types, prefix, type_of = parse_labels(self.labels)
        self._prefix, self._type_of = prefix.numpy(), type_of.numpy()
        k = len(self.types)
        self.add_state("kinds", default=torch.zeros(k, len(KINDS), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("support", default=torch.zeros(k, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("confusions", default=torch.zeros(k, k, dtype=torch.long), dist_reduce_fx="sum")
        self.examples: dict[str, list[Example]] = {}

    def _spans(self, ids: torch.Tensor) -> list[Span]:
        x = ids.detach().cpu().numpy().astype(np.int64, copy=False)
        first = np.zeros(x.size, dtype=bool)
        first[:1] = True
        starts, ends, types = extract_entities(x, first, self._prefix, self._type_of)
        return [Span(int(s), int(e), int(t)) for s, e, t in zip(starts, ends, types)]

    def update(self, preds: Sequence[torch.Tensor], target: Sequence[torch.Tensor], texts: Sequence[str],
               scored: Sequence[torch.Tensor], ids: Sequence[str]) -> None:
        """``preds``/``target``: label ids of each sentence's scored characters; ``scored``: which of the
        text's characters those are; ``ids``: the sentences' ids (the examples' order)."""
        _concat(preds, target, len(self.labels))  # the metrics' own checks of shapes and ranges
        kinds = np.zeros(tuple(self.kinds.shape), dtype=np.int64)
        confusions = np.zeros(tuple(self.confusions.shape), dtype=np.int64)
        support = np.zeros(len(self.types), dtype=np.int64)
        for p_ids, g_ids, text, mask, sid in zip(preds, target, texts, scored, ids):
            gold, pred = self._spans(g_ids), self._spans(p_ids)
            for g in gold:
                support[g.type] += 1
            errors, spurious = classify(gold, pred)
            if not errors and not spurious:
                continue
            where = np.flatnonzero(mask.detach().cpu().numpy())
            show = _Shower(text, where, self.types)
            for kind, g, p in errors:
                kinds[g.type, KINDS.index(kind)] += 1
                if kind in ("wrong_type", "type_and_boundary") and p is not None:
                    confusions[g.type, p.type] += 1
                    self._keep(f"{self.types[g.type]} -> {self.types[p.type]}", sid, text, show, g, p)
                if kind == "too_long" and p is not None and ends_in_particle(show.attached_tail(g, p)):
                    kinds[g.type, KINDS.index("too_long_particle")] += 1
                    self._keep("too_long_particle", sid, text, show, g, p)
                self._keep(kind, sid, text, show, g, p)
            for p in spurious:
                kinds[p.type, KINDS.index("spurious")] += 1
                self._keep("spurious", sid, text, show, None, p)
        self.kinds += torch.from_numpy(kinds).to(self.kinds.device)
        self.confusions += torch.from_numpy(confusions).to(self.confusions.device)
        self.support += torch.from_numpy(support).to(self.support.device)

    def _keep(self, key: str, sid: str, text: str, show: "_Shower", g: Optional[Span], p: Optional[Span]) -> None:
        kept = self.examples.setdefault(key, [])
        if len(kept) < EXAMPLES:
            kept.append(Example(sid, text, show.entity(g), show.entity(p)))

    def compute(self) -> dict[str, Any]:
        """The analysis as a JSON-ready record (counts summed over ranks; examples as gathered)."""
        per_type = {}
        for i, name in enumerate(self.types):
            row = {kind: int(self.kinds[i, j]) for j, kind in enumerate(KINDS)}
            per_type[name] = {"support": int(self.support[i]), **row}
        pairs = [(int(self.confusions[i, j]), self.types[i], self.types[j])
                 for i in range(len(self.types)) for j in range(len(self.types)) if i != j and self.confusions[i, j]]
        pairs.sort(key=lambda x: (-x[0], x[1], x[2]))
        return {
            "per_type": per_type,
            "totals": {kind: int(self.kinds[:, j].sum()) for j, kind in enumerate(KINDS)},
            "support": int(self.support.sum()),
            "confusions": [{"gold": g, "predicted": p, "count": n} for n, g, p in pairs],
            "examples": {key: [asdict(e) for e in kept] for key, kept in sorted(self.examples.items())},
        }

    def reset(self) -> None:
        super().reset()
        self.examples = {}

    def gather_examples(self) -> None:
        """Under DDP, every rank's examples to every rank, the first by sentence id kept (a collective)."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        world = torch.distributed.get_world_size()
        if world == 1:
            return
        parts: list[Any] = [None] * world
        torch.distributed.all_gather_object(parts, self.examples)
        merged: dict[str, list[Example]] = {}
        for part in parts:
            for key, kept in part.items():
                merged.setdefault(key, []).extend(kept)
        self.examples = {key: sorted(kept, key=lambda e: e.sentence_id)[:EXAMPLES] for key, kept in merged.items()}


class _Shower:
    """Scored-character spans as the text's own characters."""

    def __init__(self, text: str, where: np.ndarray, types: Sequence[str]) -> None:
        self.text, self.where, self.types = text, where, types

    def between(self, start: int, end: int) -> str:
        if start >= end:
            return ""
        return self.text[int(self.where[start]): int(self.where[end - 1]) + 1]

    def attached_tail(self, gold: Span, pred: Span) -> str:
        """What a too-long prediction has past the gold end, if it could be a particle: written on to the
        entity's last word (no space between) and up to that word's end ("" otherwise). So ``안 의``
        predicted in ``안 의사`` for the gold ``안``, or ``5월 이`` in ``5월 이후``, is not counted."""
        start, end = int(self.where[gold.end - 1]) + 1, int(self.where[pred.end - 1]) + 1
        tail = self.text[start:end]
        follows = self.text[end] if end < len(self.text) else " "
        return "" if any(c.isspace() for c in tail) or follows.isalnum() else tail

    def entity(self, span: Optional[Span]) -> Optional[str]:
        return None if span is None else f"{self.between(span.start, span.end)} ({self.types[span.type]})"


# ------------------------------------------------------------------------------------------ the report
def markdown(analysis: dict[str, Any], curve: Optional[str] = None) -> str:
    """The analysis for people: the table per type, the largest confusions, examples, the curve."""
    cols = ["support", *KINDS]
    lines = ["## Entity errors by type", "",
             "Each gold entity not found exactly is counted once, in the first class that fits "
             "(docs/metrics.md#error-analysis); `spurious` counts predictions overlapping no gold entity.", "",
             "| type | " + " | ".join(c.replace("_", " ") for c in cols) + " |",
             "| --- | " + " | ".join("---:" for _ in cols) + " |"]
    for name, row in analysis["per_type"].items():
        lines.append(f"| {name} | " + " | ".join(str(row[c]) for c in cols) + " |")
    totals = analysis["totals"]
    lines.append("| all | " + " | ".join(str(analysis["support"] if c == "support" else totals[c]) for c in cols) + " |")
    too_long = totals["too_long"]
    if too_long:
        lines += ["", f"{totals['too_long_particle']} of the {too_long} too-long entities "
                      f"({100 * totals['too_long_particle'] / too_long:.0f}%) end in a particle or ending."]
    lines += ["", "## Most frequent confusions", ""]
    confusions = analysis["confusions"][:10]
    if not confusions:
        lines.append("None.")
    for c in confusions:
        key = f"{c['gold']} -> {c['predicted']}"
        lines.append(f"- **{key}**: {c['count']}")
        lines += [f"  - {_example_line(e)}" for e in analysis["examples"].get(key, [])]
    lines += ["", "## Examples by kind", ""]
    for kind in KINDS:
        examples = analysis["examples"].get(kind, [])
        if examples:
            lines.append(f"- **{kind.replace('_', ' ')}**")
            lines += [f"  - {_example_line(e)}" for e in examples]
    if curve:
        lines += ["", "## Learning curve", "", curve]
    return "\n".join(lines) + "\n"


def _example_line(e: dict[str, Any]) -> str:
    gold = e["gold"] or "nothing"
    predicted = e["predicted"] or "nothing"
    return f"gold {gold}, predicted {predicted}: {e['text']} ({e['sentence_id']})"
