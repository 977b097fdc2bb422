"""Which file each stage reads, and the directories a run writes checked before any work.

Paths are relative to the current directory; ``ner_lit:<path>`` names a file shipped in the
package (``ner_lit:sample`` is the sample corpus). With ``data_dir`` set, a bare file name
(``train.tsv``) is looked for in ``data_dir`` first and then in the current directory; a name
with a directory part (``./my.txt``, ``../shared/x.tsv``) in the current directory first and
then in ``data_dir``. Without ``data_dir``, training and validation (and ``test`` when no
``test_file`` is given) read the KLUE-NER files downloaded into the cache; a ``test_file`` or
``predict_file`` is read from the current directory. A missing file is one error naming every
place looked in.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional

from ner_lit.corpus.klue import download_klue_ner
from ner_lit.data.settings import FILE_OPTIONS, CorpusFiles, DataError
from ner_lit.resources import expand

CACHE_DIR_OPTION = "the cache directory (--data.cache_dir, default $NER_LIT_CACHE or ~/.cache/ner_lit)"


class CorpusLocator:
    """Where each stage's file is, by the rules above; KLUE-NER is downloaded (or its cache checked) once."""

    def __init__(self, corpus: CorpusFiles) -> None:
        self.corpus = corpus
        self._klue: Optional[dict[str, Path]] = None

    def klue_files(self) -> dict[str, Path]:
        """The KLUE-NER train and dev files, downloaded into the cache if they are not there."""
        if self._klue is None:  # checking the cache verifies sha256 and parses: once per run is enough
            kwargs = {"base_url": self.corpus.klue_url} if self.corpus.klue_url else {}
            self._klue = download_klue_ner(self.corpus.cache_dir / "klue-ner-v1.1", **kwargs)
        return self._klue

    def candidates(self, stage: str) -> list[Path]:
        """Where a stage's file may be, in the order tried (none when the stage has no file)."""
        name = self.corpus.name(stage)
        if name is None:
            return []
        if self.corpus.reads_klue(stage):
            return [Path(self.klue_files()["train" if stage == "fit" else "dev"])]
        p = Path(expand(name))
        if p.is_absolute() or self.corpus.data_dir is None:
            return [p]
        in_data_dir = Path(expand(self.corpus.data_dir)) / p
        bare = len(Path(name).parts) == 1
        return [in_data_dir, p] if bare else [p, in_data_dir]

    def path(self, stage: str) -> Optional[Path]:
        """The file a stage reads: the first of :meth:`candidates` that exists, else the first one."""
        places = self.candidates(stage)
        if not places:
            return None
        return next((p for p in places if p.is_file()), places[0])

    def existing(self, stage: str) -> Path:
        """The file ``stage`` reads; the error for a missing one names every place looked in."""
        path = self.path(stage)
        option = FILE_OPTIONS[stage]
        if path is None:
            raise DataError(f"no --data.{option} is set, and `{stage}` needs one")
        if not path.is_file():
            tried = " or ".join(str(p) for p in self.candidates(stage))
            raise DataError(f"{self.corpus.name(stage)}: no such file (--data.{option}); looked for {tried} (from {Path.cwd()})")
        return path


def check_writable_dir(path: str | os.PathLike[str], what: str) -> None:
    """Create ``path`` if needed and write (then remove) a probe file in it.

    Run before any work starts, so that a read-only runs root or cache is one clear line
    naming the directory, not an OSError traceback after the corpus was read or the model trained.
    A probe, not ``os.access``: that says yes to root on a read-only mount and knows nothing of quotas.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".ner_lit-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise DataError(f"{path}: {what} is not a writable directory ({reason}); give a writable one") from None


def check_cache_dir(cache_dir: Path) -> None:
    """The cache (downloads, scratch tokenizers, encodings) must be writable: checked before any work."""
    for path in (cache_dir, cache_dir / "encoded"):
        check_writable_dir(path, CACHE_DIR_OPTION)
