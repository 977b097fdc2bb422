"""Specifications of the from-scratch tokenizers, the scratch BERT config and the tokenizer cache."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from ner_lit.data import scratch as scratch
from ner_lit.data.scratch import build_tokenizer, cached_tokenizer, scratch_bert_config

REPO = Path(__file__).resolve().parents[2]

# Small Korean corpus: each sentence twice, so min_frequency=2 keeps its characters.
SENTENCES = [
    "특히 영동고속도로 강릉 방향 문막휴게소에서 만종분기점까지 5km 구간에는 승용차 전용 임시 갓길차로제를 운영하기로 했다.",
    "경찰은 서울 강남구에서 KBS 기자를 만났다.",
    "이순신 장군은 1545년 한성에서 태어났다.",
    "삼성전자는 오늘 오후 3시 신제품을 발표했다.",
]
TEXTS = SENTENCES * 2
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def klue_texts(path: Path) -> list[str]:
    """Sentence texts of a KLUE-NER TSV: one `<char>\\t<tag>` line per character, `##` header
    lines, blank lines between sentences."""
    texts: list[str] = []
    chars: list[str] = []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if line.startswith("##"):
            continue
        if line == "":
            if chars:
                texts.append("".join(chars))
            chars = []
            continue
        chars.append(line.split("\t")[0])
    if chars:
        texts.append("".join(chars))
    return texts


def saved_files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


# --- both kinds -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["wordpiece", "syllable"])
def test_special_tokens_take_ids_0_to_4(kind: str) -> None:
    tok = build_tokenizer(TEXTS, kind)
    assert tok.convert_tokens_to_ids(SPECIALS) == [0, 1, 2, 3, 4]
    assert (tok.pad_token, tok.unk_token, tok.cls_token, tok.sep_token, tok.mask_token) == tuple(SPECIALS)


@pytest.mark.parametrize("kind", ["wordpiece", "syllable"])
def test_encoding_wraps_the_sentence_in_cls_and_sep_by_default(kind: str) -> None:
    tok = build_tokenizer(TEXTS, kind)
    ids = tok("경찰은 서울")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert ids[1:-1] == tok("경찰은 서울", add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("kind", ["wordpiece", "syllable"])
def test_tokenizer_is_fast_with_model_max_length_512(kind: str) -> None:
    tok = build_tokenizer(TEXTS, kind)
    assert tok.is_fast
    assert tok.model_max_length == 512


@pytest.mark.parametrize("kind", ["wordpiece", "syllable"])
def test_two_builds_save_byte_identical_files(kind: str, tmp_path: Path) -> None:
    build_tokenizer(TEXTS, kind).save_pretrained(tmp_path / "a")
    build_tokenizer(TEXTS, kind).save_pretrained(tmp_path / "b")
    assert saved_files(tmp_path / "a") == saved_files(tmp_path / "b")


@pytest.mark.parametrize("kind", ["wordpiece", "syllable"])
def test_saved_tokenizer_reloads_with_autotokenizer_and_encodes_alike(kind: str, tmp_path: Path) -> None:
    tok = build_tokenizer(TEXTS, kind)
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "경찰은 서울 강남구에서 鬱 기자를 만났다."
    assert loaded(text, return_offsets_mapping=True) == tok(text, return_offsets_mapping=True)


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="bpe"):
        build_tokenizer(TEXTS, "bpe")  # type: ignore[arg-type]


def test_builds_in_two_processes_with_different_hash_seeds_save_identical_files(
    klue_dir: Path, tmp_path: Path
) -> None:
    corpus = tmp_path / "texts.json"
    corpus.write_text(json.dumps(klue_texts(klue_dir / "train.tsv")[:300], ensure_ascii=False), encoding="utf-8")
    script = (
        "import json, sys; from pathlib import Path; from ner_lit.data.scratch import build_tokenizer\n"
        "texts = json.loads(Path(sys.argv[1]).read_text(encoding='utf-8'))\n"
        "for kind in ('wordpiece', 'syllable'):\n"
        "    build_tokenizer(texts, kind, vocab_size=2000).save_pretrained(Path(sys.argv[2]) / kind)\n"
    )
    runs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        cmd = [sys.executable, "-c", script, str(corpus), str(tmp_path / seed)]
        runs.append(subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE))
    for run in runs:
        _, err = run.communicate(timeout=120)
        assert run.returncode == 0, err.decode()
    for kind in ("wordpiece", "syllable"):
        assert saved_files(tmp_path / "1" / kind) == saved_files(tmp_path / "2" / kind)


# --- wordpiece --------------------------------------------------------------------------


def test_wordpiece_vocabulary_equals_the_reference_model(klue_dir: Path, reference_model: Path) -> None:
    tok = build_tokenizer(klue_texts(klue_dir / "train.tsv"), "wordpiece", vocab_size=8000, min_frequency=2)
    reference = json.loads((reference_model / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    assert tok.get_vocab() == reference


def test_wordpiece_offsets_cover_exactly_the_characters_of_each_token() -> None:
    tok = build_tokenizer(TEXTS, "wordpiece")
    text = SENTENCES[1]
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    for token, (start, end) in zip(tok.convert_ids_to_tokens(enc["input_ids"]), enc["offset_mapping"]):
        assert text[start:end] == token.removeprefix("##")


def test_wordpiece_keeps_case_and_whole_hangul_syllables() -> None:
    tok = build_tokenizer(TEXTS, "wordpiece")
    pieces = "".join(t.removeprefix("##") for t in tok.tokenize("KBS 경찰은"))
    assert pieces == "KBS경찰은"


# --- syllable ---------------------------------------------------------------------------


def test_syllable_every_non_space_character_is_one_token_with_its_own_offsets() -> None:
    tok = build_tokenizer(TEXTS, "syllable")
    text = SENTENCES[0]
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    expected = [(i, i + 1) for i, c in enumerate(text) if c != " "]
    assert [tuple(o) for o in enc["offset_mapping"]] == expected
    assert tok.convert_ids_to_tokens(enc["input_ids"]) == [text[s:e] for s, e in expected]


def test_syllable_whitespace_produces_no_token() -> None:
    tok = build_tokenizer(TEXTS, "syllable")
    ids = tok("경찰 \t 서울\n", add_special_tokens=False)["input_ids"]
    assert ids == tok.convert_tokens_to_ids(["경", "찰", "서", "울"])


def test_syllable_unknown_character_is_one_unk_with_its_own_offset() -> None:
    tok = build_tokenizer(TEXTS, "syllable")
    enc = tok("서鬱울", add_special_tokens=False, return_offsets_mapping=True)
    assert tok.convert_ids_to_tokens(enc["input_ids"]) == ["서", "[UNK]", "울"]
    assert [tuple(o) for o in enc["offset_mapping"]] == [(0, 1), (1, 2), (2, 3)]


def test_syllable_character_seen_less_than_min_frequency_is_unknown() -> None:
    tok = build_tokenizer(TEXTS + ["뷁"], "syllable", min_frequency=2)
    assert "뷁" not in tok.get_vocab()
    assert "뷁" in build_tokenizer(TEXTS + ["뷁"], "syllable", min_frequency=1).get_vocab()


def test_syllable_vocabulary_orders_characters_by_count_then_code_point() -> None:
    tok = build_tokenizer(["나나나 가가 다다 라"], "syllable", min_frequency=1)
    assert tok.convert_ids_to_tokens(list(range(len(tok)))) == SPECIALS + ["나", "가", "다", "라"]


def test_syllable_vocab_size_counts_the_special_tokens() -> None:
    tok = build_tokenizer(["나나나 가가 다다 라"], "syllable", vocab_size=7, min_frequency=1)
    assert tok.convert_ids_to_tokens(list(range(len(tok)))) == SPECIALS + ["나", "가"]


# --- scratch_bert_config ----------------------------------------------------------------


def test_scratch_bert_config_maps_labels_both_ways() -> None:
    config = scratch_bert_config(1282, ["O", "B-PS", "I-PS"])
    assert config.id2label == {0: "O", 1: "B-PS", 2: "I-PS"}
    assert config.label2id == {"O": 0, "B-PS": 1, "I-PS": 2}
    assert config.num_labels == 3


def test_scratch_bert_config_defaults_to_the_reference_model_size() -> None:
    config = scratch_bert_config(8000, ["O"])
    sizes = (config.vocab_size, config.hidden_size, config.num_hidden_layers, config.num_attention_heads)
    assert sizes == (8000, 256, 4, 4)
    assert (config.intermediate_size, config.max_position_embeddings, config.pad_token_id) == (1024, 512, 0)


def test_scratch_bert_config_intermediate_size_defaults_to_four_times_hidden() -> None:
    assert scratch_bert_config(100, ["O"], hidden_size=64, num_heads=2).intermediate_size == 256


def test_scratch_bert_config_rejects_hidden_size_not_divisible_by_heads() -> None:
    with pytest.raises(ValueError, match="num_heads"):
        scratch_bert_config(100, ["O"], hidden_size=100, num_heads=3)


# --- cached_tokenizer -------------------------------------------------------------------


@pytest.fixture
def count_builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records the kind of every real build cached_tokenizer makes."""
    calls: list[str] = []
    real = scratch.build_tokenizer

    def counting(texts, kind="wordpiece", *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(kind)
        return real(texts, kind, *args, **kwargs)

    monkeypatch.setattr(scratch, "build_tokenizer", counting)
    return calls


def test_cache_miss_builds_a_loadable_tokenizer_directory(tmp_path: Path, count_builds: list[str]) -> None:
    directory = cached_tokenizer(TEXTS, "syllable", cache_dir=tmp_path)
    assert count_builds == ["syllable"]
    assert directory.parent == tmp_path
    assert AutoTokenizer.from_pretrained(directory).get_vocab() == build_tokenizer(TEXTS, "syllable").get_vocab()


def test_cache_hit_returns_the_same_directory_without_rebuilding(tmp_path: Path, count_builds: list[str]) -> None:
    first = cached_tokenizer(TEXTS, "syllable", cache_dir=tmp_path)
    second = cached_tokenizer(list(TEXTS), "syllable", cache_dir=tmp_path)
    assert second == first
    assert count_builds == ["syllable"]


@pytest.mark.parametrize(
    "change",
    [
        {"texts": SENTENCES},
        {"kind": "wordpiece"},
        {"vocab_size": 100},
        {"min_frequency": 1},
        {"limit_alphabet": 10},
    ],
)
def test_cache_key_changes_with_texts_kind_and_every_parameter(tmp_path: Path, change: dict) -> None:
    base = {"texts": TEXTS, "kind": "syllable", "vocab_size": 8000, "min_frequency": 2, "limit_alphabet": 1000}
    assert cached_tokenizer(**base, cache_dir=tmp_path) != cached_tokenizer(**{**base, **change}, cache_dir=tmp_path)


def test_cache_key_depends_on_the_recipe_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = cached_tokenizer(TEXTS, "syllable", cache_dir=tmp_path)
    monkeypatch.setattr(scratch, "SCRATCH_RECIPE_VERSION", scratch.SCRATCH_RECIPE_VERSION + 1)
    assert cached_tokenizer(TEXTS, "syllable", cache_dir=tmp_path) != before


def test_cache_key_tells_sentence_boundaries_apart() -> None:
    key = scratch.tokenizer_key
    assert key(["ab", "c"], "syllable", 8000, 2, 1000) != key(["a", "bc"], "syllable", 8000, 2, 1000)


def test_failed_build_leaves_nothing_in_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("trainer crashed")

    monkeypatch.setattr(scratch, "build_tokenizer", failing)
    with pytest.raises(RuntimeError, match="trainer crashed"):
        cached_tokenizer(TEXTS, "syllable", cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_successful_build_leaves_only_the_final_directory(tmp_path: Path) -> None:
    directory = cached_tokenizer(TEXTS, "syllable", cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == [directory]
