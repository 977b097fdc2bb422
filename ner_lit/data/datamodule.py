"""NERDataModule: files -> sentences -> encoded windows (cached) -> batches.

Training batches are windows grouped by length (little padding, still shuffled);
evaluation batches are whole sentences sorted by length, so that every window of a
sentence is in the same batch and can be merged there. Batching is rank-aware, so under
DDP every sentence is scored exactly once (no padding of the dataset, unlike
``DistributedSampler``); the CLI sets ``use_distributed_sampler=False`` for that reason.
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from functools import partial
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader

from ner_lit.alignment.aligner import Aligner
from ner_lit.alignment.collate import pad_windows
from ner_lit.alignment.windows import DEFAULT_CHAR_SLOTS, Decoding, LabelRule, Tagging, Window
from ner_lit.checkpoint.spec import Provenance, TaggerSpec
from ner_lit.checkpoint.tokenizer import default_cache_dir, materialize_tokenizer, tokenizer_files
from ner_lit.corpus.formats import iter_corpus, resolve_format
from ner_lit.corpus.klue import download_klue_ner
from ner_lit.corpus.records import derive_labels
from ner_lit.data import cache as encoded_cache
from ner_lit.data.datasets import EvalItem, EvalSentences, TrainWindows, encode_into
from ner_lit.data.samplers import EvalItems, LengthGroupedBatchSampler, SortedSentenceBatchSampler
from ner_lit.data.stream import ChunkPlan, PredictStream, count_sentences, iter_sentences
from ner_lit.errors import UserError
from ner_lit.files import write_json_atomic

ENCODING_VERSION = 2  # bump when the alignment's output changes, to invalidate caches

class DataError(UserError):
    """A data setting that can not work (missing file, unknown tokenizer, ...)."""


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



def _stat_signature(path: Path) -> tuple[int, int, int]:
    """What changes when a file is rewritten: size, modification time, inode."""
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ino


class NERDataModule(pl.LightningDataModule):
    """KLUE-NER or your own corpus, tokenized for any Hugging Face encoder."""

    def __init__(
        self,
        data_dir: Optional[str] = None,
        train_file: Optional[str] = "train.tsv",
        val_file: Optional[str] = "dev.tsv",
        test_file: Optional[str] = None,
        predict_file: Optional[str] = None,
        format: Literal["auto", "klue", "jsonl", "text"] = "auto",
        tokenizer: Optional[str] = None,
        scratch_tokenizer: Literal["wordpiece", "syllable"] = "wordpiece",
        scratch_vocab_size: int = 8000,
        labels: Optional[list[str]] = None,
        max_length: int = 128,
        stride: int = 32,
        label_rule: LabelRule = "first_char",
        decoding: Decoding = "viterbi",
        tagging: Tagging = "char",
        char_slots: int = DEFAULT_CHAR_SLOTS,
        batch_size: int = 32,
        eval_batch_size: int = 64,
        predict_chunk_size: int = 4096,
        num_workers: int = 0,
        group_by_length: bool = True,
        shuffle: bool = True,
        cache_dir: Optional[str] = None,
        klue_url: Optional[str] = None,
        max_chars: Optional[int] = 100_000,
    ) -> None:
        """
        Args:
            data_dir: Directory of the corpus files, relative to the current directory (``ner_lit:sample``: the
                sample corpus shipped in the package). None downloads the official KLUE-NER v1.1
                train and dev files into ``cache_dir`` (dev is also the test set: KLUE's test set is not public).
            train_file: Training file. Like every file option: a bare name is looked for in ``data_dir``, then in
                the current directory; a path with a directory part in the current directory, then in ``data_dir``.
            val_file: Validation file (scored every epoch; ModelCheckpoint keeps the best val_F1c).
            test_file: Test file; None uses ``val_file``.
            predict_file: File for ``predict``: plain text (one sentence a line), KLUE TSV or JSONL.
            format: File format; ``auto`` goes by the extension (.tsv, .jsonl/.json, .txt).
            tokenizer: Hugging Face hub id or local directory of a fast tokenizer. None trains one from
                scratch on the training file (``scratch_tokenizer``), deterministically, and caches it.
            scratch_tokenizer: ``wordpiece`` (the reference recipe) or ``syllable`` (one token per character).
            scratch_vocab_size: Vocabulary size of a scratch tokenizer.
            labels: Explicit label list (``O`` plus ``B-``/``I-`` per type). None derives it from the training file.
            max_length: Tokens per window, special tokens included. Longer sentences become several windows.
            stride: Tokens of overlap between consecutive windows of one sentence.
            label_rule: ``token`` tagging only: how a token takes its label from its characters (``first_char``
                or ``first_entity``).
            decoding: Tags at evaluation and prediction: ``viterbi``, the most probable valid IOB2
                sequence, or ``argmax``, each character's (token's) most probable tag on its own.
            tagging: ``char``: the model scores every character a token owns (a row of labels per
                character slot), so entities start and end at any character (``김철수`` in ``김철수는``);
                ``token``: one label per token, whose characters all follow it (a particle fused to a
                name joins the entity; what taggers before format 3 did).
            char_slots: ``char`` tagging: label rows per token; a token's characters past the last row
                continue its tag.
            batch_size: Training windows per batch (per device).
            eval_batch_size: Evaluation windows per batch (per device); whole sentences only.
            predict_chunk_size: ``predict`` reads, encodes and writes this many sentences at a time (memory
                stays flat whatever the input's size); under DDP the chunks are dealt to the ranks.
            num_workers: DataLoader worker processes.
            group_by_length: Group training windows of similar length (less padding).
            shuffle: Shuffle the training batches every epoch.
            cache_dir: Downloads, scratch tokenizers and encoded windows (default ``$NER_LIT_CACHE`` or ``~/.cache/ner_lit``).
            klue_url: Base URL of the KLUE-NER files (default: the KLUE-benchmark repository on GitHub).
            max_chars: The longest sentence (or predict line) accepted, in characters; a longer one is an error
                naming its file and line. The default is far above any real sentence and still small enough
                that a file read with the wrong format, or a text without line breaks, stops at once instead of
                becoming one huge batch. None: no limit.
        """
        super().__init__()
        self.save_hyperparameters()
        self.data_dir = data_dir
        self.files = {"fit": train_file, "validate": val_file, "test": test_file or val_file, "predict": predict_file}
        self.format = format
        self.tokenizer_name = tokenizer
        self.scratch_tokenizer = scratch_tokenizer
        self.scratch_vocab_size = scratch_vocab_size
        self.labels: Optional[list[str]] = list(labels) if labels else None
        self.max_length = max_length
        self.stride = stride
        self.label_rule = label_rule
        self.decoding = decoding
        if tagging not in ("char", "token"):
            raise DataError(f"--data.tagging {tagging!r}: expected char or token")
        if char_slots < 1:
            raise DataError(f"--data.char_slots {char_slots}: expected at least 1 label row per token")
        self.tagging = tagging
        self.char_slots = char_slots
        for option, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if value < 1:
                raise DataError(f"--data.{option} {value}: expected at least 1 window per batch")
        if num_workers < 0:
            raise DataError(f"--data.num_workers {num_workers}: expected 0 (load in the main process) or more")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        if predict_chunk_size < 1:
            raise DataError(f"--data.predict_chunk_size {predict_chunk_size}: expected at least 1")
        self.predict_chunk_size = predict_chunk_size
        self.predict_count = 0  # sentences in the predict file, counted by setup("predict")
        self.num_workers = num_workers
        self.group_by_length = group_by_length
        self.shuffle = shuffle
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.klue_url = klue_url
        if max_chars is not None and max_chars < 1:
            raise DataError(f"--data.max_chars {max_chars}, expected a positive number of characters (or null for no limit)")
        self.max_chars = max_chars
        self._klue: Optional[dict[str, Path]] = None
        self.tokenizer = None
        self.aligner: Optional[Aligner] = None
        self._tokenizer_files: Optional[dict[str, str]] = None
        self._spec: Optional[TaggerSpec] = None  # given by use_spec (a checkpoint's), else made by `spec`
        self.train_windows: Sequence[Window] = []  # TrainWindows over the memory-mapped entry, after setup("fit")
        self.eval_items: dict[str, Sequence[EvalItem]] = {}  # EvalSentences per stage, likewise
        self._digests: dict[str, Optional[str]] = {}  # file -> sha256 of the bytes read, None if it changed meanwhile
        self._hashed: dict[str, str] = {}  # file -> sha256, for the setup call under way

    # ------------------------------------------------------------------ wiring
    def use_spec(self, spec: TaggerSpec) -> None:
        """Encode as a trained tagger did: its labels, tokenizer and window settings (test/validate/predict/resume).

        The one way a tagger's settings reach the data module; they win over the init arguments.
        """
        self._spec = spec
        self.labels = list(spec.labels)
        self._tokenizer_files = dict(spec.tokenizer_files)
        self.max_length = spec.max_length
        self.stride = spec.stride
        self.label_rule = spec.label_rule
        self.decoding = spec.decoding
        self.tagging = spec.tagging
        self.char_slots = spec.char_slots

    @property
    def spec(self) -> TaggerSpec:
        """What a tagger trained on this data must record (no model config: the model adds it).

        The spec given to :meth:`use_spec` if any; else made from this module's settings once
        ``setup`` has the labels and the tokenizer, with the training file and its digest as provenance.
        """
        if self._spec is not None:
            return self._spec
        if self.labels is None or self._tokenizer_files is None:
            raise DataError("the data module has no labels or tokenizer yet: call setup() first")
        train = self.path("fit") if self.files.get("fit") else None
        digest = self._digests.get(str(train)) if train is not None else None
        return TaggerSpec(
            labels=tuple(self.labels), tokenizer_files=dict(self._tokenizer_files), max_length=self.max_length,
            stride=self.stride, label_rule=self.label_rule, decoding=self.decoding, tagging=self.tagging,
            char_slots=self.char_slots, provenance=Provenance.now(train_file=None if train is None else str(train), train_sha256=digest),
        )

    def path(self, stage: str) -> Optional[Path]:
        """The file a stage reads: the first of :meth:`candidates` that exists, else the first one."""
        places = self.candidates(stage)
        if not places:
            return None
        return next((p for p in places if p.is_file()), places[0])

    def candidates(self, stage: str) -> list[Path]:
        """Where a stage's file may be, in the order tried.

        Paths are relative to the current directory; ``ner_lit:<path>`` names a file shipped in
        the package (``ner_lit:sample`` is the sample corpus). With ``data_dir`` set, a bare file
        name (``train.tsv``) is looked for in ``data_dir`` first and then in the current
        directory; a name with a directory part (``./my.txt``, ``../shared/x.tsv``) in the current
        directory first and then in ``data_dir``. Without ``data_dir``, training and validation
        (and ``test`` when no ``test_file`` is given) use the downloaded KLUE-NER files; a
        ``test_file`` or ``predict_file`` is read from the current directory.
        """
        name = self.files[stage]
        if name is None:
            return []
        if self.data_dir is None and (stage in ("fit", "validate") or (stage == "test" and not self.hparams.get("test_file"))):
            return [Path(self._klue_files()["train" if stage == "fit" else "dev"])]
        from ner_lit.resources import expand

        p = Path(expand(name))
        if p.is_absolute() or self.data_dir is None:
            return [p]
        in_data_dir = Path(expand(self.data_dir)) / p
        bare = len(Path(name).parts) == 1
        return [in_data_dir, p] if bare else [p, in_data_dir]

    def _klue_files(self) -> dict[str, Path]:
        if self._klue is None:  # checking the cache verifies sha256 and parses: once per run is enough
            kwargs = {"base_url": self.klue_url} if self.klue_url else {}
            self._klue = download_klue_ner(self.cache_dir / "klue-ner-v1.1", **kwargs)
        return self._klue

    def check_cache_dir(self) -> None:
        """The cache (downloads, scratch tokenizers, encodings) must be writable: checked before any work."""
        for path in (self.cache_dir, self.cache_dir / "encoded"):
            check_writable_dir(path, "the cache directory (--data.cache_dir, default $NER_LIT_CACHE or ~/.cache/ner_lit)")

    def prepare_data(self) -> None:
        self.check_cache_dir()
        if self.data_dir is None:
            self._klue_files()

    def _existing_path(self, stage: str) -> Path:
        """The file ``stage`` reads; the error for a missing one names every place looked in."""
        path = self.path(stage)
        option = {"fit": "train_file", "validate": "val_file", "test": "test_file", "predict": "predict_file"}[stage]
        if path is None:
            raise DataError(f"no --data.{option} is set, and `{stage}` needs one")
        if not path.is_file():
            tried = " or ".join(str(p) for p in self.candidates(stage))
            raise DataError(f"{self.files[stage]}: no such file (--data.{option}); looked for {tried} (from {Path.cwd()})")
        return path

    def _format(self, path: Path) -> str:
        return resolve_format(path, self.format)

    def _sentences(self, path: Path, labels: Optional[list[str]]):
        """The file's sentences, read lazily (tags outside ``labels`` are refused while reading, with their line)."""
        return iter_corpus(path, self.format, labels=labels, max_chars=self.max_chars)

    def _facts(self, path: Path, digest: str, want_texts: bool = False) -> tuple[dict[str, Any], Optional[list[str]]]:
        """What one pass over the training file tells before encoding (its label set), cached by content.

        Kept in ``<cache>/corpus-facts`` by the same content key as the encodings, so a cached
        run reads nothing but the file's hash. ``want_texts``: also return the texts (a scratch
        tokenizer is trained on them), which forces the pass.
        """
        key = encoded_cache.cache_key(digest, {"facts": 1, "format": self._format(path), "max_chars": self.max_chars})
        place = self.cache_dir / "corpus-facts" / f"{key}.json"
        if not want_texts:
            try:
                facts = json.loads(place.read_text(encoding="utf-8"))
                if isinstance(facts, dict) and isinstance(facts.get("labels"), list):
                    return facts, None
            except (OSError, ValueError):
                pass
        texts: list[str] = []

        def read():
            for s in self._sentences(path, None):
                if want_texts:
                    texts.append(s.text)
                yield s

        facts = {"labels": derive_labels(read())}
        try:
            write_json_atomic(place, facts)
        except OSError as exc:
            rank_zero_warn(f"{place}: the corpus facts were not cached ({exc.strerror or exc})")
        return facts, texts if want_texts else None

    def _scratch_tokenizer_dir(self, path: Path, digest: str) -> Path:
        """The scratch tokenizer of the training file: found by its content key, else trained on its texts."""
        from ner_lit.data.scratch import cached_tokenizer

        key = encoded_cache.cache_key(digest, {"scratch_tokenizer": self.scratch_tokenizer, "vocab_size": self.scratch_vocab_size,
                                               "format": self._format(path), "max_chars": self.max_chars})
        pointer = self.cache_dir / "corpus-facts" / f"{key}.tokenizer.json"
        try:
            name = json.loads(pointer.read_text(encoding="utf-8"))["directory"]
            found = self.cache_dir / "tokenizers" / str(name)
            if "/" not in str(name) and (found / "tokenizer.json").is_file():
                return found
        except (OSError, ValueError, KeyError, TypeError):
            pass
        _, texts = self._facts(path, digest, want_texts=True)
        source = cached_tokenizer(texts or [], kind=self.scratch_tokenizer, vocab_size=self.scratch_vocab_size,
                                  cache_dir=self.cache_dir / "tokenizers")
        try:
            write_json_atomic(pointer, {"directory": source.name})
        except OSError:
            pass
        return source

    def _setup_tokenizer(self, train: Optional[Path]) -> None:
        from transformers import AutoTokenizer

        if self.tokenizer is not None:
            return
        if self._tokenizer_files is not None:
            source = materialize_tokenizer(self._tokenizer_files, self.cache_dir / "tokenizers")
        elif self.tokenizer_name is not None:
            source = self.tokenizer_name
        else:
            if train is None:
                raise DataError("a scratch tokenizer is trained on the training file: run `fit`, or give --data.tokenizer")
            source = self._scratch_tokenizer_dir(train, self._digest(train))
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(source))
        except (OSError, ValueError) as exc:
            raise DataError(
                f"tokenizer {source!r}: neither a local directory with tokenizer files nor reachable on the "
                f"Hugging Face hub ({type(exc).__name__}); pass a local directory with --data.tokenizer"
            ) from None
        self._tokenizer_files = self._tokenizer_files or tokenizer_files(self.tokenizer)

    def _digest(self, path: Path) -> str:
        """The sha256 of the file's bytes, hashed once per setup (the cache key starts from it)."""
        digest = self._hashed.get(str(path))
        if digest is None:
            digest = self._hashed[str(path)] = encoded_cache.file_sha256(path)
        return digest

    def setup(self, stage: str) -> None:
        self.check_cache_dir()  # every rank: prepare_data runs on one rank per node only
        self._hashed = {}
        train = self._existing_path("fit") if stage == "fit" else None
        if self.labels is None:
            if train is None:
                raise DataError(f"`{stage}` needs the label list: pass --ckpt_path (labels come from it) or --data.labels")
            self.labels = list(self._facts(train, self._digest(train))[0]["labels"])
        self._setup_tokenizer(train)
        if self.aligner is None:
            self.aligner = Aligner(self.tokenizer, self.labels, self.max_length, self.stride, self.label_rule, self.decoding,
                                   self.tagging, self.char_slots)
        if stage == "fit":
            self.train_windows = TrainWindows(self._encode(train), self.aligner.char_slots)
            self.eval_items["validate"] = self._eval_items("validate")
        elif stage in ("validate", "test"):
            self.eval_items[stage] = self._eval_items(stage)
        elif stage == "predict":
            self.predict_count = count_sentences(self._predict_path(), self.max_chars)

    def _predict_path(self) -> Path:
        return self._existing_path("predict")

    def predict_plan(self) -> ChunkPlan:
        """How the predict file's chunks are shared between the ranks and DataLoader workers."""
        _, world = self._rank()
        return ChunkPlan(self.predict_count, self.predict_chunk_size, world, max(1, self.num_workers))

    def _eval_items(self, stage: str, with_labels: bool = True) -> EvalSentences:
        return EvalSentences(self._encode(self._existing_path(stage), with_labels), self.labels, self.aligner.char_slots)

    def _encode(self, path: Path, with_labels: bool = True) -> encoded_cache.Entry:
        """The encoded file, memory-mapped from the cache: loaded when an entry for this content exists,
        else encoded chunk by chunk straight into a new entry.

        The key is the sha256 of the file's bytes (not its name or time) plus every setting that
        shapes the encoding. A file that changed while it was encoded is used from a private
        entry that is neither published under the key nor kept, and records no digest.
        """
        digest = self._digest(path)
        settings = {"tokenizer_files": self._tokenizer_files, "labels": self.labels, "max_length": self.max_length,
                    "stride": self.stride, "label_rule": self.label_rule, "with_labels": with_labels,
                    "format": self.format, "max_chars": self.max_chars, "encoding_version": ENCODING_VERSION}
        final = self.cache_dir / "encoded" / encoded_cache.cache_key(digest, settings)
        entry = encoded_cache.load(final)
        if entry is not None:
            self._digests[str(path)] = digest
            return entry
        before = _stat_signature(path)
        try:
            with encoded_cache.EntryWriter(final, with_labels) as writer:
                encode_into(writer, self.aligner, self._sentences(path, self.labels), with_labels)
                unchanged = _stat_signature(path) == before and encoded_cache.file_sha256(path) == digest
                self._digests[str(path)] = digest if unchanged else None
                if unchanged:
                    place = writer.publish({"file": str(path), "sha256": digest})
                else:
                    place = writer.finish({"file": str(path)})
                    atexit.register(shutil.rmtree, place, True)
        except OSError as exc:  # a full disk costs the cache, not the run (the directory was checked writable)
            rank_zero_warn(f"{final}: the encoding was not cached ({exc.strerror or exc}); it is held in memory")
            writer = encoded_cache.EntryWriter(None, with_labels)
            encode_into(writer, self.aligner, self._sentences(path, self.labels), with_labels)
            return writer.in_memory()
        entry = encoded_cache.load(place)
        if entry is None:
            raise DataError(f"{place}: the encoding just written does not load back (is the cache directory being changed?)")
        return entry

    # ------------------------------------------------------------------ loaders
    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank()
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        windows = self.train_windows
        lengths = windows.lengths() if isinstance(windows, TrainWindows) else [len(w.input_ids) for w in windows]
        sampler = LengthGroupedBatchSampler(lengths, self.batch_size, self.shuffle, self.group_by_length, seed, rank, world)
        return DataLoader(self.train_windows, batch_sampler=sampler, collate_fn=self.collate_train, num_workers=self.num_workers)

    def _eval_loader(self, stage: str) -> DataLoader:
        rank, world = self._rank()
        items = self.eval_items[stage]
        if isinstance(items, EvalSentences):
            counts, lengths = items.window_counts(), items.id_counts()
        else:
            counts = [len(it.encoded.windows) for it in items]
            lengths = [sum(len(w.input_ids) for w in it.encoded.windows) for it in items]
        sampler = SortedSentenceBatchSampler(counts, lengths, self.eval_batch_size, rank, world)
        return DataLoader(items, batch_sampler=sampler, collate_fn=self.collate_eval, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("validate")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        """Batches streamed from the file (:mod:`ner_lit.data.stream`): nothing of it is held but a few chunks."""
        rank, _ = self._rank()
        path = self._predict_path()
        stream = PredictStream(partial(iter_sentences, path, max_chars=self.max_chars), self.aligner, self.predict_plan(), rank,
                               self.eval_batch_size, self._pad_id())
        return DataLoader(stream, batch_size=None, collate_fn=stream.collate_fn, num_workers=self.num_workers)

    def _pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def _pad(self, windows: list[Window]) -> dict[str, torch.Tensor]:
        return pad_windows(windows, self._pad_id())

    def collate_train(self, windows: list[Window]) -> dict[str, torch.Tensor]:
        return self._pad(windows)

    def collate_eval(self, items: list[EvalItem]) -> dict[str, Any]:
        batch: dict[str, Any] = self._pad([w for it in items for w in it.encoded.windows])
        batch["items"] = EvalItems(items)
        return batch
