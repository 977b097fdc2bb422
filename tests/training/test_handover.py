"""The one seam between data and model: the data module's TaggerData, handed over by a callback."""
from __future__ import annotations

import inspect
from pathlib import Path
from types import SimpleNamespace

import pytest

from ner_lit.corpus.klue import read_klue_tsv, write_klue_tsv
from ner_lit.data.datamodule import NERDataModule
from ner_lit.training import model as model_module
from ner_lit.training.handover import DataHandover
from ner_lit.training.model import ModelError, NERModel

SAMPLE = Path(__file__).resolve().parents[2] / "ner_lit" / "sample"


@pytest.fixture
def data(tmp_path: Path) -> NERDataModule:
    """A data module set up for ``fit`` on 12 sample sentences, with a syllable scratch tokenizer."""
    (tmp_path / "data").mkdir()
    write_klue_tsv(read_klue_tsv(SAMPLE / "train.tsv")[:12], tmp_path / "data" / "train.tsv")
    write_klue_tsv(read_klue_tsv(SAMPLE / "dev.tsv")[:4], tmp_path / "data" / "dev.tsv")
    dm = NERDataModule(data_dir=str(tmp_path / "data"), scratch_tokenizer="syllable", max_length=16, stride=4,
                       cache_dir=str(tmp_path / "cache"))
    dm.setup("fit")
    return dm


def hand_over(dm: NERDataModule, model: NERModel) -> None:
    DataHandover().setup(SimpleNamespace(datamodule=dm), model, "fit")


def test_the_model_gets_the_datas_spec_tokenizer_and_aligner(data: NERDataModule) -> None:
    model = NERModel()
    hand_over(data, model)
    assert model.tokenizer is data.tokenizer and model.aligner is data.aligner
    assert model.labels == data.labels and model.spec.tokenizer_files == data.spec.tokenizer_files


def test_a_spec_given_to_the_model_wins_over_the_datas(data: NERDataModule) -> None:
    from dataclasses import replace

    given = replace(data.spec, max_length=12)
    model = NERModel()
    model.use_spec(given)
    hand_over(data, model)
    assert model.spec is given and model.aligner is data.aligner


def test_data_with_other_labels_is_refused(data: NERDataModule) -> None:
    from dataclasses import replace

    model = NERModel()
    model.use_spec(replace(data.spec, labels=("O", "B-XX", "I-XX")))
    with pytest.raises(ModelError, match="the data's labels .* are not the tagger's"):
        hand_over(data, model)


def test_a_data_module_not_set_up_hands_nothing_over_but_an_error(tmp_path: Path) -> None:
    from ner_lit.data.datamodule import DataError

    with pytest.raises(DataError, match="call setup"):
        hand_over(NERDataModule(cache_dir=str(tmp_path)), NERModel())


def test_without_a_data_module_nothing_is_handed_over() -> None:
    model = NERModel()
    DataHandover().setup(SimpleNamespace(datamodule=None), model, "fit")
    assert model.spec is None


def test_the_model_installs_the_handover_once() -> None:
    model = NERModel()
    model._trainer = SimpleNamespace(callbacks=[])
    assert [type(c) for c in model.configure_callbacks()] == [DataHandover]
    model._trainer = SimpleNamespace(callbacks=[DataHandover()])
    assert model.configure_callbacks() == []


def test_the_model_never_reads_the_data_module() -> None:
    assert "datamodule" not in inspect.getsource(model_module)
