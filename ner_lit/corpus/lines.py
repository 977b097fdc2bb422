"""Reading a corpus file line by line with errors that name the file and line; writing one whole.

Every reader goes through :func:`iter_lines`, so a file that is not UTF-8, empty, or holds a
repeated sentence id gets the same kind of message whatever its format.
"""
from __future__ import annotations

import codecs
import os
from pathlib import Path
from typing import Iterator

from ner_lit.corpus.records import TAG_RE, CorpusError, Sentence, excerpt
from ner_lit.files import write_text_atomic


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


def write_new_file(path: str | os.PathLike[str], text: str, overwrite: bool) -> Path:
    """Write through a temporary file in the same directory so a reader never sees half a corpus."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise CorpusError(f"{path}: already exists, expected a new path (or pass overwrite=True)")
    return write_text_atomic(path, text)
