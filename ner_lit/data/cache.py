"""The on-disk cache of an encoded corpus: one directory of flat NumPy arrays, read memory-mapped.

A training corpus of a million sentences must not become a million Python objects: the
windows, the alignment maps and what evaluation needs of each sentence (its id, text and
gold tags) are concatenated into a handful of ``.npy`` arrays, written chunk by chunk while
the corpus is encoded (memory bounded by one chunk) and read back with
``np.load(mmap_mode="r", allow_pickle=False)``. A dataset then hands out a window or a
sentence by slicing (:mod:`ner_lit.data.datasets`); the pages stay the kernel's file cache,
shared by DataLoader workers and DDP ranks, and the process's own memory does not grow with
the corpus.

The cache directory is shared by every run of the user, so nothing read from it may run
code: the entries are plain integer arrays and a JSON manifest, loaded without pickle. An
entry is named by the sha256 of the corpus file's bytes and of every setting that changes
the encoding, so a changed file or setting simply misses (never a name or a time). An entry
is written into a temporary directory beside its final place, every file fsynced, then
renamed into place: a reader sees a whole entry or none. Processes sharing the directory
publish under an ``flock`` on ``.<entry>.lock`` beside the entry: the first whole entry in place
is kept and a later equal one dropped, and only an entry that does not load (damaged) is ever
moved aside, so an entry another process may be reading is never moved or removed. A writer
holds an ``flock`` on its temporary directory while it lives; one left by a killed writer is
never read and is removed by the next publish of the same entry. The manifest records every array's
dtype, shape, size and sha256, checked on each load, so an entry that was truncated,
damaged or tampered with is refused and rebuilt, never used.

Layout (``n`` sentences, ``W`` windows):

* prefix arrays, ``int64``: ``sentence_windows``, ``sentence_tokens``, ``sentence_chars``,
  ``sentence_text_bytes``, ``sentence_id_bytes`` (``n + 1`` each: where sentence i's
  windows, content tokens, characters and UTF-8 bytes of text and id begin) and
  ``window_ids`` (``W + 1``: where window j's ids begin);
* per window: ``window_sentence``, ``window_token`` (its first content token, within its sentence);
* per window token: ``input_ids`` and, for labelled encodings, ``labels``;
* per content token: ``offsets`` (``[tokens, 2]``), ``token_window`` (within its sentence), ``token_pos``;
* per character: ``char_token``, ``gold`` (tag ids);
* bytes: ``text`` and ``ids`` (UTF-8, concatenated).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from ner_lit.files import file_sha256, fsync_dir

try:
    import fcntl
except ImportError:  # not POSIX: publishing falls back to rename-then-check, without a lock
    fcntl = None  # type: ignore[assignment]

#: Bump when the layout above changes; it is part of every entry's key and stored in its manifest.
CACHE_FORMAT = 4
MANIFEST = "manifest.json"

#: name -> (what it counts, dtype, trailing shape). Counts: sentences, windows, ids, tokens, chars, text, id
#: (bytes); a "+1" count is a prefix array.
FIELDS: dict[str, tuple[str, str, tuple[int, ...]]] = {
    "sentence_windows": ("sentences+1", "<i8", ()),
    "sentence_tokens": ("sentences+1", "<i8", ()),
    "sentence_chars": ("sentences+1", "<i8", ()),
    "sentence_text_bytes": ("sentences+1", "<i8", ()),
    "sentence_id_bytes": ("sentences+1", "<i8", ()),
    "window_ids": ("windows+1", "<i8", ()),
    "window_sentence": ("windows", "<i4", ()),
    "window_token": ("windows", "<i4", ()),
    "input_ids": ("ids", "<i4", ()),
    "labels": ("ids", "<i2", ()),
    "offsets": ("tokens", "<i4", (2,)),
    "token_window": ("tokens", "<i4", ()),
    "token_pos": ("tokens", "<i4", ()),
    "char_token": ("chars", "<i4", ()),
    "gold": ("chars", "<i2", ()),
    "text": ("text", "|u1", ()),
    "ids": ("id", "|u1", ()),
}
#: prefix array -> the count it ends at
PREFIXES = {"sentence_windows": "windows", "sentence_tokens": "tokens", "sentence_chars": "chars",
            "sentence_text_bytes": "text", "sentence_id_bytes": "id", "window_ids": "ids"}
COUNTS = ("sentences", "windows", "ids", "tokens", "chars", "text", "id")
#: A temporary directory older than this (seconds) and not locked by a live writer is a dead writer's.
DEAD_TEMPORARY_S = 60.0


def cache_key(content_sha256: str, settings: dict[str, Any]) -> str:
    """The entry name for a file's content and the settings that shape its encoding."""
    key = hashlib.sha256()
    key.update(content_sha256.encode())
    key.update(json.dumps({"cache_format": CACHE_FORMAT, **settings}, sort_keys=True).encode())
    return key.hexdigest()[:32]


