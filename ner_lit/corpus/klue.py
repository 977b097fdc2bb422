"""KLUE-NER's TSV format (one character and its tag a line, ``##`` comment lines) and its download.

The official files are fetched over HTTP(S) into the cache and checked (dev by sha256, train
by sentence count), so a truncated or substituted download is refused, not trained on.
"""
from __future__ import annotations

import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Sequence

from ner_lit.corpus.lines import (
    _check_not_empty,
    _check_unique_id,
    _check_writable,
    iter_lines,
    write_new_file,
)
from ner_lit.corpus.records import (
    TAG_RE,
    CorpusError,
    Sentence,
    _check_known_tags,
    _check_length,
    _strip_markup,
    excerpt,
    render_tagged,
)
from ner_lit.files import file_sha256, new_file_permissions

#: The comment lines the official KLUE files open with; the writer emits them so that a
#: KLUE file read and written back is byte-identical to the original.
KLUE_COMMENTS = (
    "## 토큰, 레이블 구분자 : \\t",
    "## 토큰 구분자 : \\n",
    "## 문장 구분자 : \\n\\n",
    "## 주석 : ##",
    "## 컬럼명 : CHAR\tNE_TAG",
)


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


def write_klue_tsv(sentences: Iterable[Sentence], path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Write the official KLUE TSV format: the standard comment lines, then one block per sentence."""
    body = "".join(_klue_block(s) for s in sentences)
    return write_new_file(path, "\n".join(KLUE_COMMENTS) + "\n" + body, overwrite)


KLUE_NER_URL = "https://raw.githubusercontent.com/KLUE-benchmark/KLUE/main/klue_benchmark/klue-ner-v1.1/"

KLUE_NER_FILES = {"train": "klue-ner-v1.1_train.tsv", "dev": "klue-ner-v1.1_dev.tsv"}


#: The dev file is the one every KLUE-NER result is reported on, so it is pinned byte for byte.
KLUE_DEV_SHA256 = "0f4d5e818f7b82d299c3a87856fc40a706f5943207580ddb252397e387050a54"


#: The train file is only pinned by its size in sentences.
KLUE_TRAIN_SENTENCES = 21_008


_LOCAL_FILES_HINT = "pass local files with --data.data_dir DIR --data.train_file FILE --data.val_file FILE instead"


def _klue_file_problem(split: str, path: Path, dev_sha256: str, train_sentences: int) -> str | None:
    """Why ``path`` is not the expected KLUE file, or None when it is."""
    if split == "dev":
        got = file_sha256(path)
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
            new_file_permissions(fd)
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
