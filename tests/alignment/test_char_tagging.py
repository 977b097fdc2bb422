"""Character tagging: an entity starts and ends at any character, whatever the tokenizer.

Korean writes particles and endings fused to the word before them (``김철수는``, ``서울에서``),
so a tokenizer often puts an entity's last characters and a particle into one token. Under
``char`` tagging every character a token owns has its own row of label scores.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from ner_lit.alignment.aligner import Aligner
from ner_lit.alignment.answers import entities_from_tags
from ner_lit.alignment.windows import DEFAULT_CHAR_SLOTS, IGNORE
from ner_lit.checkpoint.spec import DEFAULT_CHAR_SLOTS as SPEC_DEFAULT_CHAR_SLOTS
from ner_lit.corpus.formats import read_corpus
from ner_lit.corpus.klue import read_klue_tsv
from ner_lit.corpus.records import KLUE_LABELS, Sentence
from ner_lit.data.cache import EntryWriter
from ner_lit.data.datasets import EvalSentences, TrainWindows, encode_into
from ner_lit.resources import package_path

#: "경찰은" is one token of the reference WordPiece vocabulary: an entity (경찰) and a particle (은).
POLICE = Sentence("s", "경찰은 서울에서", ["B-OG", "I-OG", "O", "O", "B-LC", "I-LC", "O", "O"])


@pytest.fixture(scope="module")
def tokenizer(reference_model):
    return AutoTokenizer.from_pretrained(reference_model)


def slot_logits(aligner: Aligner, encoded, tail: dict[tuple[int, int], str] | None = None) -> torch.Tensor:
    """Logits that make each window predict its own character labels (O where it has none);
    ``tail`` sets (window, position) -> the tag every slot of that token predicts."""
    windows = [w for e in encoded for w in e.windows]
    width = max(len(w.input_ids) for w in windows)
    k, n = aligner.char_slots.slots, len(aligner.labels)
    logits = torch.zeros(len(windows), width, k, n)
    logits[..., aligner.outside_id] = 1.0
    for r, w in enumerate(windows):
        for p, row in enumerate(np.asarray(w.labels)):
            for s, lab in enumerate(row.tolist()):
                if lab != IGNORE:
                    logits[r, p, s] = 0
                    logits[r, p, s, lab] = 5.0
    for (r, p), tag in (tail or {}).items():
        logits[r, p] = 0
        logits[r, p, :, aligner.label2id[tag]] = 5.0
    return logits.reshape(len(windows), width, k * n)


def test_the_default_slot_count_is_the_same_in_the_spec_and_the_alignment() -> None:
    assert SPEC_DEFAULT_CHAR_SLOTS == DEFAULT_CHAR_SLOTS


def test_a_token_has_a_label_per_character_it_owns(tokenizer) -> None:
    al = Aligner(tokenizer, KLUE_LABELS, max_length=32, stride=8, tagging="char", char_slots=4)
    (e,) = al.encode([POLICE])
    labels = np.asarray(e.windows[0].labels)
    assert labels.shape == (len(e.windows[0].input_ids), 4)
    assert (labels[0] == IGNORE).all() and (labels[-1] == IGNORE).all()  # [CLS], [SEP]
    names = [[al.labels[x] if x != IGNORE else "-" for x in row] for row in labels[1:-1].tolist()]
    assert names == [["B-OG", "I-OG", "O", "-"], ["B-LC", "I-LC", "-", "-"], ["O", "O", "-", "-"]]  # 경찰은 서울 ##에서


def test_a_particle_fused_to_a_name_stays_outside_the_entity(tokenizer) -> None:
    al = Aligner(tokenizer, KLUE_LABELS, max_length=32, stride=8, tagging="char")
    encoded = al.encode([POLICE])
    decoded = al.decode(encoded, slot_logits(al, encoded))
    tags = al.tag_names(decoded.char_tags[0])
    assert tags == POLICE.tags
    spans = [(x.text, x.label, x.start, x.end) for x in entities_from_tags(POLICE.text, tags)]
    assert spans == [("경찰", "OG", 0, 2), ("서울", "LC", 4, 6)]
    # the per-token list (/api's "result") shows each token's first character's tag
    assert al.tag_names(decoded.token_tags[0]) == ["B-OG", "B-LC", "O"]


def test_token_tagging_still_joins_the_particle_to_the_entity(tokenizer) -> None:
    al = Aligner(tokenizer, KLUE_LABELS, max_length=32, stride=8, tagging="token")
    (e,) = al.encode([POLICE])
    (tags,) = al.decode_labels([e], [al.token_labels(e)])
    assert al.tag_names(tags)[:3] == ["B-OG", "I-OG", "I-OG"]


def test_characters_past_the_last_slot_continue_its_tag(tokenizer) -> None:
    al = Aligner(tokenizer, KLUE_LABELS, max_length=32, stride=8, tagging="char", char_slots=2)
    encoded = al.encode([POLICE])
    # every slot of 경찰은 (window 0, position 1) says B-OG: its third character, past the slots,
    # continues the second one's entity and never opens a new one
    decoded = al.decode(encoded, slot_logits(al, encoded, tail={(0, 1): "B-OG"}))
    assert al.tag_names(decoded.char_tags[0])[:3] == ["B-OG", "B-OG", "I-OG"]
    (gold,) = al.decode_labels(encoded, [al.token_labels(e) for e in encoded])
    assert al.tag_names(gold)[:3] == ["B-OG", "I-OG", "I-OG"]
    # one slot: every later character continues the first one's B-OG, as under token tagging
    one = Aligner(tokenizer, KLUE_LABELS, max_length=32, stride=8, tagging="char", char_slots=1)
    encoded = one.encode([POLICE])
    (gold,) = one.decode_labels(encoded, [one.token_labels(e) for e in encoded])
    assert one.tag_names(gold)[:3] == ["B-OG", "I-OG", "I-OG"]


def test_the_character_path_is_valid_iob2(tokenizer) -> None:
    al = Aligner(tokenizer, KLUE_LABELS, max_length=32, stride=8, tagging="char")
    s = Sentence("s", "경찰은", ["O", "O", "O"])
    encoded = al.encode([s])
    logits = slot_logits(al, encoded).reshape(1, -1, DEFAULT_CHAR_SLOTS, len(KLUE_LABELS))
    logits[0, 1, 1] = 0
    logits[0, 1, 1, al.label2id["I-PS"]] = 5.0  # an I-PS after an O: invalid on its own
    decoded = al.decode(encoded, logits.reshape(1, logits.shape[1], -1))
    tags = al.tag_names(decoded.char_tags[0])
    assert not any(t.startswith("I-") and (i == 0 or tags[i - 1] == "O") for i, t in enumerate(tags))
    argmax = Aligner(tokenizer, KLUE_LABELS, max_length=32, stride=8, tagging="char", decoding="argmax")
    assert argmax.tag_names(argmax.decode(encoded, logits.reshape(1, logits.shape[1], -1)).char_tags[0])[1] == "I-PS"


def test_cached_windows_carry_the_labels_the_direct_encoding_gives(tokenizer) -> None:
    """The training and evaluation windows built from the encoded cache (several windows per
    sentence here) equal :meth:`Aligner.encode`'s, label for label."""
    al = Aligner(tokenizer, KLUE_LABELS, max_length=8, stride=2, tagging="char", char_slots=3)
    text = "경찰은 서울에서 김철수를 만났다. 삼성전자는 3월 5일 부산에서 발표했다."
    tags = ["O"] * len(text)
    for start, end, kind in ((0, 2, "OG"), (4, 6, "LC"), (9, 12, "PS"), (19, 23, "OG"), (29, 31, "LC")):
        tags[start:end] = [f"B-{kind}"] + [f"I-{kind}"] * (end - start - 1)
    sentences = [Sentence("a", text, tags), POLICE]
    direct = al.encode(sentences)
    assert len(direct[0].windows) >= 2
    writer = EntryWriter(None, True)
    encode_into(writer, al, sentences, True)
    entry = writer.in_memory()
    train = TrainWindows(entry, al.char_slots)
    want = [w for e in direct for w in e.windows]
    assert len(train) == len(want)
    for got, w in zip(train, want):
        assert got.input_ids == w.input_ids
        assert np.array_equal(np.asarray(got.labels), np.asarray(w.labels))
    evaluation = EvalSentences(entry, KLUE_LABELS, al.char_slots)
    for i, e in enumerate(direct):
        for got, w in zip(evaluation[i].encoded.windows, e.windows):
            assert np.array_equal(np.asarray(got.labels), np.asarray(w.labels))


