"""The alignment on a real SentencePiece tokenizer: multilingual-e5-small's XLM-R vocabulary
(250,002 Unigram pieces, ``<s>``/``</s>`` around a sentence, pad id 1), built offline by the
``pretrained_me5`` fixture. Only the tokenizer is loaded."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from ner_lit.alignment.aligner import Aligner
from ner_lit.alignment.collate import pad_windows
from ner_lit.alignment.tokenizers import special_layout
from ner_lit.alignment.windows import IGNORE, SPIECE_UNDERLINE
from ner_lit.corpus.klue import read_klue_tsv, write_klue_tsv
from ner_lit.corpus.records import KLUE_LABELS, Sentence


@pytest.fixture(scope="module")
def tokenizer(pretrained_me5):
    return AutoTokenizer.from_pretrained(pretrained_me5)


@pytest.fixture(scope="module")
def aligner(tokenizer):
    return Aligner(tokenizer, KLUE_LABELS, max_length=128, stride=32)


def pieces(tokenizer, e) -> list[str]:
    return tokenizer.convert_ids_to_tokens([e.windows[w].input_ids[p] for w, p in zip(e.token_window, e.token_pos)])


def test_windows_are_wrapped_in_s_and_slash_s_and_padded_with_id_1(tokenizer, aligner):
    assert (tokenizer.pad_token_id, special_layout(tokenizer)) == (1, ([0], [2]))
    (e,) = aligner.encode([Sentence("s", "김철수는 서울에서 만났다")])
    batch = pad_windows(e.windows + aligner.encode([Sentence("t", "서울")])[0].windows, tokenizer.pad_token_id)
    assert batch["input_ids"][1, 0] == 0 and batch["input_ids"][1, 2] == 2
    assert (batch["input_ids"][1, 3:] == 1).all() and (batch["attention_mask"][1, 3:] == 0).all()
    assert (batch["labels"][1, 3:] == IGNORE).all() and batch["labels"][0, 0] == IGNORE and batch["labels"][0, -1] == IGNORE


def test_a_standalone_underline_owns_nothing_and_the_character_goes_to_its_real_token(tokenizer, aligner):
    # huggingface/transformers#17454: the standalone ▁ before 존 carries 존's offsets, (0, 1).
    s = Sentence.from_entities("s", "존 메이어의 공연", [])
    s.tags[:6] = ["B-PS", "I-PS", "I-PS", "I-PS", "I-PS", "O"]
    raw = tokenizer(s.text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    (e,) = aligner.encode([s])
    assert pieces(tokenizer, e)[:2] == [SPIECE_UNDERLINE, "존"] and [tuple(o) for o in raw[:2]] == [(0, 1), (0, 1)]
    assert [list(map(int, e.offsets[k])) for k in (0, 1)] == [[0, 0], [0, 1]] and e.char_token[0] == 1
    labels = aligner.token_labels(e)
    assert labels[0] == IGNORE and aligner.labels[labels[1]] == "B-PS"
    # decoding reads 존 through its own token, whatever the ▁ position predicts
    logits = torch.zeros(1, len(e.windows[0].input_ids), len(KLUE_LABELS))
    logits[0, 1, aligner.label2id["B-OG"]] = 9.0  # the ▁
    logits[0, 2, aligner.label2id["B-PS"]] = 9.0  # 존
    assert aligner.tag_names(aligner.decode([e], logits).char_tags[0])[0] == "B-PS"


def test_every_character_of_klue_dev_is_owned_by_exactly_one_real_token(tokenizer, aligner, klue_dir):
    sentences = read_klue_tsv(klue_dir / "dev.tsv")[:200]
    encoded = aligner.encode(sentences)
    raw = tokenizer([s.text for s in sentences], add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    doubly = 0
    for s, e, offsets in zip(sentences, encoded, raw):
        covers = np.zeros(len(s.text), dtype=int)
        for a, b in offsets:
            covers[a:b] += 1
        doubly += int((covers > 1).sum())
        names = pieces(tokenizer, e)
        for i, ch in enumerate(s.text):
            k = int(e.char_token[i])
            if ch.isspace():
                assert k == -1, (s.id, i)
                continue
            assert k >= 0 and names[k].strip(SPIECE_UNDERLINE), (s.id, i, names[k] if k >= 0 else None)
            assert e.offsets[k][0] <= i < e.offsets[k][1]
        starts, ends = e.offsets[:, 0], e.offsets[:, 1]
        assert (starts[1:] >= ends[:-1]).all()  # owned spans never overlap
    assert doubly > 100  # the tokenizer itself covers that many characters twice (248 measured)


@pytest.mark.parametrize("text", ["<s>", "</s>", "<pad>", "<mask>", "<unk>", "서울 </s> 부산", "[PAD]", "[CLS] 서울 [SEP]", "a<s>b"])
def test_special_token_spellings_in_text_stay_text(tokenizer, aligner, text):
    (e,) = aligner.encode([Sentence("s", text)])
    ids = [e.windows[w].input_ids[p] for w, p in zip(e.token_window, e.token_pos)]
    assert not set(tokenizer.all_special_ids).intersection(ids), tokenizer.convert_ids_to_tokens(ids)
    assert all(e.char_token[i] >= 0 for i, ch in enumerate(text) if not ch.isspace())


def test_split_special_tokens_alone_would_not_keep_them_text(tokenizer):
    """Why the Aligner keeps its own pipeline: the Unigram model itself matches ``<s>``."""
    ids = tokenizer("<s>", add_special_tokens=False, split_special_tokens=True)["input_ids"]
    assert tokenizer.bos_token_id in ids


def test_training_data_with_special_spellings_is_encoded_as_text(tmp_path, monkeypatch, pretrained_me5):
    from ner_lit.data.datamodule import NERDataModule

    monkeypatch.setenv("NER_LIT_CACHE", str(tmp_path / "cache"))
    s = Sentence.from_entities("s", "<s> 서울 </s> <mask>", [])
    s.tags[4:6] = ["B-LC", "I-LC"]
    for name in ("train", "dev"):
        write_klue_tsv([s], tmp_path / f"{name}.tsv")
    dm = NERDataModule(data_dir=str(tmp_path), tokenizer=str(pretrained_me5), max_length=32, stride=4)
    dm.setup("fit")
    (window,) = dm.train_windows
    assert window.input_ids[0] == 0 and window.input_ids[-1] == 2
    assert not {0, 1, 2, 3, 250001}.intersection(window.input_ids[1:-1])
    assert sum(row.count(dm.aligner.label2id["B-LC"]) for row in window.labels) == 1  # one label per character slot
    batch = dm.collate_train([window, dm.aligner.encode([Sentence("t", "서울")])[0].windows[0]])
    assert (batch["input_ids"][1, 3:] == 1).all()


@pytest.mark.parametrize("rule, f1c, f1e", [("first_char", 99.0870, 92.2989), ("first_entity", 98.9539, 92.1045)])
def test_alignment_ceiling_on_klue_dev_does_not_fall(tokenizer, klue_dir, alignment_ceiling, rule, f1c, f1e):
    """Gold characters -> token labels -> characters, scored officially (README figures:
    first_char 99.09 / 92.30, first_entity 98.95 / 92.10)."""
    sentences = read_klue_tsv(klue_dir / "dev.tsv")
    got_c, got_e = alignment_ceiling(Aligner(tokenizer, KLUE_LABELS, max_length=128, stride=32, label_rule=rule), sentences)
    assert got_c >= f1c
    assert got_e >= f1e
