"""TaggerSpec: what makes a trained tagger usable, as one typed, versioned record.

Everything past the weights that training, evaluation, ``predict``, ``serve`` and an
exported model directory must agree on lives here: the label list, the tokenizer's files,
the Hugging Face model config, the window settings, the label rule, the decoding, the
validation scores and where the tagger came from. It is made in three places only:

* by the data module once it has read the training data (:meth:`NERDataModule.spec`),
  without a model config; the model completes it (:meth:`TaggerSpec.with_model_config`);
* from a checkpoint's ``"ner_lit"`` section (:func:`ner_lit.checkpoint.format.spec_of`);
* from an exported model directory's ``ner_lit.json`` (:meth:`TaggerSpec.from_model_dir`).

It is handed to the model through one public method (``NERModel.use_spec``) and written by
one pair of functions for each medium: :meth:`to_dict`/:meth:`from_dict` (the checkpoint
section) and :meth:`save`/:meth:`from_model_dir` (an exported directory). Reading checks
the format number first, so a file written by a newer ner_lit is refused with one line
that says so, not with a KeyError further on.

The record holds only str/int/float/list/dict values, so ``torch.load(weights_only=True)``
reads a checkpoint carrying it: loading one runs no code from it.
"""
from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping, Optional

from ner_lit.errors import UserError
from ner_lit.files import write_json_atomic

#: The newest layout this version writes and reads; older ones are read, newer ones refused.
#: 1: the first checkpoint section (no provenance). 2: provenance, and the spec file of an exported directory.
#: 3: the tagging unit (``tagging``, ``char_slots``); records before it tag tokens.
#: 4: a CRF head's learned transition and start scores (``crf``). Only a record that has them is
#: written as 4, so a tagger without a CRF stays readable by the versions that read 3.
FORMAT = 4
CRF_FORMAT = 4
#: The checkpoint key the spec is stored under.
SECTION = "ner_lit"
#: The spec's file in an exported model directory, beside Hugging Face's config.json.
SPEC_FILE = "ner_lit.json"
#: A tokenizer is rebuilt from its files: it needs at least one of these.
TOKENIZER_FILES = frozenset({"tokenizer.json", "vocab.txt", "tokenizer_config.json"})
LABEL_RULES = ("first_char", "first_entity")
DECODINGS = ("viterbi", "argmax")
TAGGINGS = ("char", "token")
#: Character slots of a ``char`` tagger unless it says otherwise (ner_lit.alignment.DEFAULT_CHAR_SLOTS).
DEFAULT_CHAR_SLOTS = 8
#: A directory exported without a spec file (by another tool): the windows Predictor used before specs.
PLAIN_DIR_WINDOWS = (512, 64)


class SpecError(UserError):
    """A tagger record that is missing, of an unknown version or inconsistent; the message names its file."""


@dataclass(frozen=True)
class Provenance:
    """Where a tagger came from: enough to tell two runs apart and to find the data they saw."""

    ner_lit_version: str = ""
    created: str = ""  # ISO 8601, UTC
    pretrained: Optional[str] = None  # the hub id or directory fine-tuned; None for a scratch model
    train_file: Optional[str] = None
    train_sha256: Optional[str] = None

    @classmethod
    def now(cls, pretrained: Optional[str] = None, train_file: Optional[str] = None,
            train_sha256: Optional[str] = None) -> "Provenance":
        from ner_lit.version import __version__

        created = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
        return cls(__version__, created, pretrained, train_file, train_sha256)


