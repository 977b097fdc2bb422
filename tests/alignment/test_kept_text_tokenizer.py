"""The aligner's copy of a large tokenizer kept on disk: built once, loaded by later processes, the same
pieces either way, and never trusted when its file does not match its record."""
from __future__ import annotations

import json

import pytest

from ner_lit.alignment import tokenizers
from ner_lit.alignment.tokenizers import text_tokenizer

TEXTS = ["김철수는 3월 5일 서울에서 삼성전자를 방문했다.", "a [CLS] b [SEP] c", "<s> </s> <pad>"]


@pytest.fixture
def keep_all(monkeypatch: pytest.MonkeyPatch, tmp_path):
    monkeypatch.setattr(tokenizers, "KEEP_MIN_CHARS", 0)
    monkeypatch.setenv("NER_LIT_CACHE", str(tmp_path))
    return tmp_path / "text-tokenizers"


def fresh(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)  # a new object: not in the in-process memo


def pieces(copy) -> list:
    return [copy.encode(t, add_special_tokens=False).ids for t in TEXTS]


def test_a_kept_copy_is_loaded_by_the_next_process_and_tokenizes_alike(tiny_model_dir, keep_all, monkeypatch):
    built, markers = text_tokenizer(fresh(tiny_model_dir))
    assert len(list(keep_all.glob("*.record.json"))) == 1
    second = fresh(tiny_model_dir)
    monkeypatch.setattr(tokenizers.json, "loads", _refuse_parse(tokenizers.json.loads))
    loaded, kept_markers = text_tokenizer(second)
    assert pieces(loaded) == pieces(built)
    assert kept_markers.tolist() == markers.tolist()


def _refuse_parse(real):
    """json.loads that refuses the tokenizer's own JSON: the copy must come from the kept file."""
    def loads(text, *args, **kwargs):
        if isinstance(text, str) and '"model"' in text and '"vocab"' in text:
            raise AssertionError("the tokenizer was parsed again")
        return real(text, *args, **kwargs)
    return loads


def test_a_kept_copy_that_does_not_match_its_record_is_built_again(tiny_model_dir, keep_all):
    built, _ = text_tokenizer(fresh(tiny_model_dir))
    (kept,) = [p for p in keep_all.glob("*.json") if not p.name.endswith(".record.json")]
    spec = json.loads(kept.read_text(encoding="utf-8"))
    spec["model"]["vocab"] = {"[UNK]": 0}  # another tokenizer, same name
    kept.write_text(json.dumps(spec), encoding="utf-8")
    again, _ = text_tokenizer(fresh(tiny_model_dir))
    assert pieces(again) == pieces(built)


def test_a_small_tokenizer_is_not_kept(tiny_model_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("NER_LIT_CACHE", str(tmp_path))
    text_tokenizer(fresh(tiny_model_dir))
    assert not (tmp_path / "text-tokenizers").exists()