class EntryWriter:
    """Builds an entry chunk by chunk in a temporary directory; :meth:`publish` renames it into place.

    Each field is appended to a raw file as chunks come (nothing is kept but running
    totals); :meth:`publish` turns every raw file into a ``.npy`` (header, then the bytes
    copied in blocks and hashed on the way), writes the manifest, fsyncs and renames. Used as
    a context manager, an exception (a bad line in the corpus, Ctrl-C) removes the temporary
    directory and leaves no entry.
    """

    def __init__(self, final: Optional[Path], with_labels: bool) -> None:
        self.final = final
        self.fields = [f for f in FIELDS if with_labels or f != "labels"]
        self.tmp: Optional[Path] = None
        self._tmp_fd: Optional[int] = None
        self._raw: dict[str, Any]
        if final is None:  # in memory: where the cache can not be written (a full disk), see in_memory()
            self._raw = {name: io.BytesIO() for name in self.fields}
        else:
            final.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
            self._tmp_fd = _lock_directory(self.tmp)  # alive: no publisher removes it as a dead writer's
            self._raw = {name: open(self.tmp / f"{name}.raw", "wb") for name in self.fields}
        self.counts = dict.fromkeys(COUNTS, 0)
        for name in PREFIXES:
            self._raw[name].write(np.zeros(1, dtype=FIELDS[name][1]).tobytes())

    def __enter__(self) -> "EntryWriter":
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is not None:
            self.abort()

    def append(self, chunk: dict[str, np.ndarray]) -> None:
        """Add a chunk of sentences: per-sentence and per-window *lengths* (``n_windows``,
        ``n_tokens``, ``n_chars``, ``n_text_bytes``, ``n_id_bytes``, ``window_length``) plus the
        data fields; window sentences are local to the chunk."""
        ends = {"sentence_windows": "n_windows", "sentence_tokens": "n_tokens", "sentence_chars": "n_chars",
                "sentence_text_bytes": "n_text_bytes", "sentence_id_bytes": "n_id_bytes", "window_ids": "window_length"}
        for name in self.fields:
            if name in PREFIXES:
                total = self.counts[PREFIXES[name]]
                values = total + np.cumsum(chunk[ends[name]], dtype=np.int64)
            elif name == "window_sentence":
                values = self.counts["sentences"] + np.asarray(chunk[name], dtype=np.int64)
            else:
                values = chunk[name]
            self._raw[name].write(np.ascontiguousarray(values, dtype=FIELDS[name][1]).tobytes())
        self.counts["sentences"] += len(chunk["n_windows"])
        for count, source in (("windows", "n_windows"), ("ids", "window_length"), ("tokens", "n_tokens"),
                              ("chars", "n_chars"), ("text", "n_text_bytes"), ("id", "n_id_bytes")):
            self.counts[count] += int(np.sum(chunk[source], dtype=np.int64))

    def _shape(self, name: str) -> tuple[int, ...]:
        level, _, inner = FIELDS[name]
        base, _, extra = level.partition("+")
        return (self.counts[base] + (1 if extra else 0), *inner)

    def in_memory(self) -> "Entry":
        """The entry of an in-memory writer (``final=None``), its arrays read-only views of the buffers."""
        arrays = {}
        for name in self.fields:
            array = np.frombuffer(self._raw[name].getbuffer(), dtype=FIELDS[name][1]).reshape(self._shape(name))
            arrays[name] = array
        return Entry(None, arrays, dict(self.counts), {})

    def finish(self, meta: dict[str, Any]) -> Path:
        """Turn the raw files into ``.npy`` arrays and write the manifest, in the temporary directory; returns it."""
        manifest: dict[str, Any] = {"format": CACHE_FORMAT, "counts": self.counts, "meta": meta, "fields": {}}
        for name in self.fields:
            manifest["fields"][name] = self._finish_field(name)
        _write_synced(self.tmp / MANIFEST, json.dumps(manifest, sort_keys=True).encode())
        fsync_dir(self.tmp)
        return self.tmp

    def publish(self, meta: dict[str, Any]) -> Path:
        """:meth:`finish`, then rename the directory into place; returns its path.

        Under the entry's lock: an entry already in place (another rank or process was faster)
        is kept when it loads whole, and this one dropped; a broken one is moved aside and
        replaced. Temporaries of dead writers of the same entry are removed.
        """
        self.finish(meta)
        try:
            with _entry_lock(self.final):
                try:
                    os.replace(self.tmp, self.final)
                except OSError:
                    if load(self.final) is not None:  # lost a race to an equal entry: keep that one
                        self.abort()
                        return self.final
                    aside = Path(tempfile.mkdtemp(dir=self.final.parent, prefix=f".{self.final.name}.", suffix=".stale"))
                    os.replace(self.final, aside / "entry")
                    shutil.rmtree(aside, ignore_errors=True)
                    os.replace(self.tmp, self.final)
                self.tmp = None
                self._unlock_tmp()
                _remove_dead_temporaries(self.final)
        except BaseException:
            self.abort()
            raise
        fsync_dir(self.final.parent)
        return self.final

    def _finish_field(self, name: str) -> dict[str, Any]:
        dtype, shape = FIELDS[name][1], self._shape(name)
        raw = self._raw.pop(name)
        raw.close()
        path = self.tmp / f"{name}.npy"
        digest = hashlib.sha256()
        with open(path, "wb") as out, open(self.tmp / f"{name}.raw", "rb") as src:
            np.lib.format.write_array_header_1_0(out, {"descr": dtype, "fortran_order": False, "shape": shape})
            out.flush()
            with open(path, "rb") as head:
                digest.update(head.read())
            for block in iter(lambda: src.read(1 << 22), b""):
                out.write(block)
                digest.update(block)
            out.flush()
            os.fsync(out.fileno())
        os.unlink(self.tmp / f"{name}.raw")
        return {"dtype": dtype, "shape": list(shape), "bytes": path.stat().st_size, "sha256": digest.hexdigest()}

    def abort(self) -> None:
        for f in self._raw.values():
            f.close()
        self._raw.clear()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
        self._unlock_tmp()

    def _unlock_tmp(self) -> None:
        if self._tmp_fd is not None:
            os.close(self._tmp_fd)
            self._tmp_fd = None


