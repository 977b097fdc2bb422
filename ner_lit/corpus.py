"""Sentences and the files they live in.

The sentence record is the one currency of the project: readers produce it, the
alignment consumes it, predict and serve give it back. A sentence keeps one BIO tag per
character (spaces included, as in the KLUE files) because that is what KLUE scores; the
entity spans are derived from the tags, never stored beside them, so the two can not
disagree.

This module imports nothing else of ner_lit.
"""
from __future__ import annotations

import codecs
import hashlib
import http.client
import json
import os
import re
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, Literal, Sequence

OUTSIDE = "O"
TAG_RE = re.compile(r"^(O|[BI]-[^\s]+)$")

#: The six KLUE-NER entity types, in the order the KLUE paper lists them.
KLUE_TYPES = ("PS", "LC", "OG", "DT", "TI", "QT")


class CorpusError(ValueError):
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


# --------------------------------------------------------------------------------------
# Reading and writing corpora
# --------------------------------------------------------------------------------------
#
# Every reader refuses bad input with a CorpusError of the form
# ``<file>:<line>: <what was wrong>, expected <what>``: a corpus that is silently repaired
# trains and scores a different task than the one its owner believes it holds.


CorpusFormat = Literal["auto", "klue", "jsonl", "text"]

#: The comment lines the official KLUE files open with; the writer emits them so that a
#: KLUE file read and written back is byte-identical to the original.
KLUE_COMMENTS = (
    "## 토큰, 레이블 구분자 : \\t",
    "## 토큰 구분자 : \\n",
    "## 문장 구분자 : \\n\\n",
    "## 주석 : ##",
    "## 컬럼명 : CHAR\tNE_TAG",
)

#: File extensions ``format="auto"`` understands.
EXTENSIONS: dict[str, str] = {".tsv": "klue", ".jsonl": "jsonl", ".json": "jsonl", ".txt": "text"}

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


def iter_lines(path: Path, what: str, block: int = 1 << 20) -> Iterator[tuple[int, str]]:
    """(line number, line) of a UTF-8 file without the terminators (LF or CRLF) and the BOM, read lazily.

    Read and decoded a block of whole lines at a time (a KLUE TSV has a line per character:
    decoding each line on its own would cost more than parsing it); a block that is not
    UTF-8 is gone through line by line to name the line, column and byte of the first bad byte.
    """
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise CorpusError(f"{path}: no such file, expected an existing {what} file") from None
    except IsADirectoryError:
        raise CorpusError(f"{path}: is a directory, expected a {what} file") from None
    with f:
        offset = 0  # of the block in the file
        lineno = 0  # lines before the block
        pending: list[bytes] = []  # the start of a line longer than a block
        while True:
            data = f.read(block)
            if data and b"\n" not in data:
                pending.append(data)
                continue
            chunk = b"".join(pending) + data
            if not chunk:
                return
            cut = chunk.rfind(b"\n") + 1 if data else len(chunk)
            raw, pending = chunk[:cut], [chunk[cut:]]
            start = len(codecs.BOM_UTF8) if offset == 0 and raw.startswith(codecs.BOM_UTF8) else 0
            try:
                text = raw[start:].decode("utf-8")
            except UnicodeDecodeError:
                _raise_not_utf8(path, raw, start, offset, lineno)
            lines = text.split("\n")
            if lines[-1] == "":
                lines.pop()
            for line in lines:
                lineno += 1
                yield lineno, line[:-1] if line.endswith("\r") else line
            offset += len(raw)


def _raise_not_utf8(path: Path, raw: bytes, start: int, offset: int, lineno: int) -> None:
    """The CorpusError for the first line of ``raw`` (a block at ``offset``, after ``lineno`` lines) that is not UTF-8."""
    pos_line = 0
    for k, line in enumerate(raw.split(b"\n")):
        skip = start if k == 0 else 0
        try:
            line[skip:].decode("utf-8")
        except UnicodeDecodeError as exc:
            pos = skip + exc.start
            raise CorpusError(_not_utf8_message(path, lineno + k + 1, pos + 1, offset + pos_line + pos, line[pos],
                                                exc.reason)) from None
        pos_line += len(line) + 1
    raise AssertionError("a block that does not decode has a line that does not")


