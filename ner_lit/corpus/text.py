"""Plain text: one sentence a line, no tags (what ``predict`` reads most often).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

from ner_lit.corpus.lines import _check_not_empty, _check_writable, iter_lines, write_new_file
from ner_lit.corpus.records import Sentence, _check_length


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
    return write_new_file(path, "".join(lines), overwrite)