def test_a_long_sentence_decodes_every_character_through_its_predicting_window(tokenizer) -> None:
    al = Aligner(tokenizer, KLUE_LABELS, max_length=12, stride=3, tagging="char")
    text = " ".join(["경찰은 서울에서"] * 6)
    tags = (POLICE.tags + ["O"]) * 6
    s = Sentence("s", text, tags[: len(text)])
    encoded = al.encode([s])
    assert len(encoded[0].windows) > 2
    decoded = al.decode(encoded, slot_logits(al, encoded))
    assert al.tag_names(decoded.char_tags[0]) == s.tags


def _quickstart_tokenizer():
    from ner_lit.data.scratch import build_tokenizer

    sample = read_corpus(package_path("sample/train.tsv"))
    return build_tokenizer([s.text for s in sample], "wordpiece", 8000)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["multilingual-e5-small", "quickstart"])
def test_the_default_tagging_can_be_exact_on_klue_dev(which, klue_dir, alignment_ceiling, request) -> None:
    """The ceiling (gold characters -> the default tagging's labels -> characters) on all of KLUE dev:
    at least 99.5 entity F1 for both the pretrained SentencePiece and the quickstart's WordPiece,
    where token tagging loses 8 and 23 points."""
    tok = (AutoTokenizer.from_pretrained(request.getfixturevalue("pretrained_me5")) if which != "quickstart"
           else _quickstart_tokenizer())
    dev = read_klue_tsv(klue_dir / "dev.tsv")
    char_c, char_e = alignment_ceiling(Aligner(tok, KLUE_LABELS, 128, 32, tagging="char"), dev)
    token_c, token_e = alignment_ceiling(Aligner(tok, KLUE_LABELS, 128, 32, tagging="token"), dev)
    assert char_e >= 99.5 and char_c >= 99.9, (char_c, char_e)
    assert char_e > token_e + 5, (token_e, char_e)