def _not_utf8_message(path: Path, lineno: int, column: int, pos: int, byte: int, reason: str) -> str:
    return (
        f"{path}:{lineno}: byte 0x{byte:02x} at byte column {column} is not UTF-8 ({reason}; byte {pos:,} of "
        f"the file), expected UTF-8 text"
    )


def _check_not_empty(sentences: list[Sentence], path: Path, what: str) -> list[Sentence]:
    if not sentences:
        raise CorpusError(f"{path}: no sentences, expected at least one {what}")
    return sentences


def _check_unique_id(seen: dict[str, int], sid: str, path: Path, lineno: int) -> None:
    if sid in seen:
        raise CorpusError(
            f"{path}:{lineno}: sentence id {excerpt(sid)} already used on line {seen[sid]}, expected unique ids"
        )
    seen[sid] = lineno


def read_klue_tsv(
    path: str | os.PathLike[str], labels: Sequence[str] | None = None, max_chars: int | None = None
) -> list[Sentence]:
    """Read the official KLUE-NER TSV format (see ../shared/data/klue-ner/README.md).

    A block is a run of ``##`` lines followed by ``char\\ttag`` lines. Its header is the
    LAST ``##`` line (``## <id>\\t<tagged sentence>``); earlier ``##`` lines are comments
    (one standard comment, ``## 컬럼명 : CHAR\\tNE_TAG``, contains a tab itself, so a tab
    does not tell a header from a comment). The characters and tags are the data; the
    header's tagged sentence must agree with them, up to whitespace at its ends: sentence
    ``klue-ner-v1_train_01212_nsmc`` of the official train file has a trailing space in its
    characters that its header lacks.

    ``labels``: every tag must be one of them (the error names the tag's line).
    ``max_chars``: the longest sentence accepted (the error names its header line).
    """
    path = Path(path)
    return _check_not_empty(list(iter_klue_tsv(path, labels, max_chars)), path, "'## <id>\\t<tagged sentence>' block")


def iter_klue_tsv(
    path: Path, labels: Sequence[str] | None = None, max_chars: int | None = None
) -> Iterator[Sentence]:
    """:func:`read_klue_tsv`'s sentences one by one, the file read lazily (a corpus larger than memory
    allows is encoded chunk by chunk); the ids seen are kept to refuse a repeated one."""
    known = frozenset(labels) if labels is not None else None
    done: list[Sentence] = []  # the sentence just finished, handed from finish() to the loop
    count = 0
    seen: dict[str, int] = {}
    header: tuple[int, str] | None = None  # (line number, line) of the block being read
    hashes: list[tuple[int, str]] = []  # ## lines not yet followed by characters
    chars: list[str] = []
    tags: list[str] = []

    def finish() -> None:
        nonlocal header
        if header is not None:
            first = header[0]
            sentence = _klue_sentence(path, first, header[1], chars, tags, seen)
            _check_length(f"{path}:{first}", sentence, max_chars)
            _check_known_tags(sentence, known, labels or (), lambda i: f"{path}:{first + 1 + i}")
            done.append(sentence)
        header = None
        chars.clear()
        tags.clear()

    for lineno, line in iter_lines(path, "KLUE TSV"):
        if line == "":
            finish()
            if done:
                count += 1
                yield done.pop()
            if hashes and count:
                lineno0, _ = hashes[-1]
                raise CorpusError(
                    f"{path}:{lineno0}: header without character lines, expected one 'char\\ttag' line per "
                    f"character after it"
                )
            hashes.clear()
        elif line.startswith("##"):
            if header is not None:
                raise CorpusError(
                    f"{path}:{lineno}: '##' line inside a sentence block, expected a blank line between blocks"
                )
            hashes.append((lineno, line))
        else:
            if header is None:
                if not hashes:
                    raise CorpusError(
                        f"{path}:{lineno}: character line before any header, expected "
                        f"'## <id>\\t<tagged sentence>' first"
                    )
                header = hashes[-1]
                hashes.clear()
            char, sep, tag = line.partition("\t")
            if not sep:
                raise CorpusError(f"{path}:{lineno}: no tab in {excerpt(line)}, expected 'char\\ttag'")
            if len(char) != 1:
                raise CorpusError(
                    f"{path}:{lineno}: {len(char)} characters {excerpt(char)} before the tab, expected exactly one"
                )
            if not TAG_RE.match(tag):
                raise CorpusError(f"{path}:{lineno}: tag {excerpt(tag)}, expected O, B-<TYPE> or I-<TYPE>")
            chars.append(char)
            tags.append(tag)
    finish()
    if done:
        count += 1
        yield done.pop()
    if hashes and count:
        raise CorpusError(
            f"{path}:{hashes[-1][0]}: header without character lines, expected one 'char\\ttag' line per "
            f"character after it"
        )


