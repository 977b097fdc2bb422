"""The Decoder on its own, over a hand-made encoding: no tokenizer, no Aligner."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ner_lit.alignment.decoding import Decoder
from ner_lit.alignment.windows import AlignmentError, EncodedSentence, Window

LABELS = ["O", "B-PS", "I-PS"]


def encoded(text: str, spans: list[tuple[int, int]]) -> EncodedSentence:
    """One window [CLS] tokens [SEP] over ``text``, token k owning the characters ``spans[k]``."""
    char_token = np.full(len(text), -1, dtype=np.int32)
    for k, (a, b) in enumerate(spans):
        char_token[a:b] = k
    n = len(spans)
    window = Window(0, [101] + list(range(1, n + 1)) + [102], None)
    return EncodedSentence(0, len(text), [window], np.asarray(spans, dtype=np.int32).reshape(-1, 2),
                           np.zeros(n, dtype=np.int32), np.arange(1, n + 1, dtype=np.int32), char_token)


def logits_for(rows: list[list[float]], slots: int = 1) -> torch.Tensor:
    """``[1 window, CLS + tokens + SEP, slots * labels]`` logits with the given rows for the tokens."""
    body = torch.tensor(rows, dtype=torch.float32)
    pad = torch.zeros(1, len(LABELS) * slots)
    return torch.cat([pad, body, pad]).unsqueeze(0)


def test_token_tagging_gives_a_tokens_later_characters_its_inside_tag():
    e = encoded("김철 수", [(0, 2), (3, 4)])
    decoder = Decoder(LABELS)
    decoded = decoder.decode([e], logits_for([[0, 5, 0], [5, 0, 0]]))
    assert decoder.tag_names(decoded.char_tags[0]) == ["B-PS", "I-PS", "O", "O"]  # the space is O
    assert decoder.tag_names(decoded.token_tags[0]) == ["B-PS", "O"]


def test_viterbi_never_opens_an_entity_with_an_inside_tag_where_argmax_would():
    e = encoded("김철", [(0, 1), (1, 2)])
    scores = logits_for([[0, 4, 5], [0, 0, 5]])  # I-PS first on its own, B-PS a close second
    assert Decoder(LABELS, "viterbi").tag_names(Decoder(LABELS, "viterbi").decode([e], scores).char_tags[0]) == ["B-PS", "I-PS"]
    assert Decoder(LABELS, "argmax").tag_names(Decoder(LABELS, "argmax").decode([e], scores).char_tags[0]) == ["I-PS", "I-PS"]


def test_a_character_past_the_last_slot_continues_that_slots_tag():
    e = encoded("김철수", [(0, 3)])
    decoder = Decoder(LABELS, slots=2)
    (tags,) = decoder.decode_labels([e], [[[1, 2]]])  # slots: B-PS, I-PS; the third character has none
    assert decoder.tag_names(tags) == ["B-PS", "I-PS", "I-PS"]


def test_a_label_list_with_a_begin_tag_but_no_inside_tag_is_refused():
    with pytest.raises(AlignmentError, match="has 'B-LC' but not 'I-LC'"):
        Decoder(LABELS + ["B-LC"])
