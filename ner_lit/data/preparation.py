"""From a corpus file's bytes to what training reads, each result cached under the file's content.

Every cache key starts from the sha256 of the bytes read (not the file's name or time) and adds
the settings that shape the result, so a touched or renamed file is not read again and an
edited one is never served stale:

- the training file's facts (its label set), in ``<cache>/corpus-facts``: a cached run reads
  nothing of the file but its hash;
- the scratch tokenizer trained on its texts, in ``<cache>/tokenizers``, found again through a
  pointer beside the facts;
- every file's encoded windows, memory-mapped from ``<cache>/encoded`` (:mod:`ner_lit.data.cache`).

A file is hashed once per ``setup`` (:meth:`CorpusPreparation.start_setup` forgets the hashes,
since a file may change between two setups); the digest of what was encoded is kept for the
tagger spec's provenance.
"""
from __future__ import annotations

import atexit
import json
import shutil
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from lightning.pytorch.utilities import rank_zero_warn

from ner_lit.alignment.aligner import Aligner
from ner_lit.checkpoint.tokenizer import materialize_tokenizer
from ner_lit.corpus.formats import iter_corpus, resolve_format
from ner_lit.corpus.records import Sentence, derive_labels
from ner_lit.data import cache as encoded_cache
from ner_lit.data.datasets import encode_into
from ner_lit.data.scratch import cached_tokenizer
from ner_lit.data.settings import CorpusFiles, DataError, TokenizerSettings, WindowSettings
from ner_lit.files import write_json_atomic

ENCODING_VERSION = 2  # bump when the alignment's output changes, to invalidate caches


def _stat_signature(path: Path) -> tuple[int, int, int]:
    """What changes when a file is rewritten: size, modification time, inode."""
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ino