# --------------------------------------------------------------------------- taggers written before format 3
def _as_format_2(record: dict) -> dict:
    """A tagger record as ner_lit wrote it before the tagging unit existed."""
    old = {k: v for k, v in record.items() if k not in ("tagging", "char_slots")}
    old["format"] = 2
    return old


def _answers(predictor, texts: list[str]) -> list[dict]:
    return [p.to_dict() for p in predictor.predict(texts)]


def test_a_format_2_checkpoint_tags_tokens_and_answers_as_before(token_run, tmp_path) -> None:
    from ner_lit.inference.predictor import Predictor

    best, texts = token_run.best, [s.text for s in read_corpus(token_run.data_dir / "dev.tsv")]
    ckpt = torch.load(best, map_location="cpu", weights_only=True)
    assert ckpt["ner_lit"]["tagging"] == "token" and ckpt["ner_lit"]["format"] == 3
    ckpt["ner_lit"] = _as_format_2(ckpt["ner_lit"])
    torch.save(ckpt, tmp_path / "old.ckpt")
    old, current = Predictor.from_checkpoint(tmp_path / "old.ckpt"), Predictor.from_checkpoint(best)
    assert old.aligner.tagging == "token" and old.aligner.num_outputs == len(old.labels)
    assert _answers(old, texts) == _answers(current, texts)


