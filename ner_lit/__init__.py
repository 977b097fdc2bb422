"""ner_lit: Korean named-entity recognition with Lightning, scored on KLUE's characters.

The public Python API::

    from ner_lit import Predictor

    predictor = Predictor.from_checkpoint("runs/tiny/version_0/checkpoints/last.ckpt")
    for entity in predictor.predict(["이순신은 조선 중기의 무신이다."])[0].entities:
        print(entity.text, entity.label, entity.start, entity.end)

``Predictor`` tags texts (from a checkpoint or an exported directory); ``NERModel`` and
``NERDataModule`` are the LightningModule and LightningDataModule the CLI trains; ``TaggerSpec``
is the typed record of what a trained tagger is; ``Sentence`` and ``Entity`` are the records
texts and answers are made of; ``read_corpus``/``write_corpus`` read and write every corpus format.

The names load on first use, so that ``import ner_lit`` (and ``ner_lit --help``) stays fast:
torch, transformers and Lightning are imported only when a name that needs them is touched.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ner_lit.version import __version__

#: public name -> the module that defines it
_PUBLIC = {
    "Predictor": "ner_lit.inference.predictor",
    "Prediction": "ner_lit.alignment.answers",
    "NERModel": "ner_lit.training.model",
    "NERDataModule": "ner_lit.data.datamodule",
    "TaggerSpec": "ner_lit.checkpoint.spec",
    "Sentence": "ner_lit.corpus.records",
    "Entity": "ner_lit.corpus.records",
    "read_corpus": "ner_lit.corpus.formats",
    "write_corpus": "ner_lit.corpus.formats",
    "UserError": "ner_lit.errors",
}

__all__ = [
    "Entity", "NERDataModule", "NERModel", "Prediction", "Predictor", "Sentence", "TaggerSpec", "UserError",
    "__version__", "read_corpus", "write_corpus",
]

if TYPE_CHECKING:
    from ner_lit.alignment.answers import Prediction
    from ner_lit.checkpoint.spec import TaggerSpec
    from ner_lit.corpus.formats import read_corpus, write_corpus
    from ner_lit.corpus.records import Entity, Sentence
    from ner_lit.data.datamodule import NERDataModule
    from ner_lit.errors import UserError
    from ner_lit.inference.predictor import Predictor
    from ner_lit.training.model import NERModel


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'ner_lit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