@dataclass(frozen=True)
class TaggerSpec:
    """A trained tagger's contract between training and inference (see the module docstring).

    ``model_config`` is None only in the data module's half-made spec, before a model exists;
    every spec read from a checkpoint or directory has one.
    """

    labels: tuple[str, ...]
    tokenizer_files: Mapping[str, str]
    max_length: int
    stride: int
    label_rule: str = "first_char"
    decoding: str = "viterbi"
    #: ``char``: a row of label scores per character a token owns (entities end at any character);
    #: ``token``: one label per token (every record of format 2 and before)
    tagging: str = "token"
    char_slots: int = DEFAULT_CHAR_SLOTS
    model_config: Optional[Mapping[str, Any]] = None
    name: str = ""
    scores: Mapping[str, float] = field(default_factory=dict)
    provenance: Provenance = field(default_factory=Provenance)
    #: a CRF head's scores, ``{"transitions": [[previous][current]], "start": [current]}``; None: no CRF
    crf: Optional[Mapping[str, Any]] = None
    #: the layout of the record it was read from (a property of the file, not of the tagger: not compared);
    #: a record is written in the oldest layout that holds it (:meth:`to_dict`)
    format: int = field(default=FORMAT, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))
        self.check("the tagger spec")

    # ------------------------------------------------------------------ checks
    def check(self, where: str) -> None:
        """Refuse a record whose parts can not work together; ``where`` names its file in the message."""
        if not self.labels or not all(isinstance(x, str) and x for x in self.labels):
            raise SpecError(f"{where}: the tagger has no label list")
        if len(set(self.labels)) != len(self.labels):
            raise SpecError(f"{where}: the label list repeats a label")
        if not isinstance(self.tokenizer_files, Mapping) or not (TOKENIZER_FILES & set(self.tokenizer_files)):
            names = sorted(self.tokenizer_files) if isinstance(self.tokenizer_files, Mapping) else []
            raise SpecError(f"{where}: holds no tokenizer files (expected one of {', '.join(sorted(TOKENIZER_FILES))}; "
                            f"found {', '.join(names) or 'none'})")
        if not (isinstance(self.max_length, int) and self.max_length >= 3):
            raise SpecError(f"{where}: max_length {self.max_length!r}, expected a whole number of tokens of at least 3")
        if not (isinstance(self.stride, int) and 0 <= self.stride < self.max_length):
            raise SpecError(f"{where}: stride {self.stride!r}, expected 0 <= stride < max_length ({self.max_length})")
        if self.label_rule not in LABEL_RULES:
            raise SpecError(f"{where}: label_rule {self.label_rule!r}, expected one of {', '.join(LABEL_RULES)}")
        if self.decoding not in DECODINGS:
            raise SpecError(f"{where}: decoding {self.decoding!r}, expected one of {', '.join(DECODINGS)}")
        if self.tagging not in TAGGINGS:
            raise SpecError(f"{where}: tagging {self.tagging!r}, expected one of {', '.join(TAGGINGS)}")
        if not (isinstance(self.char_slots, int) and not isinstance(self.char_slots, bool) and self.char_slots >= 1):
            raise SpecError(f"{where}: char_slots {self.char_slots!r}, expected a whole number of at least 1")
        if self.crf is not None:
            n = len(self.labels)
            t = self.crf.get("transitions") if isinstance(self.crf, Mapping) else None
            start = self.crf.get("start") if isinstance(self.crf, Mapping) else None
            if not (isinstance(t, (list, tuple)) and len(t) == n and all(isinstance(r, (list, tuple)) and len(r) == n for r in t)
                    and isinstance(start, (list, tuple)) and len(start) == n):
                raise SpecError(f"{where}: its CRF scores are not {n} x {n} transitions and {n} start scores")
        if self.model_config is not None:
            if not isinstance(self.model_config, Mapping) or "model_type" not in self.model_config:
                raise SpecError(f"{where}: its model config is not a Hugging Face config (no model_type)")
            id2label = self.model_config.get("id2label")
            outputs = len(id2label) if isinstance(id2label, Mapping) else self.model_config.get("num_labels")
            if outputs is not None and int(outputs) != self.num_outputs:
                per = f" ({self.char_slots} character slots x {len(self.labels)} labels)" if self.tagging == "char" else ""
                raise SpecError(f"{where}: its label list and tagging need {self.num_outputs} outputs{per} but its model "
                                f"config has {outputs}")

    # ------------------------------------------------------------------ derived records
    def with_model_config(self, config: Mapping[str, Any], name: str = "") -> "TaggerSpec":
        """The spec completed by the model it describes (the data module does not know the network)."""
        return replace(self, model_config=dict(config), name=name or self.name)

    def with_crf(self, transitions: Any, start: Any) -> "TaggerSpec":
        """The spec with a CRF head's current scores (nested lists of floats, as the record stores them)."""
        return replace(self, crf={"transitions": [[float(x) for x in row] for row in transitions],
                                  "start": [float(x) for x in start]})

    def with_scores(self, scores: Mapping[str, float]) -> "TaggerSpec":
        return replace(self, scores={k: float(v) for k, v in scores.items()})

    @property
    def num_outputs(self) -> int:
        """The classifier's outputs per token: a row of labels per character slot under ``char`` tagging."""
        return len(self.labels) * (self.char_slots if self.tagging == "char" else 1)

    @property
    def id2label(self) -> dict[int, str]:
        """The model config's output names: the labels, or under ``char`` tagging ``<label>@<slot>``
        (output ``slot * len(labels) + label``), which no token-classification pipeline reads as tags."""
        if self.tagging == "char":
            return {k * len(self.labels) + i: f"{label}@{k}" for k in range(self.char_slots)
                    for i, label in enumerate(self.labels)}
        return dict(enumerate(self.labels))

    def hf_config(self):
        """The model's ``transformers`` config object (built from ``model_config``)."""
        from transformers import AutoConfig

        if self.model_config is None:
            raise SpecError("the tagger spec has no model config yet (the model completes it)")
        return AutoConfig.for_model(**dict(self.model_config))

    def tokenizer_dir(self, cache_dir: str | Path | None = None) -> Path:
        """The tokenizer's files in a content-addressed directory (written once, reused)."""
        from ner_lit.checkpoint.tokenizer import materialize_tokenizer

        return materialize_tokenizer(dict(self.tokenizer_files), cache_dir)

    def tokenizer_digest(self) -> str:
        """The sha256 of the tokenizer's files: what says two specs tokenize alike."""
        import hashlib
        import json

        return hashlib.sha256(json.dumps(dict(self.tokenizer_files), sort_keys=True).encode()).hexdigest()

    def tokenizer(self, cache_dir: str | Path | None = None):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self.tokenizer_dir(cache_dir)))

    # ------------------------------------------------------------------ the checkpoint section
    def to_dict(self) -> dict[str, Any]:
        """The record as plain values (the checkpoint's ``"ner_lit"`` section, less what the checkpoint adds)."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["labels"] = list(self.labels)
        out["tokenizer_files"] = dict(self.tokenizer_files)
        out["model_config"] = None if self.model_config is None else dict(self.model_config)
        out["scores"] = dict(self.scores)
        out["provenance"] = {f.name: getattr(self.provenance, f.name) for f in fields(Provenance)}
        out["crf"] = None if self.crf is None else {"transitions": [list(r) for r in self.crf["transitions"]],
                                                    "start": list(self.crf["start"])}
        out["format"] = CRF_FORMAT if self.crf is not None else 3  # the oldest layout that holds the record
        return out

    @classmethod
    def from_dict(cls, record: Any, where: str) -> "TaggerSpec":
        """The spec in ``record`` (a checkpoint section or a spec file), checked; ``where`` names the file."""
        if not isinstance(record, Mapping):
            raise SpecError(f"{where}: holds no ner_lit tagger record")
        check_format(record.get("format"), where)
        missing = [k for k in ("labels", "tokenizer_files", "max_length", "stride") if k not in record]
        if missing:
            raise SpecError(f"{where}: its tagger record lacks {', '.join(missing)}")
        prov = record.get("provenance") or {}
        known = {f.name for f in fields(Provenance)}
        try:
            return cls(
                labels=tuple(record["labels"]) if isinstance(record["labels"], (list, tuple)) else (),
                tokenizer_files=dict(record["tokenizer_files"]) if isinstance(record["tokenizer_files"], Mapping) else {},
                max_length=record["max_length"],
                stride=record["stride"],
                label_rule=record.get("label_rule", "first_char"),
                decoding=record.get("decoding", "viterbi"),
                tagging=record.get("tagging", "token"),
                char_slots=record.get("char_slots", DEFAULT_CHAR_SLOTS),
                model_config=record.get("model_config"),
                name=str(record.get("name", "")),
                scores={str(k): float(v) for k, v in (record.get("scores") or {}).items()},
                provenance=Provenance(**{k: v for k, v in prov.items() if k in known}) if isinstance(prov, Mapping) else Provenance(),
                crf=record.get("crf"),
                format=int(record["format"]),
            )
        except SpecError as exc:
            raise SpecError(str(exc).replace("the tagger spec", where, 1)) from None

    # ------------------------------------------------------------------ an exported directory
    def save(self, directory: str | Path) -> Path:
        """Write ``ner_lit.json`` into an exported model directory, atomically.

        The tokenizer files and the model config are not repeated: the directory holds them
        (``tokenizer.json`` ..., ``config.json``), and :meth:`from_model_dir` reads them back from there.
        """
        target = Path(directory) / SPEC_FILE
        record = self.to_dict()
        record["tokenizer_files"] = sorted(self.tokenizer_files)
        record["model_config"] = "config.json"
        write_json_atomic(target, record, ensure_ascii=False, indent=2, sort_keys=True)
        return target

    @classmethod
    def from_model_dir(cls, directory: str | Path) -> "TaggerSpec":
        """The spec of an exported model directory: its ``ner_lit.json``, with the tokenizer files and
        model config read from the directory itself.

        A Hugging Face directory that has no ``ner_lit.json`` (exported by another tool) gets a spec
        from its own config: labels from ``id2label`` (``token`` tagging, or ``char`` where the outputs
        are named ``<label>@<slot>``), windows of :data:`PLAIN_DIR_WINDOWS`, Viterbi decoding, no
        scores; ``name`` says that it was inferred.
        """
        directory = Path(directory)
        config_path = directory / "config.json"
        if not config_path.is_file():
            raise SpecError(f"{directory}: not a Hugging Face model directory (no config.json)")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SpecError(f"{config_path}: not readable JSON ({exc})") from None
        files = {p.name: p.read_text(encoding="utf-8") for p in sorted(directory.iterdir())
                 if p.is_file() and p.name in _TOKENIZER_FILE_NAMES}
        spec_path = directory / SPEC_FILE
        if not spec_path.is_file():
            id2label = config.get("id2label") or {}
            try:
                labels = tuple(id2label[k] for k in sorted(id2label, key=int))
            except (TypeError, ValueError):
                raise SpecError(f"{config_path}: its id2label is not a map of label numbers") from None
            max_length, stride = PLAIN_DIR_WINDOWS
            tagging = _char_outputs(labels)
            if tagging is not None:  # ner_lit's char tagger, its spec file lost: its outputs still say so
                labels, slots = tagging
                return cls(labels, files, max_length, stride, tagging="char", char_slots=slots, model_config=config,
                           name=f"{config.get('_name_or_path') or directory.name} (no {SPEC_FILE}: settings inferred)")
            return cls(labels, files, max_length, stride, model_config=config,
                       name=f"{config.get('_name_or_path') or directory.name} (no {SPEC_FILE}: settings inferred)")
        try:
            record = json.loads(spec_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SpecError(f"{spec_path}: not readable JSON ({exc})") from None
        if not isinstance(record, dict):
            raise SpecError(f"{spec_path}: holds no ner_lit tagger record")
        check_format(record.get("format"), str(spec_path))
        wanted = record.get("tokenizer_files") or []
        absent = [n for n in wanted if n not in files]
        if absent:
            raise SpecError(f"{directory}: its {SPEC_FILE} names tokenizer files the directory lacks: {', '.join(absent)}")
        record = {**record, "tokenizer_files": files, "model_config": config}
        return cls.from_dict(record, str(spec_path))


#: Text files ``save_pretrained`` may write for a tokenizer (read back into ``tokenizer_files``; a
#: checkpoint keeps a tokenizer as text, so binary vocabularies are not among them).
_TOKENIZER_FILE_NAMES = frozenset({
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
    "merges.txt", "added_tokens.json", "chat_template.jinja",
})


def _char_outputs(outputs: tuple[str, ...]) -> Optional[tuple[tuple[str, ...], int]]:
    """The labels and slot count of a ``char`` tagger's output names (``<label>@<slot>``, slot-major,
    as :attr:`TaggerSpec.id2label` writes them); None for any other list."""
    parsed = [name.rpartition("@") for name in outputs]
    if not outputs or not all(sep and slot.isdigit() for _, sep, slot in parsed):
        return None
    labels = tuple(label for label, _, slot in parsed if slot == "0")
    slots = len(outputs) // max(1, len(labels))
    expected = tuple(f"{label}@{k}" for k in range(slots) for label in labels)
    return (labels, slots) if expected == tuple(outputs) else None


def check_format(fmt: Any, where: str) -> None:
    """A record's format number must be one this version reads (1 .. :data:`FORMAT`)."""
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt < 1:
        raise SpecError(f"{where}: the '{SECTION}' record has no valid format number (got {fmt!r})")
    if fmt > FORMAT:
        raise SpecError(f"{where}: written by a newer ner_lit (format {fmt}; this version reads format "
                        f"{FORMAT} and older): upgrade ner_lit to use it")
