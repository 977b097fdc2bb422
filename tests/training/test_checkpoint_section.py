"""The ``ner_lit`` section of a checkpoint (ner_lit.training.section): written, read back, refused when damaged."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from ner_lit.checkpoint.format import CheckpointError
from ner_lit.checkpoint.spec import SECTION, TaggerSpec
from ner_lit.training.section import read_section, write_section

SPEC = TaggerSpec(labels=("O", "B-PS", "I-PS"), tokenizer_files={"tokenizer.json": "{}"}, max_length=16, stride=4)


def written(trainer=None) -> dict:
    checkpoint = {"state_dict": {"model.w": torch.arange(6.0)}}
    write_section(checkpoint, SPEC, trainer)
    return checkpoint


def test_a_written_section_reads_back_as_the_same_spec() -> None:
    assert read_section(written()) == SPEC


def test_the_section_records_the_validation_scores_and_the_monitored_one() -> None:
    trainer = SimpleNamespace(callback_metrics={"val_F1c": torch.tensor(0.5), "train_loss": torch.tensor(2.0)},
                              checkpoint_callback=SimpleNamespace(monitor="val_F1c", mode="max"))
    section = written(trainer)[SECTION]
    assert section["scores"] == {"val_F1c": 0.5}
    assert section["monitor"] == {"name": "val_F1c", "mode": "max", "score": 0.5}
    assert written()[SECTION]["monitor"] is None


def test_a_section_over_changed_weights_is_refused() -> None:
    checkpoint = written()
    checkpoint["state_dict"]["model.w"][0] += 1
    with pytest.raises(CheckpointError, match="its weights do not match the digest"):
        read_section(checkpoint)
