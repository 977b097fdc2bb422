"""NERDataModule: files -> sentences -> encoded windows (cached) -> batches.

The Lightning seam of :mod:`ner_lit.data`: it packs its options into typed groups
(:mod:`~ner_lit.data.settings`), asks :mod:`~ner_lit.data.files` which file a stage reads and
:mod:`~ner_lit.data.preparation` for the labels, the tokenizer and the encoded windows, and
turns those into DataLoaders. What a model needs of it passes as one record,
:class:`~ner_lit.data.tagger_data.TaggerData`.

Training batches are windows grouped by length (little padding, still shuffled);
evaluation batches are whole sentences sorted by length, so that every window of a
sentence is in the same batch and can be merged there. Batching is rank-aware, so under
DDP every sentence is scored exactly once (no padding of the dataset, unlike
``DistributedSampler``); the CLI sets ``use_distributed_sampler=False`` for that reason.
"""
from __future__ import annotations

import os
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from ner_lit.alignment.aligner import Aligner
from ner_lit.alignment.collate import pad_windows
from ner_lit.alignment.windows import DEFAULT_CHAR_SLOTS, Decoding, LabelRule, Tagging, Window
from ner_lit.checkpoint.spec import Provenance, TaggerSpec
from ner_lit.checkpoint.tokenizer import default_cache_dir, tokenizer_files
from ner_lit.data import cache as encoded_cache
from ner_lit.data.datasets import EvalItem, EvalSentences, TrainWindows
from ner_lit.data.files import CorpusLocator, check_cache_dir
from ner_lit.data.preparation import CorpusPreparation
from ner_lit.data.resumable import ResumableLoader
from ner_lit.data.samplers import EvalItems, LengthGroupedBatchSampler, SortedSentenceBatchSampler
from ner_lit.data.settings import CorpusFiles, DataError, LoaderSettings, TokenizerSettings, WindowSettings
from ner_lit.data.stream import ChunkPlan, PredictStream, count_sentences, iter_sentences
from ner_lit.data.tagger_data import TaggerData

