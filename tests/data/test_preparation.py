"""What is made from a corpus file's bytes (ner_lit.data.preparation): hashed once a setup, cached by content."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from ner_lit.corpus.klue import read_klue_tsv, write_klue_tsv
from ner_lit.data import cache as encoded_cache
from ner_lit.data import preparation
from ner_lit.data.preparation import CorpusPreparation
from ner_lit.data.settings import CorpusFiles, DataError, TokenizerSettings

SAMPLE = Path(__file__).resolve().parents[2] / "ner_lit" / "sample"


@pytest.fixture
def train(tmp_path: Path) -> Path:
    write_klue_tsv(read_klue_tsv(SAMPLE / "train.tsv")[:12], tmp_path / "train.tsv")
    return tmp_path / "train.tsv"


def prepared(tmp_path: Path, **tokenizing) -> CorpusPreparation:
    return CorpusPreparation(CorpusFiles(cache_dir=tmp_path / "cache"), TokenizerSettings(**tokenizing))


def test_a_file_is_hashed_once_per_setup(train: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hashed = []
    original = encoded_cache.file_sha256
    monkeypatch.setattr(encoded_cache, "file_sha256", lambda path: hashed.append(path) or original(path))
    prep = prepared(tmp_path)
    assert prep.digest(train) == prep.digest(train) == original(train)
    assert len(hashed) == 1
    prep.start_setup()
    prep.digest(train)
    assert len(hashed) == 2


def test_labels_are_read_from_the_cache_for_the_same_bytes_under_another_name(
        train: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    labels = prepared(tmp_path).labels(train)
    assert labels[0] == "O" and "B-PS" in labels
    renamed = shutil.copy(train, tmp_path / "renamed.tsv")
    monkeypatch.setattr(preparation, "iter_corpus", lambda *a, **k: pytest.fail("the corpus was read again"))
    assert prepared(tmp_path).labels(Path(renamed)) == labels


def test_a_scratch_tokenizer_is_found_again_without_reading_the_corpus(
        train: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = prepared(tmp_path, scratch_tokenizer="syllable").scratch_tokenizer_dir(train)
    monkeypatch.setattr(preparation, "iter_corpus", lambda *a, **k: pytest.fail("the corpus was read again"))
    assert prepared(tmp_path, scratch_tokenizer="syllable").scratch_tokenizer_dir(train) == first
    assert (first / "tokenizer.json").is_file()


def test_a_scratch_tokenizer_needs_the_training_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=re.escape("a scratch tokenizer is trained on the training file: run `fit`, "
                                                  "or give --data.tokenizer")):
        prepared(tmp_path).tokenizer(None, None)


def test_an_unknown_tokenizer_is_one_error_naming_the_option(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-tokenizer"
    with pytest.raises(DataError, match=rf"tokenizer '{re.escape(str(missing))}': neither a local directory .* "
                                        r"pass a local directory with --data.tokenizer"):
        prepared(tmp_path, tokenizer=str(missing)).tokenizer(None, None)
