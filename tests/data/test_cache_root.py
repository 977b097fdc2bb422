"""One cache root for every cache ner_lit keeps (downloads, tokenizers, encoded windows, CLI answers)."""
from __future__ import annotations

from pathlib import Path

from ner_lit.checkpoint.tokenizer import default_cache_dir
from ner_lit.cli import cache as cli_cache
from ner_lit.resources import cache_root


def test_ner_lit_cache_wins_over_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("NER_LIT_CACHE", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "mine"


def test_xdg_cache_home_holds_the_cache_when_ner_lit_cache_is_unset(monkeypatch, tmp_path):
    monkeypatch.delenv("NER_LIT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "ner_lit"


def test_without_either_variable_the_cache_is_under_the_home_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("NER_LIT_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_root() == Path(tmp_path) / ".cache" / "ner_lit"


def test_training_caches_and_the_cli_cache_share_the_root(monkeypatch, tmp_path):
    monkeypatch.delenv("NER_LIT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "ner_lit"
    assert cli_cache.cache_dir() == tmp_path / "ner_lit" / "cli"