__all__ = ["DataError", "NERDataModule"]


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
        """The arguments stay flat, one ``--data.*`` option each (LightningCLI builds the options and
        config keys from this signature), and are packed at once into the groups of
        :mod:`ner_lit.data.settings`, under whose headings they are listed.

        Args:
            [CorpusFiles]: which file each stage reads, how files are read, where downloads and caches go.
            data_dir: Directory of the corpus files, relative to the current directory (``ner_lit:sample``: the
                sample corpus shipped in the package). None downloads the official KLUE-NER v1.1
                train and dev files into ``cache_dir`` (dev is also the test set: KLUE's test set is not public).
            train_file: Training file. Like every file option: a bare name is looked for in ``data_dir``, then in
                the current directory; a path with a directory part in the current directory, then in ``data_dir``.
            val_file: Validation file (scored every epoch; ModelCheckpoint keeps the best val_F1c).
            test_file: Test file; None uses ``val_file``.
            predict_file: File for ``predict``: plain text (one sentence a line), KLUE TSV or JSONL.
            format: File format; ``auto`` goes by the extension (.tsv, .jsonl/.json, .txt).
            max_chars: The longest sentence (or predict line) accepted, in characters; a longer one is an error
                naming its file and line. The default is far above any real sentence and still small enough
                that a file read with the wrong format, or a text without line breaks, stops at once instead of
                becoming one huge batch. None: no limit.
            cache_dir: Downloads, scratch tokenizers and encoded windows (default ``$NER_LIT_CACHE`` or ``~/.cache/ner_lit``).
            klue_url: Base URL of the KLUE-NER files (default: the KLUE-benchmark repository on GitHub).

            [TokenizerSettings]: the tokenizer given, or the one trained from scratch.
            tokenizer: Hugging Face hub id or local directory of a fast tokenizer. None trains one from
                scratch on the training file (``scratch_tokenizer``), deterministically, and caches it.
            scratch_tokenizer: ``wordpiece`` (the reference recipe) or ``syllable`` (one token per character).
            scratch_vocab_size: Vocabulary size of a scratch tokenizer.

            [WindowSettings]: labels, windows, tagging and decoding; a checkpoint's spec replaces them all.
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

            [LoaderSettings]: batches and DataLoader workers.
            batch_size: Training windows per batch (per device).
            eval_batch_size: Evaluation windows per batch (per device); whole sentences only.
            predict_chunk_size: ``predict`` reads, encodes and writes this many sentences at a time (memory
                stays flat whatever the input's size); under DDP the chunks are dealt to the ranks.
            num_workers: DataLoader worker processes.
            group_by_length: Group training windows of similar length (less padding).
            shuffle: Shuffle the training batches every epoch.
        """
        super().__init__()
        self.save_hyperparameters()
        self.corpus = CorpusFiles(data_dir=data_dir, train_file=train_file, val_file=val_file, test_file=test_file,
                                  predict_file=predict_file, format=format, max_chars=max_chars, klue_url=klue_url,
                                  cache_dir=Path(cache_dir) if cache_dir else default_cache_dir())
        self.tokenizing = TokenizerSettings(tokenizer=tokenizer, scratch_tokenizer=scratch_tokenizer,
                                            scratch_vocab_size=scratch_vocab_size)
        self.windows = WindowSettings(labels=tuple(labels) if labels else None, max_length=max_length, stride=stride,
                                      label_rule=label_rule, decoding=decoding, tagging=tagging, char_slots=char_slots)
        self.loader = LoaderSettings(batch_size=batch_size, eval_batch_size=eval_batch_size, predict_chunk_size=predict_chunk_size,
                                     num_workers=num_workers, group_by_length=group_by_length, shuffle=shuffle)
        self.locator = CorpusLocator(self.corpus)
        self.preparation = CorpusPreparation(self.corpus, self.tokenizing)
        self.tokenizer = None
        self.aligner: Optional[Aligner] = None
        self._tokenizer_files: Optional[dict[str, str]] = None
        self._spec: Optional[TaggerSpec] = None  # given by use_spec (a checkpoint's), else made by `spec`
        self.train_windows: Sequence[Window] = []  # TrainWindows over the memory-mapped entry, after setup("fit")
        self.eval_items: dict[str, Sequence[EvalItem]] = {}  # EvalSentences per stage, likewise
        self.predict_count = 0  # sentences in the predict file, counted by setup("predict")

    # ------------------------------------------------------------------ the tagger
    def use_spec(self, spec: TaggerSpec) -> None:
        """Encode as a trained tagger did: its labels, tokenizer and window settings (test/validate/predict/resume).

        The one way a tagger's settings reach the data module; they win over the init arguments.
        """
        self._spec = spec
        self.windows = WindowSettings.of_spec(spec)
        self._tokenizer_files = dict(spec.tokenizer_files)

    @property
    def spec(self) -> TaggerSpec:
        """What a tagger trained on this data must record (no model config: the model adds it).

        The spec given to :meth:`use_spec` if any; else made from this module's settings once
        ``setup`` has the labels and the tokenizer, with the training file and its digest as provenance.
        """
        if self._spec is not None:
            return self._spec
        w = self.windows
        if w.labels is None or self._tokenizer_files is None:
            raise DataError("the data module has no labels or tokenizer yet: call setup() first")
        train = self.path("fit") if self.corpus.train_file else None
        digest = self.preparation.encoded_digest(train) if train is not None else None
        return TaggerSpec(
            labels=w.labels, tokenizer_files=dict(self._tokenizer_files), max_length=w.max_length, stride=w.stride,
            label_rule=w.label_rule, decoding=w.decoding, tagging=w.tagging, char_slots=w.char_slots,
            provenance=Provenance.now(train_file=None if train is None else str(train), train_sha256=digest),
        )

    def tagger_data(self) -> TaggerData:
        """What a model needs of this data, after ``setup``: the spec, the tokenizer and the aligner."""
        if self.tokenizer is None or self.aligner is None:
            raise DataError("the data module has no tokenizer yet: call setup() first")
        return TaggerData(self.spec, self.tokenizer, self.aligner)

    @property
    def labels(self) -> Optional[list[str]]:
        """The label list: given, derived by ``setup`` from the training file, or a checkpoint's."""
        return None if self.windows.labels is None else list(self.windows.labels)

    @property
    def max_length(self) -> int:
        """Tokens per window (``windows.max_length``)."""
        return self.windows.max_length

    # ------------------------------------------------------------------ files
    def path(self, stage: str) -> Optional[Path]:
        """The file a stage reads (see :mod:`ner_lit.data.files` for where it is looked for)."""
        return self.locator.path(stage)

    def candidates(self, stage: str) -> list[Path]:
        """Where a stage's file may be, in the order tried."""
        return self.locator.candidates(stage)

    # ------------------------------------------------------------------ setup
    def prepare_data(self) -> None:
        check_cache_dir(self.corpus.cache_dir)
        if self.corpus.data_dir is None:
            self.locator.klue_files()

    def setup(self, stage: str) -> None:
        check_cache_dir(self.corpus.cache_dir)  # every rank: prepare_data runs on one rank per node only
        self.preparation.start_setup()
        train = self.locator.existing("fit") if stage == "fit" else None
        if self.windows.labels is None:
            if train is None:
                raise DataError(f"`{stage}` needs the label list: pass --ckpt_path (labels come from it) or --data.labels")
            self.windows = replace(self.windows, labels=tuple(self.preparation.labels(train)))
        if self.tokenizer is None:
            self.tokenizer = self.preparation.tokenizer(train, self._tokenizer_files)
            self._tokenizer_files = self._tokenizer_files or tokenizer_files(self.tokenizer)
        if self.aligner is None:
            w = self.windows
            self.aligner = Aligner(self.tokenizer, self.labels, w.max_length, w.stride, w.label_rule, w.decoding,
                                   w.tagging, w.char_slots)
        if stage == "fit":
            self.train_windows = TrainWindows(self._encode(train), self.aligner.char_slots)
            self.eval_items["validate"] = self._eval_items("validate")
        elif stage in ("validate", "test"):
            self.eval_items[stage] = self._eval_items(stage)
        elif stage == "predict":
            self.predict_count = count_sentences(self.locator.existing("predict"), self.corpus.max_chars)

    def _eval_items(self, stage: str) -> EvalSentences:
        return EvalSentences(self._encode(self.locator.existing(stage)), self.labels, self.aligner.char_slots)

    def _encode(self, path: Path, with_labels: bool = True) -> encoded_cache.Entry:
        return self.preparation.encode(path, self.aligner, self.windows, self._tokenizer_files, with_labels)

    def predict_plan(self) -> ChunkPlan:
        """How the predict file's chunks are shared between the ranks and DataLoader workers."""
        _, world = self._rank()
        return ChunkPlan(self.predict_count, self.loader.predict_chunk_size, world, max(1, self.loader.num_workers))

    # ------------------------------------------------------------------ loaders
    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> DataLoader:
        """Stateful (:mod:`~ner_lit.data.resumable`): a checkpoint written mid-epoch resumes at its next batch."""
        rank, world = self._rank()
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        windows, opts = self.train_windows, self.loader
        lengths = windows.lengths() if isinstance(windows, TrainWindows) else [len(w.input_ids) for w in windows]
        sampler = LengthGroupedBatchSampler(lengths, opts.batch_size, opts.shuffle, opts.group_by_length, seed, rank, world)
        return ResumableLoader(windows, batch_sampler=sampler, collate_fn=self.collate_train, num_workers=opts.num_workers)

    def _eval_loader(self, stage: str) -> DataLoader:
        rank, world = self._rank()
        items = self.eval_items[stage]
        if isinstance(items, EvalSentences):
            counts, lengths = items.window_counts(), items.id_counts()
        else:
            counts = [len(it.encoded.windows) for it in items]
            lengths = [sum(len(w.input_ids) for w in it.encoded.windows) for it in items]
        sampler = SortedSentenceBatchSampler(counts, lengths, self.loader.eval_batch_size, rank, world)
        return DataLoader(items, batch_sampler=sampler, collate_fn=self.collate_eval, num_workers=self.loader.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("validate")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        """Batches streamed from the file (:mod:`ner_lit.data.stream`): nothing of it is held but a few chunks."""
        rank, _ = self._rank()
        path = self.locator.existing("predict")
        stream = PredictStream(partial(iter_sentences, path, max_chars=self.corpus.max_chars), self.aligner,
                               self.predict_plan(), rank, self.loader.eval_batch_size, self._pad_id())
        return DataLoader(stream, batch_size=None, collate_fn=stream.collate_fn, num_workers=self.loader.num_workers)

    def _pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def collate_train(self, windows: list[Window]) -> dict[str, torch.Tensor]:
        return pad_windows(windows, self._pad_id())

    def collate_eval(self, items: list[EvalItem]) -> dict[str, Any]:
        batch: dict[str, Any] = pad_windows([w for it in items for w in it.encoded.windows], self._pad_id())
        batch["items"] = EvalItems(items)
        return batch