def test_a_format_2_exported_directory_tags_tokens_and_answers_as_before(token_run, tmp_path) -> None:
    import json
    import shutil

    from ner_lit.inference.predictor import Predictor

    hf_dir, texts = token_run.run_dir / "hf_model", [s.text for s in read_corpus(token_run.data_dir / "dev.tsv")]
    old_dir = tmp_path / "old"
    shutil.copytree(hf_dir, old_dir)
    record = json.loads((old_dir / "ner_lit.json").read_text(encoding="utf-8"))
    assert record["tagging"] == "token"
    (old_dir / "ner_lit.json").write_text(json.dumps(_as_format_2(record)), encoding="utf-8")
    old, current = Predictor.from_pretrained(old_dir), Predictor.from_pretrained(hf_dir)
    assert old.aligner.tagging == "token"
    assert _answers(old, texts) == _answers(current, texts)


def test_an_exported_char_tagger_says_how_it_decodes(trained_run) -> None:
    import json

    from ner_lit.inference.predictor import Predictor

    record = json.loads((trained_run.run_dir / "hf_model" / "ner_lit.json").read_text(encoding="utf-8"))
    config = json.loads((trained_run.run_dir / "hf_model" / "config.json").read_text(encoding="utf-8"))
    assert (record["tagging"], record["char_slots"]) == ("char", DEFAULT_CHAR_SLOTS)
    assert len(config["id2label"]) == DEFAULT_CHAR_SLOTS * len(record["labels"])
    assert config["id2label"]["1"] == f"{record['labels'][1]}@0"
    predictor = Predictor.from_pretrained(trained_run.run_dir / "hf_model")
    assert predictor.aligner.tagging == "char"


# --------------------------------------------------------------------------- the README's showcase sentence
SHOWCASE = "김철수는 3월 5일 서울에서 삼성전자를 방문했다."
SHOWCASE_ENTITIES = [("김철수", "PS", 0, 3), ("3월 5일", "DT", 5, 10), ("서울", "LC", 11, 13), ("삼성전자", "OG", 16, 20)]


def _showcase_sentence() -> Sentence:
    tags = ["O"] * len(SHOWCASE)
    for _, label, start, end in SHOWCASE_ENTITIES:
        tags[start:end] = [f"B-{label}"] + [f"I-{label}"] * (end - start - 1)
    tags[7] = "I-DT"  # the space inside the date, as KLUE tags it
    return Sentence("showcase", SHOWCASE, tags)


@pytest.mark.parametrize("tagging, want", [
    ("char", SHOWCASE_ENTITIES),
    # one label per token: `수는`, `를`... the particle joins the name (the tokenizer splits 에서 and 를 off)
    ("token", [("김철수는", "PS", 0, 4)] + SHOWCASE_ENTITIES[1:]),
])
def test_the_showcase_sentence_through_the_pretrained_tokenizer(pretrained_me5, tagging, want) -> None:
    """What a model that predicts every label right answers, through multilingual-e5-small's
    tokenizer (``▁김 철 수는 ▁3 월 ▁5 일 ▁서울 에서 ▁삼성전자 를 ▁방문 했다 .``), from the logits to the
    answer's entities: only character tagging can give ``김철수``. (A trained model's answers are
    bench/boundaries.py's: the configs/me5.yaml recipe answers these four entities.)"""
    from ner_lit.alignment.answers import answer

    tok = AutoTokenizer.from_pretrained(pretrained_me5)
    al = Aligner(tok, KLUE_LABELS, 128, 32, tagging=tagging)
    encoded = al.encode([_showcase_sentence()])
    if tagging == "char":
        logits = slot_logits(al, encoded)
    else:
        (w,) = encoded[0].windows
        logits = torch.zeros(1, len(w.input_ids), len(KLUE_LABELS))
        logits[0, :, al.outside_id] = 1.0
        for p, lab in enumerate(w.labels):
            if lab != IGNORE:
                logits[0, p] = 0
                logits[0, p, lab] = 5.0
    decoded = al.decode(encoded, logits)
    got = answer(SHOWCASE, al.tag_names(decoded.char_tags[0]), decoded.char_probs[0].tolist())["entities"]
    assert [(e["text"], e["label"], e["start"], e["end"]) for e in got] == want
