"""NERDataModule: files -> sentences -> encoded windows (cached) -> batches.

Training batches are windows grouped by length (little padding, still shuffled);
evaluation batches are whole sentences sorted by length, so that every window of a
sentence is in the same batch and can be merged there. Batching is rank-aware, so under
DDP every sentence is scored exactly once (no padding of the dataset, unlike
``DistributedSampler``); the CLI sets ``use_distributed_sampler=False`` for that reason.
"""
from __future__ import annotations

import math
import os
import random
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Iterator, Literal, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Sampler

from ner_lit import encoded_cache
from ner_lit.alignment import Aligner, Decoding, EncodedSentence, LabelRule, Window, pad_windows
from ner_lit.checkpoint import default_cache_dir, materialize_tokenizer, tokenizer_files
from ner_lit.corpus import (
    Sentence,
    derive_labels,
    download_klue_ner,
    read_corpus,
)
from ner_lit.spec import Provenance, TaggerSpec
from ner_lit.streaming import ChunkPlan, PredictStream, count_sentences, iter_sentences

ENCODING_VERSION = 2  # bump when the alignment's output changes, to invalidate caches
_UNKNOWN = object()


class DataError(ValueError):
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


def _fits(encoded: list[EncodedSentence], sentences: list[Sentence]) -> bool:
    """Whether a cached encoding has one entry per sentence, in order, of the sentence's length."""
    return len(encoded) == len(sentences) and all(
        e.index == i and e.text_length == len(s.text) for i, (e, s) in enumerate(zip(encoded, sentences))
    )


@dataclass
class EvalItem:
    """A sentence with its encoding and the gold ids of its non-whitespace characters."""

    sentence: Sentence
    encoded: EncodedSentence
    gold: torch.Tensor  # label ids of the scored (non-whitespace) characters
    scored: torch.Tensor  # bool mask over the text: which characters are scored


