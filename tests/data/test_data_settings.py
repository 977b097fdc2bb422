"""The data module's settings groups: the flat options packed into typed groups, each checked on its own."""
from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import docstring_parser
import pytest

from ner_lit.checkpoint.spec import TaggerSpec
from ner_lit.data.datamodule import NERDataModule
from ner_lit.data.settings import CorpusFiles, DataError, LoaderSettings, TokenizerSettings, WindowSettings

GROUPS = {"corpus": CorpusFiles, "tokenizing": TokenizerSettings, "windows": WindowSettings, "loader": LoaderSettings}


def options() -> list[str]:
    return [p for p in inspect.signature(NERDataModule.__init__).parameters if p != "self"]


def test_every_option_is_a_field_of_exactly_one_group_under_its_own_name() -> None:
    fields = [f.name for group in GROUPS.values() for f in dataclasses.fields(group)]
    assert sorted(fields) == sorted(options())


def test_the_flat_arguments_land_in_their_groups() -> None:
    dm = NERDataModule(data_dir="d", test_file="t.tsv", tokenizer="tok", labels=["O", "B-PS", "I-PS"], stride=4,
                       batch_size=8, cache_dir="somewhere", max_chars=None)
    for attribute, group in GROUPS.items():
        assert isinstance(getattr(dm, attribute), group)
    assert (dm.corpus.data_dir, dm.corpus.test_file, dm.corpus.cache_dir, dm.corpus.max_chars) == ("d", "t.tsv", Path("somewhere"), None)
    assert dm.tokenizing.tokenizer == "tok"
    assert (dm.windows.labels, dm.windows.stride, dm.labels) == (("O", "B-PS", "I-PS"), 4, ["O", "B-PS", "I-PS"])
    assert dm.loader.batch_size == 8


def test_saved_hyperparameters_stay_flat_for_configs_and_checkpoints() -> None:
    dm = NERDataModule(stride=4)
    assert list(dm.hparams) == options()
    assert dm.hparams["stride"] == 4


def test_the_groups_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        NERDataModule().loader.batch_size = 1  # type: ignore[misc]


def test_the_init_docstring_lists_every_option_under_its_groups_heading() -> None:
    doc = inspect.getdoc(NERDataModule.__init__) or ""
    heading = re.compile(r"^\s*\[(\w+)\]:")
    listed: dict[str, list[str]] = {}
    group = None
    for line in doc.splitlines():
        if m := heading.match(line):
            group = listed.setdefault(m.group(1), [])
        elif group is not None and (m := re.match(r"^ {4}(\w+): ", line)):
            group.append(m.group(1))
    assert listed == {cls.__name__: [f.name for f in dataclasses.fields(cls)] for cls in
                      (CorpusFiles, TokenizerSettings, WindowSettings, LoaderSettings)}


def test_the_group_headings_leave_every_option_its_help() -> None:
    """LightningCLI's help comes from the docstring's Args; a heading is not an option and takes no option's text."""
    params = {p.arg_name: p.description for p in docstring_parser.parse(inspect.getdoc(NERDataModule.__init__)).params}
    assert all(params.get(name) for name in options())
    assert params["stride"] == "Tokens of overlap between consecutive windows of one sentence."


def test_the_test_stage_falls_back_to_the_validation_file() -> None:
    assert CorpusFiles(val_file="dev.tsv").name("test") == "dev.tsv"
    assert CorpusFiles(val_file="dev.tsv", test_file="test.tsv").name("test") == "test.tsv"
    assert CorpusFiles(predict_file="in.txt").name("predict") == "in.txt"


def test_only_stages_without_a_data_dir_and_an_own_file_read_klue() -> None:
    klue = CorpusFiles()
    assert [klue.reads_klue(s) for s in ("fit", "validate", "test", "predict")] == [True, True, True, False]
    assert not CorpusFiles(test_file="t.tsv").reads_klue("test")
    assert not any(CorpusFiles(data_dir="d").reads_klue(s) for s in ("fit", "validate", "test", "predict"))


@pytest.mark.parametrize(("group", "values", "message"), [
    (WindowSettings, {"tagging": "word"}, "--data.tagging 'word': expected char or token"),
    (WindowSettings, {"char_slots": 0}, "--data.char_slots 0: expected at least 1"),
    (LoaderSettings, {"predict_chunk_size": 0}, "--data.predict_chunk_size 0: expected at least 1"),
    (CorpusFiles, {"max_chars": -1}, "--data.max_chars -1, expected a positive number"),
])
def test_each_group_refuses_its_own_bad_values_naming_the_option(group, values, message) -> None:
    with pytest.raises(DataError, match=re.escape(message)):
        group(**values)


def test_a_checkpoint_spec_replaces_the_whole_window_group() -> None:
    spec = TaggerSpec(labels=("O", "B-LC", "I-LC"), tokenizer_files={"tokenizer.json": "{}"}, max_length=20, stride=5,
                      label_rule="first_entity", decoding="argmax", tagging="token", char_slots=3)
    dm = NERDataModule(labels=["O"], max_length=64, stride=8, tagging="char")
    dm.use_spec(spec)
    assert dm.windows == WindowSettings(labels=("O", "B-LC", "I-LC"), max_length=20, stride=5, label_rule="first_entity",
                                        decoding="argmax", tagging="token", char_slots=3)
    assert dm.spec is spec
