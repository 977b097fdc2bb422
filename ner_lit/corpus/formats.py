"""One entry point for every corpus format: chosen by ``--data.format`` or the file's extension.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator, Literal, Sequence

from ner_lit.corpus.jsonl import iter_jsonl, read_jsonl, write_jsonl
from ner_lit.corpus.klue import iter_klue_tsv, read_klue_tsv, write_klue_tsv
from ner_lit.corpus.lines import _check_not_empty
from ner_lit.corpus.records import CorpusError, Sentence, excerpt
from ner_lit.corpus.text import iter_text, read_text, write_text

CorpusFormat = Literal["auto", "klue", "jsonl", "text"]


#: File extensions ``format="auto"`` understands.
EXTENSIONS: dict[str, str] = {".tsv": "klue", ".jsonl": "jsonl", ".json": "jsonl", ".txt": "text"}


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
