"""Paths a user types are relative to the current directory; bare file names look in data_dir first."""
from __future__ import annotations

from pathlib import Path

import pytest

from ner_lit.data.datamodule import DataError, NERDataModule
from ner_lit.resources import PACKAGE


@pytest.fixture()
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """(data_dir, cwd): two folders, the second the current directory."""
    data, cwd = tmp_path / "data", tmp_path / "cwd"
    data.mkdir()
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return data, cwd


def test_a_bare_name_is_found_in_data_dir_first(dirs: tuple[Path, Path]) -> None:
    data, cwd = dirs
    (data / "train.tsv").write_text("", encoding="utf-8")
    (cwd / "train.tsv").write_text("", encoding="utf-8")
    dm = NERDataModule(data_dir=str(data), train_file="train.tsv")
    assert dm.path("fit") == data / "train.tsv"


def test_a_bare_name_missing_from_data_dir_is_found_in_the_current_directory(dirs: tuple[Path, Path]) -> None:
    data, cwd = dirs
    (cwd / "my.txt").write_text("서울\n", encoding="utf-8")
    dm = NERDataModule(data_dir=str(data), predict_file="my.txt")
    assert dm.path("predict").resolve() == (cwd / "my.txt").resolve()


def test_a_name_with_a_directory_part_is_relative_to_the_current_directory(dirs: tuple[Path, Path]) -> None:
    data, cwd = dirs
    (cwd / "sub").mkdir()
    (data / "sub").mkdir()
    (cwd / "sub" / "dev.tsv").write_text("", encoding="utf-8")
    (data / "sub" / "dev.tsv").write_text("", encoding="utf-8")
    dm = NERDataModule(data_dir=str(data), test_file="sub/dev.tsv")
    assert dm.path("test").resolve() == (cwd / "sub" / "dev.tsv").resolve()
    (cwd / "sub" / "dev.tsv").unlink()
    assert dm.path("test") == data / "sub" / "dev.tsv"  # then data_dir


def test_a_parent_relative_path_is_not_joined_to_data_dir(dirs: tuple[Path, Path]) -> None:
    data, cwd = dirs
    (cwd.parent / "elsewhere.tsv").write_text("", encoding="utf-8")
    dm = NERDataModule(data_dir=str(data), test_file="../elsewhere.tsv")
    assert dm.path("test").resolve() == (cwd.parent / "elsewhere.tsv").resolve()


def test_without_data_dir_a_predict_file_is_read_from_the_current_directory(dirs: tuple[Path, Path]) -> None:
    _, cwd = dirs
    dm = NERDataModule(data_dir=None, predict_file="my.txt")
    assert dm.candidates("predict") == [Path("my.txt")]


def test_the_package_scheme_names_the_shipped_sample_corpus(dirs: tuple[Path, Path]) -> None:
    dm = NERDataModule(data_dir="ner_lit:sample", train_file="train.tsv")
    assert dm.path("fit") == PACKAGE / "sample" / "train.tsv"
    assert dm.path("fit").is_file()


def test_a_missing_file_names_every_place_that_was_tried(dirs: tuple[Path, Path]) -> None:
    data, cwd = dirs
    dm = NERDataModule(data_dir=str(data), train_file="nope.tsv")
    with pytest.raises(DataError) as err:
        dm.setup("fit")
    assert str(err.value) == (f"nope.tsv: no such file (--data.train_file); looked for {data / 'nope.tsv'} or nope.tsv "
                              f"(from {cwd})")
