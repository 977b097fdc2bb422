"""The on-disk cache of encoded sentences: flat integer arrays in a NumPy ``.npz``.

The cache directory is shared by every run of the user, so nothing read from it may run
code: the entries are plain integer arrays, loaded with ``allow_pickle=False`` (an entry
holding anything else, a pickle included, is refused and rebuilt). An entry is named by
the sha256 of the corpus file's bytes and of every setting that changes the encoding, so a
changed file or setting simply misses. Entries are written to a temporary file in the same
directory, fsynced and renamed into place: a reader sees a whole entry or none. Any entry
that does not load or does not fit together (truncated, damaged, foreign) is rebuilt.

Layout (one array per field, all sentences concatenated, so that loading is a handful of
array reads and one linear pass, whatever the corpus size):

* per sentence: ``index``, ``text_length``, ``n_windows``, ``n_tokens``;
* per window: ``window_sentence``, ``window_length``;
* per window token: ``input_ids`` and, for labelled encodings, ``labels``;
* per content token: ``offsets`` (``[n, 2]``), ``token_window``, ``token_pos``;
* per character: ``char_token``.

Each array is stored in the smallest signed integer type that holds its values.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

from ner_lit.alignment import EncodedSentence, Window

#: Bump when the layout above changes; it is part of every entry's key and stored in the entry.
CACHE_FORMAT = 2
SUFFIX = ".npz"

_SENTENCE_FIELDS = ("index", "text_length", "n_windows", "n_tokens")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes, read in chunks (a corpus may be larger than memory allows twice)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_key(content_sha256: str, settings: dict[str, Any]) -> str:
    """The entry name for a file's content and the settings that shape its encoding."""
    key = hashlib.sha256()
    key.update(content_sha256.encode())
    key.update(json.dumps({"cache_format": CACHE_FORMAT, **settings}, sort_keys=True).encode())
    return key.hexdigest()[:32]


def _compact(values: Iterable[int], count: int) -> np.ndarray:
    """``values`` as the smallest signed integer array that holds them."""
    array = np.fromiter(values, dtype=np.int64, count=count)
    if array.size == 0:
        return array.astype(np.int8)
    lo, hi = int(array.min()), int(array.max())
    for dtype in (np.int8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return array.astype(dtype)
    return array


def _concat(arrays: list[np.ndarray], empty_shape: tuple[int, ...]) -> np.ndarray:
    return np.concatenate([np.asarray(x, dtype=np.int64).reshape(-1, *empty_shape[1:]) for x in arrays]) if arrays \
        else np.zeros(empty_shape, dtype=np.int64)


def pack(encoded: list[EncodedSentence]) -> dict[str, np.ndarray]:
    """The flat arrays of a list of encoded sentences."""
    windows = [w for e in encoded for w in e.windows]
    with_labels = bool(windows) and windows[0].labels is not None
    n_ids = sum(len(w.input_ids) for w in windows)
    n_tokens = sum(e.num_tokens for e in encoded)
    n_chars = sum(len(e.char_token) for e in encoded)
    chain = itertools.chain.from_iterable
    arrays = {
        "format": np.asarray([CACHE_FORMAT], dtype=np.int32),
        "index": _compact((e.index for e in encoded), len(encoded)),
        "text_length": _compact((e.text_length for e in encoded), len(encoded)),
        "n_windows": _compact((len(e.windows) for e in encoded), len(encoded)),
        "n_tokens": _compact((e.num_tokens for e in encoded), len(encoded)),
        "window_sentence": _compact((w.sentence for w in windows), len(windows)),
        "window_length": _compact((len(w.input_ids) for w in windows), len(windows)),
        "input_ids": _compact(chain(w.input_ids for w in windows), n_ids),
        "offsets": _compact(_concat([e.offsets for e in encoded], (0, 2)).ravel(), 2 * n_tokens).reshape(n_tokens, 2),
        "token_window": _compact(_concat([e.token_window for e in encoded], (0,)), n_tokens),
        "token_pos": _compact(_concat([e.token_pos for e in encoded], (0,)), n_tokens),
        "char_token": _compact(_concat([e.char_token for e in encoded], (0,)), n_chars),
    }
    if with_labels:
        arrays["labels"] = _compact(chain(w.labels for w in windows), n_ids)
    return arrays


def _consistent(a: dict[str, np.ndarray]) -> bool:
    """Whether the arrays have the shapes one another implies (a damaged entry usually does not)."""
    if any(a[k].dtype.kind != "i" for k in a):
        return False
    if a["format"].shape != (1,) or int(a["format"][0]) != CACHE_FORMAT:
        return False
    n = a["index"].shape
    if len(n) != 1 or any(a[k].shape != n for k in _SENTENCE_FIELDS):
        return False
    if any(a[k].size and a[k].min() < 0 for k in ("text_length", "n_windows", "n_tokens", "window_length")):
        return False
    windows, tokens, chars = (int(a[k].sum()) for k in ("n_windows", "n_tokens", "text_length"))
    ids = (int(a["window_length"].sum()),)
    return (
        a["window_sentence"].shape == a["window_length"].shape == (windows,)
        and a["input_ids"].shape == ids
        and ("labels" not in a or a["labels"].shape == ids)
        and a["offsets"].shape == (tokens, 2)
        and a["token_window"].shape == a["token_pos"].shape == (tokens,)
        and a["char_token"].shape == (chars,)
    )


def unpack(a: dict[str, np.ndarray]) -> list[EncodedSentence]:
    """Encoded sentences from the flat arrays (one linear pass)."""
    input_ids = a["input_ids"].tolist()
    labels = a["labels"].tolist() if "labels" in a else None
    windows: list[Window] = []
    pos = 0
    for sentence, length in zip(a["window_sentence"].tolist(), a["window_length"].tolist()):
        end = pos + length
        windows.append(Window(sentence, input_ids[pos:end], labels[pos:end] if labels is not None else None))
        pos = end
    # The alignment's per-token and per-character maps are int32 arrays: slices of one array each.
    offsets, token_window, token_pos, char_token = (
        a[k].astype(np.int32) for k in ("offsets", "token_window", "token_pos", "char_token"))
    out: list[EncodedSentence] = []
    w = t = c = 0
    for index, text_length, n_windows, n_tokens in zip(*(a[k].tolist() for k in _SENTENCE_FIELDS)):
        out.append(EncodedSentence(
            index, text_length, windows[w:w + n_windows], offsets[t:t + n_tokens],
            token_window[t:t + n_tokens], token_pos[t:t + n_tokens], char_token[c:c + text_length],
        ))
        w, t, c = w + n_windows, t + n_tokens, c + text_length
    return out


def load(path: Path) -> Optional[list[EncodedSentence]]:
    """The entry at ``path``, or None when there is none or it is not a whole, valid entry.

    ``allow_pickle=False``: an entry can only ever give integers, never run code.
    """
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            return None  # a bare .npy array
        with npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return None  # absent, damaged, truncated or a pickle: rebuilt by the caller
    required = {"format", *_SENTENCE_FIELDS, "window_sentence", "window_length", "input_ids", "offsets",
                "token_window", "token_pos", "char_token"}
    if not required <= arrays.keys() or not arrays.keys() <= required | {"labels"} or not _consistent(arrays):
        return None
    return unpack(arrays)


def save(path: Path, encoded: list[EncodedSentence]) -> None:
    """Write an entry atomically: a temporary file in the same directory, fsynced, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **pack(encoded))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable, where the platform allows opening a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