class EvalItems:
    """The Python side of an evaluation batch.

    Deliberately not a dataclass or a sequence, so that Lightning's batch transfer leaves
    it alone instead of walking through thousands of small fields.
    """

    def __init__(self, items: list[EvalItem]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Shuffled batches of similar length, the same on every rank, each rank taking its share.

    Indices are shuffled, cut into mega-batches of ``50 * batch_size``, each sorted by
    length and cut into batches, and the batches shuffled again. Every rank draws the same
    permutation (same seed and epoch) and takes every ``world_size``-th batch; the batch
    count is cut to a multiple of ``world_size`` so all ranks step together (with fewer
    batches than ranks, batches are repeated so that every rank has one).
    """

    def __init__(self, lengths: list[int], batch_size: int, shuffle: bool, group_by_length: bool,
                 seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.lengths = lengths
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.group_by_length = group_by_length
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        order = list(range(len(self.lengths)))
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        if self.shuffle:
            rng.shuffle(order)
        if self.group_by_length:
            mega = self.batch_size * 50
            order = [i for lo in range(0, len(order), mega)
                     for i in sorted(order[lo:lo + mega], key=lambda i: -self.lengths[i])]
        batches = [order[lo:lo + self.batch_size] for lo in range(0, len(order), self.batch_size)]
        if self.shuffle and self.group_by_length:
            rng.shuffle(batches)
        if 0 < len(batches) < self.world_size:
            return (batches * self.world_size)[: self.world_size]
        return batches[: len(batches) - len(batches) % self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._batches()[self.rank::self.world_size]

    def __len__(self) -> int:
        n = math.ceil(len(self.lengths) / self.batch_size)
        usable = n - n % self.world_size if n >= self.world_size else (self.world_size if n else 0)
        return len(range(self.rank, usable, self.world_size))


class SortedSentenceBatchSampler(Sampler[list[int]]):
    """Evaluation batches of whole sentences, longest first, dealt round-robin to the ranks.

    A batch holds at most ``batch_size`` windows (at least one sentence). No sentence is
    repeated to even out the ranks: metric states are summed across ranks, so uneven
    shares are exact.
    """

    def __init__(self, window_counts: list[int], lengths: list[int], batch_size: int, rank: int = 0, world_size: int = 1):
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        batches: list[list[int]] = []
        current: list[int] = []
        windows = 0
        for i in order:
            if current and windows + window_counts[i] > batch_size:
                batches.append(current)
                current, windows = [], 0
            current.append(i)
            windows += window_counts[i]
        if current:
            batches.append(current)
        self.batches = batches[rank::world_size]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches

    def __len__(self) -> int:
        return len(self.batches)


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
            label_rule: How a token takes its label from its characters (``first_char`` or ``first_entity``).
            decoding: Token tags at evaluation and prediction: ``viterbi``, the most probable valid IOB2
                sequence, or ``argmax``, each token's most probable tag on its own.
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
        self.train_windows: list[Window] = []
        self.eval_items: dict[str, list[EvalItem]] = {}
        self._digests: dict[str, Optional[str]] = {}  # file -> sha256 of the bytes read, None if it changed meanwhile

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
            stride=self.stride, label_rule=self.label_rule, decoding=self.decoding,
            provenance=Provenance.now(train_file=None if train is None else str(train), train_sha256=digest),
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

    def _read(self, stage: str) -> list[Sentence]:
        path = self._existing_path(stage)
        before = _stat_signature(path)
        digest = encoded_cache.file_sha256(path)
        if stage == "predict":
            sentences = read_corpus(path, "auto", labelled=False, max_chars=self.max_chars)
        else:  # tags outside a known label set are refused while reading, with their line
            sentences = read_corpus(path, self.format, labels=self.labels, max_chars=self.max_chars)
        self._digests[str(path)] = digest if _stat_signature(path) == before else None
        return sentences

    def _setup_tokenizer(self, train: Optional[list[Sentence]]) -> None:
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
            from ner_lit.scratch import cached_tokenizer

            source = cached_tokenizer(
                [s.text for s in train], kind=self.scratch_tokenizer, vocab_size=self.scratch_vocab_size,
                cache_dir=self.cache_dir / "tokenizers",
            )
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(source))
        except (OSError, ValueError) as exc:
            raise DataError(
                f"tokenizer {source!r}: neither a local directory with tokenizer files nor reachable on the "
                f"Hugging Face hub ({type(exc).__name__}); pass a local directory with --data.tokenizer"
            ) from None
        self._tokenizer_files = self._tokenizer_files or tokenizer_files(self.tokenizer)

    def setup(self, stage: str) -> None:
        self.check_cache_dir()  # every rank: prepare_data runs on one rank per node only
        train = self._read("fit") if stage == "fit" else None
        if self.labels is None:
            if train is None:
                raise DataError(f"`{stage}` needs the label list: pass --ckpt_path (labels come from it) or --data.labels")
            self.labels = derive_labels(train)
        self._setup_tokenizer(train)
        if self.aligner is None:
            self.aligner = Aligner(self.tokenizer, self.labels, self.max_length, self.stride, self.label_rule, self.decoding)
        if stage == "fit":
            self.train_windows = [w for e in self._encode(train, self.path("fit")) for w in e.windows]
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

    def _eval_items(self, stage: str, with_labels: bool = True) -> list[EvalItem]:
        sentences = self._read(stage)
        encoded = self._encode(sentences, self.path(stage), with_labels)
        label2id = self.aligner.label2id
        items = []
        for s, e in zip(sentences, encoded):
            scored = torch.tensor([not c.isspace() for c in s.text], dtype=torch.bool)
            gold = torch.tensor([label2id.get(t, 0) for t in s.tags], dtype=torch.long)
            items.append(EvalItem(s, e, gold[scored] if len(s.text) else gold, scored))
        return items

    def _encode(self, sentences: list[Sentence], path: Path, with_labels: bool = True) -> list[EncodedSentence]:
        """Encode, or load the encoding cached for this file content, tokenizer and settings.

        The key is the sha256 of the bytes ``_read`` parsed (not the name or the time) plus every
        setting that shapes the encoding. A file that changed while it was read is encoded
        but neither looked up nor cached.
        """
        digest = self._digests.get(str(path), _UNKNOWN)
        if digest is _UNKNOWN:
            digest = encoded_cache.file_sha256(path)
        if digest is None:
            return self.aligner.encode(sentences, with_labels=with_labels)
        settings = {"tokenizer_files": self._tokenizer_files, "labels": self.labels, "max_length": self.max_length,
                    "stride": self.stride, "label_rule": self.label_rule, "with_labels": with_labels,
                    "format": self.format, "encoding_version": ENCODING_VERSION}
        cache = self.cache_dir / "encoded" / f"{encoded_cache.cache_key(digest, settings)}{encoded_cache.SUFFIX}"
        encoded = encoded_cache.load(cache)
        if encoded is not None and _fits(encoded, sentences):
            return encoded
        encoded = self.aligner.encode(sentences, with_labels=with_labels)
        try:
            encoded_cache.save(cache, encoded)
        except OSError as exc:  # a full disk costs the cache, not the run (the directory was checked writable)
            rank_zero_warn(f"{cache}: the encoding was not cached ({exc.strerror or exc})")
        return encoded

    # ------------------------------------------------------------------ loaders
    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank()
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        sampler = LengthGroupedBatchSampler(
            [len(w.input_ids) for w in self.train_windows], self.batch_size, self.shuffle, self.group_by_length, seed, rank, world
        )
        return DataLoader(self.train_windows, batch_sampler=sampler, collate_fn=self.collate_train, num_workers=self.num_workers)

    def _eval_loader(self, stage: str) -> DataLoader:
        rank, world = self._rank()
        items = self.eval_items[stage]
        sampler = SortedSentenceBatchSampler(
            [len(it.encoded.windows) for it in items],
            [sum(len(w.input_ids) for w in it.encoded.windows) for it in items],
            self.eval_batch_size, rank, world,
        )
        return DataLoader(items, batch_sampler=sampler, collate_fn=self.collate_eval, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("validate")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        """Batches streamed from the file (:mod:`ner_lit.streaming`): nothing of it is held but a few chunks."""
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