def _klue_sentence(
    path: Path, lineno: int, line: str, chars: list[str], tags: list[str], seen: dict[str, int]
) -> Sentence:
    sid, sep, tagged = line[2:].removeprefix(" ").partition("\t")
    if not sep or not sid:
        raise CorpusError(f"{path}:{lineno}: header {excerpt(line)}, expected '## <id>\\t<tagged sentence>'")
    _check_unique_id(seen, sid, path, lineno)
    sentence = Sentence(sid, "".join(chars), list(tags))
    if render_tagged(sentence).strip() == tagged.strip():
        return sentence
    plain = _strip_markup(tagged)
    if plain.strip() != sentence.text.strip():
        raise CorpusError(
            f"{path}:{lineno}: sentence {excerpt(sid)}: the characters spell {excerpt(sentence.text)}, expected the header's "
            f"sentence {excerpt(plain)} (they differ from character {_first_difference(sentence.text, plain)} on)"
        )
    raise CorpusError(
        f"{path}:{lineno}: sentence {excerpt(sid)}: the character tags mark {excerpt(render_tagged(sentence))}, expected the "
        f"header's entities {excerpt(tagged)}"
    )


def _first_difference(a: str, b: str) -> int:
    """The index of the first character where ``a`` and ``b`` differ (an excerpt may not reach it)."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def _klue_block(sentence: Sentence) -> str:
    _check_writable(sentence)
    lines = [f"## {sentence.id}\t{render_tagged(sentence)}"]
    lines += [f"{c}\t{t}" for c, t in zip(sentence.text, sentence.tags)]
    return "\n".join(lines) + "\n\n"


def _check_writable(sentence: Sentence, blank_ok: bool = True) -> None:
    """What the readers would refuse (or skip) must not be written: the file would not read back."""
    sid = sentence.id
    if not sid or any(c in sid for c in "\t\n\r"):
        raise CorpusError(f"sentence {excerpt(sid)}: id is empty or holds a tab or line break, expected a one-line id")
    if not (sentence.text if blank_ok else sentence.text.strip()):
        raise CorpusError(f"sentence {excerpt(sid)}: empty text, expected at least one non-space character")
    for i, c in enumerate(sentence.text):
        if c in "\t\n\r":
            raise CorpusError(f"sentence {excerpt(sid)}: character {i} is {excerpt(c)}, expected no tab or line break in a text")
    for i, t in enumerate(sentence.tags):
        if not TAG_RE.match(t):
            raise CorpusError(f"sentence {excerpt(sid)}: character {i} has tag {excerpt(t)}, expected O, B-<TYPE> or I-<TYPE>")


def _chmod_like_new_file(fd: int) -> None:
    """mkstemp makes owner-only files; a corpus should get the permissions open() would give it."""
    umask = os.umask(0o022)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)


def _write_atomic(path: str | os.PathLike[str], text: str, overwrite: bool) -> Path:
    """Write through a temporary file in the same directory so a reader never sees half a corpus."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise CorpusError(f"{path}: already exists, expected a new path (or pass overwrite=True)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        _chmod_like_new_file(fd)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_klue_tsv(sentences: Iterable[Sentence], path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Write the official KLUE TSV format: the standard comment lines, then one block per sentence."""
    body = "".join(_klue_block(s) for s in sentences)
    return _write_atomic(path, "\n".join(KLUE_COMMENTS) + "\n" + body, overwrite)


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
    return _write_atomic(path, "".join(lines), overwrite)


def read_text(path: str | os.PathLike[str], max_chars: int | None = None) -> list[Sentence]:
    """Plain text to predict on: one sentence per line, all tags ``O``.

    Blank lines are skipped but still counted, so the id ``<file stem>-<line number>``
    points at the line the sentence came from. ``max_chars``: the longest line accepted.
    """
    path = Path(path)
    return _check_not_empty(list(iter_text(path, max_chars)), path, "non-blank line")


def iter_text(path: Path, max_chars: int | None = None) -> Iterator[Sentence]:
    """:func:`read_text`'s sentences one by one, the file read lazily (``predict`` streams it)."""
    for lineno, line in iter_lines(path, "text"):
        if line.strip():
            sentence = Sentence(f"{path.stem}-{lineno}", line)
            _check_length(f"{path}:{lineno}", sentence, max_chars)
            yield sentence


def write_text(sentences: Iterable[Sentence], path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Write the texts one per line; ids and tags are not part of this format."""
    lines = []
    for s in sentences:
        _check_writable(s, blank_ok=False)
        lines.append(s.text + "\n")
    return _write_atomic(path, "".join(lines), overwrite)


def resolve_format(path: str | os.PathLike[str], format: CorpusFormat = "auto") -> str:
    """The concrete format of ``path``: as given, or from the extension when ``auto``."""
    if format != "auto":
        if format not in ("klue", "jsonl", "text"):
            raise CorpusError(f"{path}: format {excerpt(format)}, expected one of auto, klue, jsonl, text")
        return format
    suffix = Path(path).suffix.lower()
    if suffix not in EXTENSIONS:
        accepted = ", ".join(f"{ext} ({fmt})" for ext, fmt in EXTENSIONS.items())
        raise CorpusError(
            f"{path}: unknown extension {excerpt(suffix or '(none)')}, expected one of {accepted} or an explicit format"
        )
    return EXTENSIONS[suffix]


def iter_corpus(
    path: str | os.PathLike[str], format: CorpusFormat = "auto", labelled: bool = True, *,
    labels: Sequence[str] | None = None, max_chars: int | None = None,
) -> Iterator[Sentence]:
    """:func:`read_corpus`'s sentences one by one, the file read lazily, with the same checks and errors
    (an empty file included, raised once the file is read through)."""
    path = Path(path)
    fmt = resolve_format(path, format)
    if fmt == "jsonl":
        sentences, what = iter_jsonl(path, labelled, labels, max_chars), "JSON object line"
    elif fmt == "klue":
        sentences, what = iter_klue_tsv(path, labels, max_chars), "'## <id>\\t<tagged sentence>' block"
    else:
        sentences, what = iter_text(path, max_chars), "non-blank line"
    count = 0
    for sentence in sentences:
        count += 1
        yield sentence
    if not count:
        _check_not_empty([], path, what)


def read_corpus(
    path: str | os.PathLike[str], format: CorpusFormat = "auto", labelled: bool = True, *,
    labels: Sequence[str] | None = None, max_chars: int | None = None,
) -> list[Sentence]:
    """Read any supported corpus; ``auto`` picks the format from the file extension.

    ``labelled=False`` is for text to tag: JSONL lines may then carry ``origin`` alone.
    ``labels``: the label set every tag must belong to (None: any BIO tag). ``max_chars``: the
    longest sentence accepted (None: no limit). Both errors name the file and the line.
    """
    fmt = resolve_format(path, format)
    if fmt == "jsonl":
        return read_jsonl(path, labelled, labels, max_chars)
    if fmt == "klue":
        return read_klue_tsv(path, labels, max_chars)
    return read_text(path, max_chars)


def write_corpus(
    sentences: Iterable[Sentence], path: str | os.PathLike[str], format: CorpusFormat = "auto", overwrite: bool = False
) -> Path:
    """Write any supported corpus; ``auto`` picks the format from the file extension."""
    fmt = resolve_format(path, format)
    writer = {"klue": write_klue_tsv, "jsonl": write_jsonl, "text": write_text}[fmt]
    return writer(sentences, path, overwrite=overwrite)


# --------------------------------------------------------------------------------------
# The KLUE download
# --------------------------------------------------------------------------------------

KLUE_NER_URL = "https://raw.githubusercontent.com/KLUE-benchmark/KLUE/main/klue_benchmark/klue-ner-v1.1/"
KLUE_NER_FILES = {"train": "klue-ner-v1.1_train.tsv", "dev": "klue-ner-v1.1_dev.tsv"}
#: The dev file is the one every KLUE-NER result is reported on, so it is pinned byte for byte.
KLUE_DEV_SHA256 = "0f4d5e818f7b82d299c3a87856fc40a706f5943207580ddb252397e387050a54"
#: The train file is only pinned by its size in sentences.
KLUE_TRAIN_SENTENCES = 21_008

_LOCAL_FILES_HINT = "pass local files with --data.data_dir DIR --data.train_file FILE --data.val_file FILE instead"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _klue_file_problem(split: str, path: Path, dev_sha256: str, train_sentences: int) -> str | None:
    """Why ``path`` is not the expected KLUE file, or None when it is."""
    if split == "dev":
        got = _sha256(path)
        return None if got == dev_sha256 else f"sha256 {got}, expected {dev_sha256}"
    try:
        n = len(read_klue_tsv(path))
    except CorpusError as exc:
        return f"does not parse ({exc})"
    return None if n == train_sentences else f"{n:,} sentences, expected {train_sentences:,}"


def download_klue_ner(
    cache_dir: str | os.PathLike[str],
    base_url: str = KLUE_NER_URL,
    timeout: float = 60.0,
    *,
    expected_dev_sha256: str = KLUE_DEV_SHA256,
    expected_train_sentences: int = KLUE_TRAIN_SENTENCES,
) -> dict[str, Path]:
    """The official KLUE-NER v1.1 train and dev files in ``cache_dir``, downloaded if not there.

    Files already cached and valid are reused without a request. New files are fetched
    to temporary files in ``cache_dir``, checked, and only then moved into place, all of
    them together: a failed call leaves no partial or unverified file behind.
    """
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    paths = {split: cache / name for split, name in KLUE_NER_FILES.items()}
    pending: dict[str, Path] = {}  # split -> verified temporary file
    try:
        for split in ("dev", "train"):
            path = paths[split]
            if path.is_file() and not _klue_file_problem(split, path, expected_dev_sha256, expected_train_sentences):
                continue
            url = base_url.rstrip("/") + "/" + KLUE_NER_FILES[split]
            fd, tmp_name = tempfile.mkstemp(dir=cache, prefix=f".{path.name}.", suffix=".part")
            tmp = Path(tmp_name)
            pending[split] = tmp
            _chmod_like_new_file(fd)
            with os.fdopen(fd, "wb") as out:
                _fetch(url, out, timeout)
            problem = _klue_file_problem(split, tmp, expected_dev_sha256, expected_train_sentences)
            if problem:
                raise CorpusError(f"{url}: the downloaded KLUE-NER {split} file has {problem}; nothing was cached")
        for split, tmp in pending.items():
            os.replace(tmp, paths[split])
        pending.clear()
    finally:
        for tmp in pending.values():
            tmp.unlink(missing_ok=True)
    return paths


def _fetch(url: str, out: BinaryIO, timeout: float) -> None:
    # A fresh opener per call reads the proxy settings of the environment as they are now.
    opener = urllib.request.build_opener()
    try:
        with opener.open(url, timeout=timeout) as response:
            while chunk := response.read(1 << 20):
                out.write(chunk)
    except urllib.error.HTTPError as exc:
        raise CorpusError(f"{url} could not be downloaded (HTTP {exc.code} {exc.reason}); {_LOCAL_FILES_HINT}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CorpusError(f"{url} could not be reached ({reason}); {_LOCAL_FILES_HINT}") from None
