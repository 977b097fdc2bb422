"""The data module's settings, in typed groups, as Hugging Face's ``run_ner.py`` groups its arguments.

LightningCLI builds the ``--data.*`` options (and the ``data:`` config keys) from the flat
signature of ``NERDataModule.__init__``, so that signature stays flat: saved run configs and
checkpoints' hyperparameters load as they always did. The data module packs its arguments into
these frozen groups at once, and the rest of :mod:`ner_lit.data` reads the groups. A group's
fields are named as its options are, and each group checks its own values, with errors that
name the ``--data.*`` option.

- :class:`CorpusFiles`: which files, how they are read, and where what is made from them is kept;
- :class:`TokenizerSettings`: the tokenizer given, or the one trained from scratch;
- :class:`WindowSettings`: labels, windows, tagging and decoding, what a trained tagger's spec
  records (a checkpoint's spec replaces the group as a whole);
- :class:`LoaderSettings`: batches and DataLoader workers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from ner_lit.alignment.windows import DEFAULT_CHAR_SLOTS, Decoding, LabelRule, Tagging
from ner_lit.checkpoint.spec import TaggerSpec
from ner_lit.checkpoint.tokenizer import default_cache_dir
from ner_lit.errors import UserError

#: The option naming each stage's file.
FILE_OPTIONS = {"fit": "train_file", "validate": "val_file", "test": "test_file", "predict": "predict_file"}


class DataError(UserError):
    """A data setting that can not work (missing file, unknown tokenizer, ...)."""


@dataclass(frozen=True)
class CorpusFiles:
    """Which file each stage reads, how files are read, and where downloads and caches go."""

    data_dir: Optional[str] = None
    train_file: Optional[str] = "train.tsv"
    val_file: Optional[str] = "dev.tsv"
    test_file: Optional[str] = None
    predict_file: Optional[str] = None
    format: Literal["auto", "klue", "jsonl", "text"] = "auto"
    max_chars: Optional[int] = 100_000
    cache_dir: Path = field(default_factory=default_cache_dir)
    klue_url: Optional[str] = None

    def __post_init__(self) -> None:
        if self.max_chars is not None and self.max_chars < 1:
            raise DataError(f"--data.max_chars {self.max_chars}, expected a positive number of characters (or null for no limit)")

    def name(self, stage: str) -> Optional[str]:
        """The file ``stage`` reads, as given (``test`` falls back to the validation file)."""
        if stage == "test":
            return self.test_file or self.val_file
        return getattr(self, FILE_OPTIONS[stage])

    def reads_klue(self, stage: str) -> bool:
        """Whether ``stage`` reads the downloaded KLUE-NER files: no ``data_dir``, and for ``test`` no ``test_file``."""
        return self.data_dir is None and (stage in ("fit", "validate") or (stage == "test" and not self.test_file))


@dataclass(frozen=True)
class TokenizerSettings:
    """The tokenizer: a Hugging Face one given by name or directory, else one trained on the training file."""

    tokenizer: Optional[str] = None
    scratch_tokenizer: Literal["wordpiece", "syllable"] = "wordpiece"
    scratch_vocab_size: int = 8000


@dataclass(frozen=True)
class WindowSettings:
    """How sentences become labelled windows and logits become tags: what a trained tagger's spec records.

    ``labels`` None: derived from the training file by ``setup``. A checkpoint's spec replaces
    the whole group (:meth:`of_spec`), so a tagger is evaluated on windows like its training ones.
    """

    labels: Optional[tuple[str, ...]] = None
    max_length: int = 128
    stride: int = 32
    label_rule: LabelRule = "first_char"
    decoding: Decoding = "viterbi"
    tagging: Tagging = "char"
    char_slots: int = DEFAULT_CHAR_SLOTS

    def __post_init__(self) -> None:
        if self.tagging not in ("char", "token"):
            raise DataError(f"--data.tagging {self.tagging!r}: expected char or token")
        if self.char_slots < 1:
            raise DataError(f"--data.char_slots {self.char_slots}: expected at least 1 label row per token")

    @classmethod
    def of_spec(cls, spec: TaggerSpec) -> "WindowSettings":
        return cls(labels=tuple(spec.labels), max_length=spec.max_length, stride=spec.stride, label_rule=spec.label_rule,
                   decoding=spec.decoding, tagging=spec.tagging, char_slots=spec.char_slots)


@dataclass(frozen=True)
class LoaderSettings:
    """How windows are batched and loaded."""

    batch_size: int = 32
    eval_batch_size: int = 64
    predict_chunk_size: int = 4096
    num_workers: int = 0
    group_by_length: bool = True
    shuffle: bool = True

    def __post_init__(self) -> None:
        for option, value in (("batch_size", self.batch_size), ("eval_batch_size", self.eval_batch_size)):
            if value < 1:
                raise DataError(f"--data.{option} {value}: expected at least 1 window per batch")
        if self.num_workers < 0:
            raise DataError(f"--data.num_workers {self.num_workers}: expected 0 (load in the main process) or more")
        if self.predict_chunk_size < 1:
            raise DataError(f"--data.predict_chunk_size {self.predict_chunk_size}: expected at least 1")
