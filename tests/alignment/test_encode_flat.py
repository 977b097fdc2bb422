"""Aligner.encode_flat, the encoded cache's chunk encoder (array operations over a whole chunk),
gives exactly the windows, labels, offsets and maps that Aligner.encode gives sentence by sentence."""
from __future__ import annotations

import sys

import numpy as np
import pytest
from transformers import AutoTokenizer

from ner_lit.alignment.aligner import Aligner
from ner_lit.alignment.tokenizers import _SPACE, _space_mask
from ner_lit.corpus.klue import read_klue_tsv
from ner_lit.corpus.records import KLUE_LABELS, Sentence

#: Texts at the edges of the rules: empty and whitespace-only texts, edge and inner whitespace of
#: every kind, special-token spellings, characters the vocabularies lack, a sentence of many windows.
EDGE_TEXTS = ["", " ", "   \t ", " 서울 \t 부산 ", "\u3000서울\u00a0부산\u2028끝", "a <s> </s> <pad> <mask> [CLS] [SEP] [PAD] b",
              "🙂🙂 서울 ☃", "  . , !  ", " ".join(["서울에서 만났다"] * 90), "가" * 400]


def per_sentence(aligner: Aligner, sentences: list[Sentence], with_labels: bool) -> dict[str, np.ndarray | None]:
    """Aligner.encode's output (one EncodedSentence per sentence) concatenated as encode_flat lays it out."""
    encoded = aligner.encode(sentences, with_labels=with_labels)
    windows = [w for e in encoded for w in e.windows]

    def cat(parts, inner=()):
        return np.concatenate([np.asarray(p, dtype=np.int64).reshape(-1, *inner) for p in parts])

    return {
        "n_windows": np.array([len(e.windows) for e in encoded]),
        "n_tokens": np.array([e.num_tokens for e in encoded]),
        "n_chars": np.array([e.text_length for e in encoded]),
        "window_length": np.array([len(w.input_ids) for w in windows]),
        "window_sentence": np.array([w.sentence for w in windows]),
        "input_ids": cat([w.input_ids for w in windows]),
        "labels": cat([w.labels for w in windows]) if with_labels else None,
        "offsets": cat([e.offsets for e in encoded], (2,)),
        "token_window": cat([e.token_window for e in encoded]),
        "token_pos": cat([e.token_pos for e in encoded]),
        "char_token": cat([e.char_token for e in encoded]),
        "char_tags": np.array([aligner.label2id[t] for s in sentences for t in s.tags]) if with_labels else None,
    }


#: KLUE dev sentences compared: every entity type, many spellings of each, in a fraction of the time all 5,000 take.
DEV_SENTENCES = 1500


@pytest.fixture(scope="module")
def sentences(klue_dir) -> list[Sentence]:
    """The first KLUE dev sentences (real text, entities of every type) and the edge texts, tagged O."""
    dev = read_klue_tsv(klue_dir / "dev.tsv")[:DEV_SENTENCES]
    assert {t[2:] for s in dev for t in s.tags if t != "O"} == {k[2:] for k in KLUE_LABELS if k != "O"}
    return dev + [Sentence(f"edge{i}", t) for i, t in enumerate(EDGE_TEXTS)]


@pytest.fixture(scope="module")
def tokenizers(request) -> dict[str, object]:
    """One tokenizer per model for the module (the SentencePiece one takes seconds to load)."""
    return {name: AutoTokenizer.from_pretrained(request.getfixturevalue(name)) for name in ("reference_model", "pretrained_me5")}


@pytest.mark.parametrize("model", ["reference_model", "pretrained_me5"])
@pytest.mark.parametrize("max_length, stride, label_rule, with_labels", [
    (128, 32, "first_char", True),  # the defaults: one window per KLUE sentence, a few edge texts longer
    (24, 6, "first_entity", True),  # many sentences of several windows
    (12, 0, "first_char", False),  # no overlap; no gold tags
])
def test_flat_encoding_equals_the_per_sentence_encoding(tokenizers, sentences, model, max_length, stride, label_rule,
                                                        with_labels) -> None:
    tokenizer = tokenizers[model]
    aligner = Aligner(tokenizer, KLUE_LABELS, max_length=max_length, stride=stride, label_rule=label_rule)
    flat = aligner.encode_flat(sentences, with_labels=with_labels)
    for name, expected in per_sentence(aligner, sentences, with_labels).items():
        got = getattr(flat, name)
        if expected is None:
            assert got is None, name
        else:
            assert got.shape == expected.shape, name
            np.testing.assert_array_equal(got, expected, err_msg=name)
    # the cases the comparison must have met
    assert (flat.n_windows > 1).any() and (flat.n_tokens == 0).any()
    if model == "pretrained_me5":  # standalone ▁ tokens (offsets duplicating the next token's), owning nothing
        assert np.isin(flat.input_ids, aligner.marker_ids).any()
        assert (flat.offsets[:, 0] == flat.offsets[:, 1]).any()


def test_flat_encoding_of_no_sentences_is_empty(reference_model) -> None:
    aligner = Aligner(AutoTokenizer.from_pretrained(reference_model), KLUE_LABELS)
    flat = aligner.encode_flat([])
    assert len(flat.n_windows) == len(flat.input_ids) == len(flat.offsets) == len(flat.char_token) == 0


def test_space_mask_is_str_isspace_for_every_code_point() -> None:
    assert not any(chr(c).isspace() for c in range(len(_SPACE), sys.maxunicode + 1))
    text = "".join(chr(c) for c in range(len(_SPACE) + 2)) + "\U0001f642\udc80"  # a lone surrogate too
    assert _space_mask(text).tolist() == [c.isspace() for c in text]