@contextmanager
def _entry_lock(final: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``.<entry>.lock`` beside the entry, for publishing it.

    The lock file is removed on release, while still held; a process that locked a file
    already removed (it opened it before the removal) sees that the name no longer leads to
    its file and locks the new one.
    """
    if fcntl is None:
        yield
        return
    path = final.parent / f".{final.name}.lock"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held, named = os.fstat(fd), os.stat(path)
            if (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino):
                break
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield
    finally:
        try:
            os.unlink(path)
        finally:
            os.close(fd)


def _lock_directory(path: Path) -> Optional[int]:
    """A shared ``flock`` held on a writer's temporary directory while the writer lives (None without fcntl)."""
    if fcntl is None:
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _remove_dead_temporaries(final: Path) -> None:
    """Remove the temporaries of ``final`` whose writer died (killed mid-write): older than
    :data:`DEAD_TEMPORARY_S` and locked by no live writer. Called under the entry's lock."""
    if fcntl is None:
        return
    now = time.time()
    for path in final.parent.glob(f".{final.name}.*"):
        if not path.name.endswith((".tmp", ".stale")):
            continue
        try:
            if now - path.lstat().st_mtime < DEAD_TEMPORARY_S:
                continue  # just made: its writer may not have locked it yet
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # a live writer's (or a private entry in use)
        try:
            shutil.rmtree(path, ignore_errors=True)
        finally:
            os.close(fd)


class Entry:
    """A loaded entry: its arrays memory-mapped (read-only) and its manifest's ``meta``."""

    def __init__(self, path: Optional[Path], arrays: dict[str, np.ndarray], counts: dict[str, int], meta: dict[str, Any]) -> None:
        self.path = path
        self.arrays = arrays
        self.counts = counts
        self.meta = meta

    def __getattr__(self, name: str) -> np.ndarray:
        arrays = self.__dict__.get("arrays")
        if arrays is not None and name in arrays:
            return arrays[name]
        raise AttributeError(name)

    def __len__(self) -> int:
        return self.counts["sentences"]

    @property
    def with_labels(self) -> bool:
        return "labels" in self.arrays

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (a DataLoader worker under ``spawn``) as its path: the worker maps the same files."""
        if self.path is None:
            return {"arrays": {k: np.array(v) for k, v in self.arrays.items()}, "counts": self.counts, "meta": self.meta}
        return {"path": str(self.path)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "path" not in state:
            self.__dict__.update(path=None, **state)
            return
        entry = load(Path(state["path"]), verify=False)
        if entry is None:
            raise RuntimeError(f"{state['path']}: the encoded cache entry is gone")
        self.__dict__.update(entry.__dict__)


def load(path: Path, verify: bool = True) -> Optional[Entry]:
    """The entry at ``path``, or None when there is none or it is not whole and valid.

    Checked: the manifest, every array's dtype, shape, size and (``verify``) sha256, and that
    the prefix arrays start at 0, never decrease and end at their level's count. Arrays are
    loaded ``allow_pickle=False``: an entry can only ever give numbers, never run code.
    """
    try:
        manifest = json.loads((path / MANIFEST).read_bytes())
        if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT:
            return None
        counts = {k: int(manifest["counts"][k]) for k in COUNTS}
        fields = manifest["fields"]
        required = set(FIELDS) - {"labels"}
        if not required <= fields.keys() <= set(FIELDS):
            return None
        arrays = {}
        for name, record in fields.items():
            arrays[name] = _load_field(path / f"{name}.npy", name, record, counts, verify)
            if arrays[name] is None:
                return None
        for name, level in PREFIXES.items():
            prefix = arrays[name]
            if prefix[0] != 0 or prefix[-1] != counts[level] or (len(prefix) > 1 and np.diff(prefix).min() < 0):
                return None
        return Entry(path, arrays, counts, manifest.get("meta", {}))
    except (OSError, ValueError, EOFError, KeyError, TypeError, AttributeError):
        return None  # absent, damaged, truncated or foreign: rebuilt by the caller


def _load_field(path: Path, name: str, record: dict[str, Any], counts: dict[str, int], verify: bool) -> Optional[np.ndarray]:
    level, dtype, inner = FIELDS[name]
    base, _, extra = level.partition("+")
    shape = (counts[base] + (1 if extra else 0), *inner)
    if record.get("dtype") != dtype or tuple(record.get("shape", ())) != shape:
        return None
    if path.stat().st_size != record.get("bytes") or (verify and file_sha256(path) != record.get("sha256")):
        return None
    if 0 in shape:  # nothing to map: an empty file region can not be mmapped
        array = np.load(path, allow_pickle=False)
    else:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    if not isinstance(array, np.ndarray) or array.dtype != np.dtype(dtype) or array.shape != shape:
        return None
    return array


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())

