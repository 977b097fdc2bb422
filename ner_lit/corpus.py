"""Sentences and the files they live in.

The sentence record is the one currency of the project: readers produce it, the
alignment consumes it, predict and serve give it back. A sentence keeps one BIO tag per
character (spaces included, as in the KLUE files) because that is what KLUE scores; the
entity spans are derived from the tags, never stored beside them, so the two can not
disagree.

This module imports nothing else of ner_lit.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence

OUTSIDE = "O"
TAG_RE = re.compile(r"^(O|[BI]-[^\s]+)$")

#: The six KLUE-NER entity types, in the order the KLUE paper lists them.
KLUE_TYPES = ("PS", "LC", "OG", "DT", "TI", "QT")


class CorpusError(ValueError):
    """Bad input data. The message always names the file and the line or sentence id."""


@dataclass(frozen=True)
class Entity:
    """A span of characters ``text[start:end]`` (end exclusive) with its entity type."""

    label: str
    start: int
    end: int


@dataclass
class Sentence:
    """One sentence: its id, its text and one BIO tag per character of ``text``."""

    id: str
    text: str
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.tags:
            self.tags = [OUTSIDE] * len(self.text)
        if len(self.tags) != len(self.text):
            raise CorpusError(
                f"sentence {self.id!r}: {len(self.tags)} tags for {len(self.text)} characters"
            )

    @property
    def entities(self) -> list[Entity]:
        return spans_from_tags(self.tags)

    @classmethod
    def from_entities(cls, id: str, text: str, entities: Iterable[Entity]) -> "Sentence":
        """Build the per-character tags from spans; overlapping or out-of-range spans are errors."""
        tags = [OUTSIDE] * len(text)
        for ent in sorted(entities, key=lambda e: e.start):
            if not (0 <= ent.start < ent.end <= len(text)):
                raise CorpusError(
                    f"sentence {id!r}: entity {ent.label} [{ent.start}, {ent.end}) lies outside "
                    f"its text of {len(text)} characters"
                )
            if any(t != OUTSIDE for t in tags[ent.start : ent.end]):
                raise CorpusError(f"sentence {id!r}: entity {ent.label} [{ent.start}, {ent.end}) overlaps another")
            tags[ent.start] = f"B-{ent.label}"
            for i in range(ent.start + 1, ent.end):
                tags[i] = f"I-{ent.label}"
        return cls(id, text, tags)


def tag_type(tag: str) -> str | None:
    """``"B-PS"`` -> ``"PS"``, ``"O"`` -> None."""
    return None if tag == OUTSIDE else tag[2:]


def spans_from_tags(tags: Sequence[str]) -> list[Entity]:
    """Strict IOB2 spans, as seqeval's ``mode="strict", scheme=IOB2`` counts them.

    An entity starts only at ``B-X`` and continues over following ``I-X``; an ``I-X``
    that does not continue an open entity of type X starts nothing (it is not an entity
    in strict mode, so it must not become one here either).
    """
    spans: list[Entity] = []
    start: int | None = None
    typ: str | None = None
    for i, tag in enumerate(tags):
        if start is not None and tag == f"I-{typ}":
            continue
        if start is not None:
            spans.append(Entity(typ, start, i))  # type: ignore[arg-type]
            start, typ = None, None
        if tag.startswith("B-"):
            start, typ = i, tag[2:]
    if start is not None:
        spans.append(Entity(typ, start, len(tags)))  # type: ignore[arg-type]
    return spans


def labels_for_types(types: Iterable[str]) -> list[str]:
    """The label list for a set of entity types: ``O``, then ``B-X``, ``I-X`` per type, types sorted."""
    out = [OUTSIDE]
    for t in sorted(set(types)):
        out += [f"B-{t}", f"I-{t}"]
    return out


#: The 13 KLUE-NER labels in the project's stable order.
KLUE_LABELS = labels_for_types(KLUE_TYPES)


def derive_labels(sentences: Iterable[Sentence]) -> list[str]:
    """``O`` plus ``B-``/``I-`` for every type found, in an order that does not depend on the file's order."""
    types = {tag_type(t) for s in sentences for t in s.tags} - {None}
    return labels_for_types(types)  # type: ignore[arg-type]


def check_labels(sentences: Iterable[Sentence], labels: Sequence[str], source: str) -> None:
    """Every tag must be in ``labels``; the first one that is not is named with its sentence."""
    known = set(labels)
    for s in sentences:
        for i, t in enumerate(s.tags):
            if t not in known:
                raise CorpusError(
                    f"{source}: sentence {s.id!r}, character {i} ({s.text[i]!r}): tag {t!r} is not in the "
                    f"label set {list(labels)}"
                )
