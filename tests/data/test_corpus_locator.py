"""Which file each stage reads (ner_lit.data.files): the order tried, KLUE without a data_dir, the errors."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from ner_lit.data import files
from ner_lit.data.files import CorpusLocator, check_cache_dir
from ner_lit.data.settings import CorpusFiles, DataError


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``data/`` under a working directory of its own."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    return tmp_path / "data"


def test_a_missing_file_names_every_place_looked_in(data: Path) -> None:
    locator = CorpusLocator(CorpusFiles(data_dir=str(data), train_file="nope.tsv"))
    with pytest.raises(DataError, match=re.escape(f"nope.tsv: no such file (--data.train_file); looked for {data / 'nope.tsv'} "
                                                  f"or nope.tsv (from {data.parent})")):
        locator.existing("fit")


def test_a_stage_without_a_file_names_the_option_it_needs(data: Path) -> None:
    with pytest.raises(DataError, match=re.escape("no --data.predict_file is set, and `predict` needs one")):
        CorpusLocator(CorpusFiles(data_dir=str(data))).existing("predict")


def test_a_bare_name_missing_from_data_dir_is_found_in_the_current_directory(data: Path) -> None:
    (data.parent / "dev.tsv").write_text("x", encoding="utf-8")
    locator = CorpusLocator(CorpusFiles(data_dir=str(data)))
    assert locator.candidates("validate") == [data / "dev.tsv", Path("dev.tsv")]
    assert locator.existing("validate") == Path("dev.tsv")


def test_without_data_dir_the_klue_files_are_downloaded_once(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def download(target, **kwargs):
        calls.append((target, kwargs))
        return {"train": target / "train.tsv", "dev": target / "dev.tsv"}

    monkeypatch.setattr(files, "download_klue_ner", download)
    locator = CorpusLocator(CorpusFiles(cache_dir=data, klue_url="http://mirror"))
    klue = data / "klue-ner-v1.1"
    assert [locator.path(s) for s in ("fit", "validate", "test")] == [klue / "train.tsv", klue / "dev.tsv", klue / "dev.tsv"]
    assert calls == [(klue, {"base_url": "http://mirror"})]
    assert CorpusLocator(CorpusFiles(cache_dir=data, test_file="t.tsv")).candidates("test") == [Path("t.tsv")]


def test_the_cache_check_makes_the_cache_and_its_encoded_folder(tmp_path: Path) -> None:
    check_cache_dir(tmp_path / "cache")
    assert (tmp_path / "cache" / "encoded").is_dir()
