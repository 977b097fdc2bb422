"""What a model trained or scored on a data module needs of it, as one typed record.

``NERDataModule.tagger_data()`` makes it once ``setup`` has the labels and the tokenizer;
``NERModel.use_data`` takes it (see ``ner_lit.training.handover`` for when). The model never
reads the data module itself: this record is all that passes between them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ner_lit.alignment.aligner import Aligner
from ner_lit.checkpoint.spec import TaggerSpec


@dataclass(frozen=True)
class TaggerData:
    """The tagger the data was encoded for, and the objects that encoded it.

    ``spec``: labels, tokenizer files, windows, tagging and decoding, with the training file's
    provenance (a checkpoint's own spec when one was given to the data module, model config
    included). ``tokenizer``: the fast tokenizer that cut the batches. ``aligner``: the alignment
    that encoded them, which the model decodes its logits with.
    """

    spec: TaggerSpec
    tokenizer: Any
    aligner: Aligner

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.spec.labels)
