"""A tokenizer carried as text inside a checkpoint, and written back to a directory when needed.

The directory is content-addressed (a digest of the files), so loading the same tagger again
reuses it and two processes writing it at once end with one identical copy.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from ner_lit.resources import cache_root


def tokenizer_files(tokenizer) -> dict[str, str]:
    """The files ``save_pretrained`` writes for a tokenizer, as text."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        return {p.name: p.read_text(encoding="utf-8") for p in sorted(Path(tmp).iterdir()) if p.is_file()}


def materialize_tokenizer(files: dict[str, str], cache_dir: str | Path | None = None) -> Path:
    """Write tokenizer files to a content-addressed directory (reused across runs) and return it."""
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(cache_dir) if cache_dir else default_cache_dir() / "tokenizers"
    target = root / digest
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    for name, text in files.items():
        (tmp / name).write_text(text, encoding="utf-8")
    try:
        os.replace(tmp, target)
    except OSError:  # another process won the race: its copy is identical
        for p in tmp.iterdir():
            p.unlink()
        tmp.rmdir()
    return target


def default_cache_dir() -> Path:
    return cache_root()
