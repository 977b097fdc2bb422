"""Writing a file so that a kill at any moment leaves the old file or the new one, never half of either.

Every file ner_lit writes for a user or a later run goes through :func:`atomic_writer`: corpora,
reports, tagger specs, cache records, checkpoints. The bytes go to a temporary file in the target's
directory (the same file system, so the rename is atomic), are flushed and fsynced, the file gets
the permissions ``open()`` would have given it, and ``os.replace`` puts it in place; the directory
is then fsynced so that the rename survives a power cut. A failure removes the temporary file and
leaves the target as it was; where the system refused (a full disk, a read-only file system, no
permission) it is a :class:`WriteError`, which the CLI reports in one line naming the file.

Standard library only: the CLI's light front writes through it before torch is imported.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator, Optional

from ner_lit.errors import UserError


class WriteError(UserError, OSError):
    """A file the system would not let us write: the message names it and the cause, the old file is unchanged.

    An ``OSError`` as well, so that code which carries on without a cache entry it could not
    write (``except OSError``) still does.
    """


def refused(target: str | os.PathLike[str], exc: BaseException) -> WriteError:
    """The one-line error for a write the system refused: the file, the cause, the old file unchanged.

    For writers that can not go through :func:`atomic_writer` (a stream written batch by batch, a
    library's own writer) and must still fail the same way.
    """
    cause = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
    return WriteError(f"{target}: could not be written ({cause}); what was there before is unchanged")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes, read in chunks (a corpus or a model may be larger than memory allows twice)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make a rename in ``directory`` durable, where the platform lets a directory be opened and synced."""
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


def new_file_permissions(fd: int) -> None:
    """mkstemp makes owner-only files; what we write should get the mode ``open()`` would give it."""
    os.fchmod(fd, 0o666 & ~_umask())


@contextmanager
def atomic_writer(path: str | os.PathLike[str], mode: str = "w", temp: Optional[Path] = None) -> Iterator[IO[Any]]:
    """An open temporary file that becomes ``path`` when the block ends without an exception.

    ``mode`` is ``"w"`` (UTF-8 text, ``\\n`` line ends) or ``"wb"``. ``temp`` names the temporary file
    (default: a fresh ``.<name>.<random>.tmp`` beside the target); the checkpoint writer names its own
    so that temporaries a killed process left behind can be recognised and removed.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if temp is None:
            fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            os.close(fd)  # reopened by name below, so that the file object's ``name`` is its path
            tmp = Path(name)
        else:
            tmp = temp
    except OSError as exc:
        raise refused(target, exc) from None
    try:
        kwargs: dict[str, Any] = {"encoding": "utf-8", "newline": "\n"} if mode == "w" else {}
        with open(tmp, mode, **kwargs) as f:
            new_file_permissions(f.fileno())
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            raise refused(target, exc) from None
        raise
    fsync_dir(target.parent)


@contextmanager
def atomic_directory(path: str | os.PathLike[str], refusals: tuple[type[BaseException], ...] = ()) -> Iterator[Path]:
    """A fresh temporary folder that becomes ``path`` when the block ends without an exception.

    For writers that write a folder of files their own way (``save_pretrained``). Every file is
    fsynced before the folder is renamed into place; a folder already at ``path`` is moved aside
    first and removed after, so ``path`` is always either the old folder or the whole new one
    (a kill between the two renames leaves the old one beside, under a hidden name). A failure
    removes the temporary folder; an ``OSError``, or one of ``refusals`` (a library's own I/O
    error), is a :class:`WriteError` naming ``path``.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    except OSError as exc:
        raise refused(target, exc) from None
    try:
        yield tmp
        for f in sorted(tmp.rglob("*")):
            if f.is_file():
                with open(f, "rb") as handle:
                    os.fsync(handle.fileno())
        os.chmod(tmp, 0o777 & ~_umask())
        fsync_dir(tmp)
        old = target.with_name(f".{target.name}.old.{os.getpid()}") if target.exists() else None
        if old is not None:
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, (OSError, *refusals)) and not isinstance(exc, WriteError):
            raise refused(target, exc) from None
        raise
    fsync_dir(target.parent)


def _umask() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """``path`` holds ``text`` (UTF-8) afterwards, or, after a failure or a kill, what it held before."""
    with atomic_writer(path) as f:
        f.write(text)
    return Path(path)


def write_json_atomic(path: str | os.PathLike[str], value: Any, **dumps: Any) -> Path:
    """``value`` as JSON (``dumps`` go to :func:`json.dumps`), written as :func:`write_text_atomic` writes."""
    return write_text_atomic(path, json.dumps(value, **dumps) + ("\n" if dumps.get("indent") is not None else ""))
