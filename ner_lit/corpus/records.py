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
from typing import Callable, Iterable, Sequence

from ner_lit.errors import UserError

OUTSIDE = "O"

TAG_RE = re.compile(r"^(O|[BI]-[^\s]+)$")


#: The six KLUE-NER entity types, in the order the KLUE paper lists them.
KLUE_TYPES = ("PS", "LC", "OG", "DT", "TI", "QT")


class CorpusError(UserError):
    """Bad input data. The message always names the file and the line or sentence id."""


#: Input quoted in an error is cut to about this many characters: one bad 50 MB line must
#: not become a 50 MB message.
EXCERPT_CHARS = 200


def excerpt(value: object, limit: int = EXCERPT_CHARS) -> str:
    """``repr(value)``, cut to ``limit`` characters with an ellipsis and the full length when longer."""
    if isinstance(value, str):
        return repr(value) if len(value) <= limit else f"{value[:limit]!r}… ({len(value):,} characters)"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


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
                f"sentence {excerpt(self.id)}: {len(self.tags)} tags for {len(self.text)} characters"
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
                    f"sentence {excerpt(id)}: entity {ent.label} [{ent.start}, {ent.end}) lies outside "
                    f"its text of {len(text)} characters"
                )
            if any(t != OUTSIDE for t in tags[ent.start : ent.end]):
                raise CorpusError(f"sentence {excerpt(id)}: entity {ent.label} [{ent.start}, {ent.end}) overlaps another")
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


def _check_known_tags(sentence: Sentence, known: frozenset[str] | None, labels: Sequence[str],
                      where: Callable[[int], str]) -> None:
    """Every tag must be in the label set; the first one that is not is named with ``where(character)``,
    its ``file:line`` (KLUE TSV gives every character a line of its own, JSONL a sentence)."""
    if known is None:
        return
    for i, t in enumerate(sentence.tags):
        if t not in known:
            raise CorpusError(
                f"{where(i)}: sentence {excerpt(sentence.id)}, character {i} ({excerpt(sentence.text[i])}): tag "
                f"{excerpt(t)} is not in the label set {excerpt(list(labels), 400)}, expected one of its tags"
            )


def _check_length(where: str, sentence: Sentence, max_chars: int | None) -> None:
    """The explicit per-sentence limit: longer input is refused before it costs memory and time."""
    if max_chars is not None and len(sentence.text) > max_chars:
        raise CorpusError(
            f"{where}: sentence {excerpt(sentence.id)} has {len(sentence.text):,} characters, expected at most "
            f"max_chars={max_chars:,} (--data.max_chars raises the limit)"
        )


# Only used to tell "the characters differ" from "the entities differ" once a header
# already failed to match; valid files never depend on how this parses odd surfaces.
_MARKUP_RE = re.compile(r"<([^<>]*?):([^\s<>:]+)>")


def render_tagged(sentence: Sentence) -> str:
    """The KLUE header form of a sentence: each entity written as ``<surface:TAG>`` in its text."""
    out: list[str] = []
    pos = 0
    for ent in sentence.entities:
        out.append(sentence.text[pos : ent.start])
        out.append(f"<{sentence.text[ent.start : ent.end]}:{ent.label}>")
        pos = ent.end
    out.append(sentence.text[pos:])
    return "".join(out)


def _strip_markup(tagged: str) -> str:
    return _MARKUP_RE.sub(lambda m: m.group(1), tagged)