class CorpusPreparation:
    """Digests, labels, tokenizer and encodings of the corpus files, each from the cache when it has them."""

    def __init__(self, corpus: CorpusFiles, tokenizing: TokenizerSettings) -> None:
        self.corpus = corpus
        self.tokenizing = tokenizing
        self._encoded: dict[str, Optional[str]] = {}  # file -> sha256 of the bytes encoded, None if it changed meanwhile
        self._hashed: dict[str, str] = {}  # file -> sha256, for the setup call under way

    @property
    def cache_dir(self) -> Path:
        return self.corpus.cache_dir

    def start_setup(self) -> None:
        """Forget the hashes of the last setup: the files may have changed since."""
        self._hashed = {}

    def digest(self, path: Path) -> str:
        """The sha256 of the file's bytes, hashed once per setup (the cache keys start from it)."""
        digest = self._hashed.get(str(path))
        if digest is None:
            digest = self._hashed[str(path)] = encoded_cache.file_sha256(path)
        return digest

    def encoded_digest(self, path: Path) -> Optional[str]:
        """The sha256 of the bytes :meth:`encode` read from ``path``; None if it changed while read, or was not encoded."""
        return self._encoded.get(str(path))

    def sentences(self, path: Path, labels: Optional[Sequence[str]]) -> Iterator[Sentence]:
        """The file's sentences, read lazily (tags outside ``labels`` are refused while reading, with their line)."""
        return iter_corpus(path, self.corpus.format, labels=None if labels is None else list(labels),
                           max_chars=self.corpus.max_chars)

    # ------------------------------------------------------------------ the training file's facts
    def labels(self, train: Path) -> list[str]:
        """The label set of the training file (``O`` first, then ``B-``/``I-`` per type)."""
        return list(self._facts(train)[0]["labels"])

    def _facts(self, path: Path, want_texts: bool = False) -> tuple[dict[str, Any], Optional[list[str]]]:
        """What one pass over the training file tells before encoding (its label set), cached by content.

        ``want_texts``: also return the texts (a scratch tokenizer is trained on them), which forces the pass.
        """
        settings = {"facts": 1, "format": resolve_format(path, self.corpus.format), "max_chars": self.corpus.max_chars}
        place = self.cache_dir / "corpus-facts" / f"{encoded_cache.cache_key(self.digest(path), settings)}.json"
        if not want_texts:
            try:
                facts = json.loads(place.read_text(encoding="utf-8"))
                if isinstance(facts, dict) and isinstance(facts.get("labels"), list):
                    return facts, None
            except (OSError, ValueError):
                pass
        texts: list[str] = []

        def read():
            for s in self.sentences(path, None):
                if want_texts:
                    texts.append(s.text)
                yield s

        facts = {"labels": derive_labels(read())}
        try:
            write_json_atomic(place, facts)
        except OSError as exc:
            rank_zero_warn(f"{place}: the corpus facts were not cached ({exc.strerror or exc})")
        return facts, texts if want_texts else None

    # ------------------------------------------------------------------ the tokenizer
    def tokenizer(self, train: Optional[Path], files: Optional[dict[str, str]]):
        """The tokenizer: a checkpoint's ``files`` when given, else ``--data.tokenizer``, else the
        scratch tokenizer of the training file ``train``."""
        from transformers import AutoTokenizer

        if files is not None:
            source: Any = materialize_tokenizer(files, self.cache_dir / "tokenizers")
        elif self.tokenizing.tokenizer is not None:
            source = self.tokenizing.tokenizer
        else:
            if train is None:
                raise DataError("a scratch tokenizer is trained on the training file: run `fit`, or give --data.tokenizer")
            source = self.scratch_tokenizer_dir(train)
        try:
            return AutoTokenizer.from_pretrained(str(source))
        except (OSError, ValueError) as exc:
            raise DataError(
                f"tokenizer {source!r}: neither a local directory with tokenizer files nor reachable on the "
                f"Hugging Face hub ({type(exc).__name__}); pass a local directory with --data.tokenizer"
            ) from None

    def scratch_tokenizer_dir(self, train: Path) -> Path:
        """The scratch tokenizer of the training file: found by its content key, else trained on its texts."""

        kind, vocab_size = self.tokenizing.scratch_tokenizer, self.tokenizing.scratch_vocab_size
        key = encoded_cache.cache_key(self.digest(train), {"scratch_tokenizer": kind, "vocab_size": vocab_size,
                                                          "format": resolve_format(train, self.corpus.format),
                                                          "max_chars": self.corpus.max_chars})
        pointer = self.cache_dir / "corpus-facts" / f"{key}.tokenizer.json"
        try:
            name = json.loads(pointer.read_text(encoding="utf-8"))["directory"]
            found = self.cache_dir / "tokenizers" / str(name)
            if "/" not in str(name) and (found / "tokenizer.json").is_file():
                return found
        except (OSError, ValueError, KeyError, TypeError):
            pass
        _, texts = self._facts(train, want_texts=True)
        source = cached_tokenizer(texts or [], kind=kind, vocab_size=vocab_size, cache_dir=self.cache_dir / "tokenizers")
        try:
            write_json_atomic(pointer, {"directory": source.name})
        except OSError:
            pass
        return source

    # ------------------------------------------------------------------ the encoded windows
    def encode(self, path: Path, aligner: Aligner, windows: WindowSettings, tokenizer_files: dict[str, str],
               with_labels: bool = True) -> encoded_cache.Entry:
        """The encoded file, memory-mapped from the cache: loaded when an entry for this content exists,
        else encoded chunk by chunk straight into a new entry.

        The key is the file's digest plus every setting that shapes the encoding. A file that
        changed while it was encoded is used from a private entry that is neither published
        under the key nor kept, and records no digest.
        """
        digest = self.digest(path)
        labels = list(windows.labels or ())
        settings = {"tokenizer_files": tokenizer_files, "labels": labels, "max_length": windows.max_length,
                    "stride": windows.stride, "label_rule": windows.label_rule, "with_labels": with_labels,
                    "format": self.corpus.format, "max_chars": self.corpus.max_chars, "encoding_version": ENCODING_VERSION}
        final = self.cache_dir / "encoded" / encoded_cache.cache_key(digest, settings)
        entry = encoded_cache.load(final)
        if entry is not None:
            self._encoded[str(path)] = digest
            return entry
        before = _stat_signature(path)
        try:
            with encoded_cache.EntryWriter(final, with_labels) as writer:
                encode_into(writer, aligner, self.sentences(path, labels), with_labels)
                unchanged = _stat_signature(path) == before and encoded_cache.file_sha256(path) == digest
                self._encoded[str(path)] = digest if unchanged else None
                if unchanged:
                    place = writer.publish({"file": str(path), "sha256": digest})
                else:
                    place = writer.finish({"file": str(path)})
                    atexit.register(shutil.rmtree, place, True)
        except OSError as exc:  # a full disk costs the cache, not the run (the directory was checked writable)
            rank_zero_warn(f"{final}: the encoding was not cached ({exc.strerror or exc}); it is held in memory")
            writer = encoded_cache.EntryWriter(None, with_labels)
            encode_into(writer, aligner, self.sentences(path, labels), with_labels)
            return writer.in_memory()
        entry = encoded_cache.load(place)
        if entry is None:
            raise DataError(f"{place}: the encoding just written does not load back (is the cache directory being changed?)")
        return entry
