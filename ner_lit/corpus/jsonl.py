"""JSON Lines corpora: one sentence a line, entities as character spans or characters with tags.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from ner_lit.corpus.lines import _check_not_empty, _check_unique_id, _check_writable, iter_lines, write_new_file
from ner_lit.corpus.records import TAG_RE, CorpusError, Entity, Sentence, _check_known_tags, _check_length, excerpt, render_tagged


def read_jsonl(
    path: str | os.PathLike[str], labelled: bool = True, labels: Sequence[str] | None = None,
    max_chars: int | None = None,
) -> list[Sentence]:
    """One JSON object per line.

    ``{"id": ..., "origin": text, "entity_list": [{"text", "label", "offset": [start, end]}],
    "character_list": [[char, tag], ...]}``. ``offset`` is ``[start, end)`` with the end
    exclusive, counted in characters of ``origin``. Either list alone is enough (the
    character list alone also gives the text); when both are given they must mark the
    same entities. ``id`` defaults to ``<file stem>-<line number>``. Blank lines are skipped.
    With ``labelled=False`` (input to ``predict``) ``origin`` alone is enough too.
    ``labels`` and ``max_chars`` as for :func:`read_klue_tsv`; errors name the object's line.
    """
    path = Path(path)
    return _check_not_empty(list(iter_jsonl(path, labelled, labels, max_chars)), path, "JSON object line")


def iter_jsonl(
    path: Path, labelled: bool = True, labels: Sequence[str] | None = None, max_chars: int | None = None,
) -> Iterator[Sentence]:
    """:func:`read_jsonl`'s sentences one by one, the file read lazily (``predict`` streams it);
    the ids seen are kept to refuse a repeated one."""
    known = frozenset(labels) if labels is not None else None
    seen: dict[str, int] = {}
    for lineno, line in iter_lines(path, "JSONL"):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        sentence = json_line(path, lineno, line, labelled)
        _check_length(where, sentence, max_chars)
        _check_known_tags(sentence, known, labels or (), lambda i, where=where: where)
        _check_unique_id(seen, sentence.id, path, lineno)
        yield sentence


def json_line(path: Path, lineno: int, line: str, labelled: bool = True) -> Sentence:
    """The sentence of one JSONL line; errors name ``path:lineno``."""
    where = f"{path}:{lineno}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise CorpusError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno}), expected one JSON object per line") from None
    return _json_sentence(obj, where, f"{path.stem}-{lineno}", labelled)


def _json_sentence(obj: object, where: str, default_id: str, labelled: bool = True) -> Sentence:
    if not isinstance(obj, dict):
        raise CorpusError(f"{where}: a JSON {type(obj).__name__}, expected a JSON object")
    sid = obj.get("id", default_id)
    if not isinstance(sid, str) or not sid:
        raise CorpusError(f"{where}: id {excerpt(sid)}, expected a non-empty string")
    where = f"{where}: sentence {excerpt(sid)}"
    origin = obj.get("origin")
    if origin is not None and not isinstance(origin, str):
        raise CorpusError(f"{where}: \"origin\" is {excerpt(origin)}, expected a string")
    has_chars, has_ents = "character_list" in obj, "entity_list" in obj
    if not has_chars and not has_ents and not labelled and isinstance(origin, str) and origin:
        return Sentence(sid, origin)
    if not has_chars and not has_ents:
        raise CorpusError(f"{where}: neither \"entity_list\" nor \"character_list\", expected at least one of them")

    char_sentence: Sentence | None = None
    if has_chars:
        chars, tags = _json_characters(obj["character_list"], where)
        text = "".join(chars)
        if origin is not None and origin != text:
            raise CorpusError(f"{where}: \"character_list\" spells {excerpt(text)}, expected \"origin\" {excerpt(origin)}")
        origin = text
        char_sentence = Sentence(sid, text, tags)
    if origin is None:
        raise CorpusError(f"{where}: \"entity_list\" without \"origin\", expected the sentence text in \"origin\"")
    if not origin:
        raise CorpusError(f"{where}: empty sentence, expected at least one character")
    if not has_ents:
        assert char_sentence is not None
        return char_sentence

    entities = _json_entities(obj["entity_list"], origin, where)
    try:
        ent_sentence = Sentence.from_entities(sid, origin, entities)
    except CorpusError as exc:
        raise CorpusError(f"{where}: {exc}, expected non-overlapping entities") from None
    if char_sentence is not None and char_sentence.entities != sorted(entities, key=lambda e: e.start):
        raise CorpusError(
            f"{where}: \"character_list\" marks {excerpt(render_tagged(char_sentence))} but \"entity_list\" marks "
            f"{excerpt(render_tagged(ent_sentence))}, expected both to mark the same entities"
        )
    return char_sentence if char_sentence is not None else ent_sentence


def _json_characters(items: object, where: str) -> tuple[list[str], list[str]]:
    if not isinstance(items, list):
        raise CorpusError(f"{where}: \"character_list\" is {excerpt(items)}, expected a list of [char, tag] pairs")
    chars: list[str] = []
    tags: list[str] = []
    for i, item in enumerate(items):
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)):
            raise CorpusError(f"{where}: character_list[{i}] is {excerpt(item)}, expected a [char, tag] pair of strings")
        char, tag = item
        if len(char) != 1:
            raise CorpusError(f"{where}: character_list[{i}] has {excerpt(char)}, expected exactly one character")
        if not TAG_RE.match(tag):
            raise CorpusError(f"{where}: character_list[{i}] has tag {excerpt(tag)}, expected O, B-<TYPE> or I-<TYPE>")
        chars.append(char)
        tags.append(tag)
    return chars, tags


def _json_entities(items: object, text: str, where: str) -> list[Entity]:
    if not isinstance(items, list):
        raise CorpusError(f"{where}: \"entity_list\" is {excerpt(items)}, expected a list of entity objects")
    entities: list[Entity] = []
    for i, item in enumerate(items):
        at = f"{where}: entity_list[{i}]"
        if not isinstance(item, dict):
            raise CorpusError(f"{at} is {excerpt(item)}, expected an object with \"text\", \"label\" and \"offset\"")
        label, surface, offset = item.get("label"), item.get("text"), item.get("offset")
        if not isinstance(label, str) or not TAG_RE.match(f"B-{label}"):
            raise CorpusError(f"{at}: label {excerpt(label)}, expected an entity type such as PS")
        if not isinstance(surface, str):
            raise CorpusError(f"{at}: text {excerpt(surface)}, expected the entity's surface string")
        if not (
            isinstance(offset, list)
            and len(offset) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) for x in offset)
        ):
            raise CorpusError(f"{at}: offset {excerpt(offset)}, expected [start, end] integers (end exclusive)")
        start, end = offset
        if not 0 <= start < end <= len(text):
            raise CorpusError(
                f"{at}: offset [{start}, {end}] lies outside the text of {len(text)} characters, expected "
                f"0 <= start < end <= {len(text)} (end exclusive)"
            )
        if text[start:end] != surface:
            raise CorpusError(
                f"{at}: text {excerpt(surface)} but offset [{start}, {end}] spans {excerpt(text[start:end])}, expected the same "
                f"string (end exclusive)"
            )
        entities.append(Entity(label, start, end))
    return entities


def write_jsonl(sentences: Iterable[Sentence], path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Write one JSON object per sentence with the id and both lists, so either kind of reader is served."""
    lines = []
    for s in sentences:
        _check_writable(s)
        obj = {
            "id": s.id,
            "origin": s.text,
            "entity_list": [
                {"text": s.text[e.start : e.end], "label": e.label, "offset": [e.start, e.end]} for e in s.entities
            ],
            "character_list": [[c, t] for c, t in zip(s.text, s.tags)],
        }
        lines.append(json.dumps(obj, ensure_ascii=False) + "\n")
    return write_new_file(path, "".join(lines), overwrite)
