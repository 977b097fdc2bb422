"""The character/token alignment: token labels, windows, decoding, entity spans."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from ner_lit.alignment import IGNORE, Aligner, AlignmentError, entities_from_tags, special_layout
from ner_lit.corpus import KLUE_LABELS, Sentence, read_klue_tsv


@pytest.fixture(scope="module")
def tokenizer(reference_model):
    return AutoTokenizer.from_pretrained(reference_model)


def one_hot_logits(aligner: Aligner, encoded, token_labels=None) -> torch.Tensor:
    """Logits that make each window predict its own token labels (O where it has none)."""
    windows = [w for e in encoded for w in e.windows]
    width = max(len(w.input_ids) for w in windows)
    logits = torch.zeros(len(windows), width, len(aligner.labels))
    logits[:, :, aligner.outside_id] = 1.0
    for r, w in enumerate(windows):
        for p, lab in enumerate(w.labels):
            if lab != IGNORE:
                logits[r, p] = 0
                logits[r, p, lab] = 5.0
    return logits


def test_special_and_padding_tokens_are_never_trained(tokenizer):
    al = Aligner(tokenizer, KLUE_LABELS, max_length=32, stride=8)
    (e,) = al.encode([Sentence.from_entities("s", "경찰은 서울에서 만났다", [])])
    labels = e.windows[0].labels
    ids = e.windows[0].input_ids
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert labels[0] == IGNORE and labels[-1] == IGNORE
    assert all(lab == al.outside_id for lab in labels[1:-1])


def test_token_takes_its_first_characters_tag_and_decodes_to_inside_tags(tokenizer):
    # "경찰은" is one token: entity (경찰) + particle (은); the first-character rule labels it B-OG.
    s = Sentence("s", "경찰은 서울에서", ["B-OG", "I-OG", "O", "O", "B-LC", "I-LC", "O", "O"])
    al = Aligner(tokenizer, KLUE_LABELS, max_length=32, stride=8)
    (e,) = al.encode([s])
    assert [tokenizer.convert_ids_to_tokens(i) for i in e.windows[0].input_ids[1:-1]] == ["경찰은", "서울", "##에서"]
    assert al.tag_names(torch.tensor(al.token_labels(e))) == ["B-OG", "B-LC", "O"]
    (tags,) = al.decode_labels([e], [al.token_labels(e)])
    # the particle inherits I-OG: the ceiling this vocabulary imposes; the space stays O.
    assert al.tag_names(tags) == ["B-OG", "I-OG", "I-OG", "O", "B-LC", "I-LC", "O", "O"]


def test_first_entity_rule_labels_a_token_by_its_first_entity_tag(tokenizer):
    s = Sentence("s", "경찰은", ["O", "B-OG", "I-OG"])
    al = Aligner(tokenizer, KLUE_LABELS, label_rule="first_entity")
    (e,) = al.encode([s])
    assert al.tag_names(torch.tensor(al.token_labels(e))) == ["B-OG"]
    first_char = Aligner(tokenizer, KLUE_LABELS)
    (e,) = first_char.encode([s])
    assert first_char.tag_names(torch.tensor(first_char.token_labels(e))) == ["O"]


def test_long_sentence_is_split_into_overlapping_windows_that_cover_every_token(tokenizer):
    text = " ".join(["서울에서"] * 40)
    al = Aligner(tokenizer, KLUE_LABELS, max_length=12, stride=3)
    (e,) = al.encode([Sentence("s", text)])
    assert len(e.windows) > 1
    assert all(len(w.input_ids) <= 12 for w in e.windows)
    content = [i for w in e.windows for i in w.input_ids[1:-1]]
    step = 10 - 3
    assert len(content) == 10 * (len(e.windows) - 1) + (e.num_tokens - step * (len(e.windows) - 1))
    # each token is predicted by exactly one window, at its own id
    for t in range(e.num_tokens):
        w = e.windows[e.token_window[t]]
        full = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert w.input_ids[e.token_pos[t]] == full[t]


def test_merged_windows_take_each_token_from_the_window_where_it_is_farthest_from_an_edge(tokenizer):
    text = " ".join(["서울"] * 30)  # 30 one-token words
    al = Aligner(tokenizer, KLUE_LABELS, max_length=12, stride=4)  # 10 text tokens a window, step 6
    (e,) = al.encode([Sentence("s", text)])
    # token 7 is in window 0 (pos 7 of 0..9, 2 from its right edge) and window 1 (pos 1, 1 from its left edge)
    assert e.token_window[7] == 0
    # token 8: window 0 margin 1, window 1 margin 2 -> window 1
    assert e.token_window[8] == 1


def test_windowed_decoding_equals_unwindowed_decoding_on_real_sentences(tokenizer, klue_dir):
    sentences = read_klue_tsv(klue_dir / "dev.tsv")[:300]
    whole = Aligner(tokenizer, KLUE_LABELS, max_length=128, stride=32)
    small = Aligner(tokenizer, KLUE_LABELS, max_length=10, stride=3)
    enc_whole, enc_small = whole.encode(sentences), small.encode(sentences)
    assert sum(len(e.windows) for e in enc_small) > 2 * len(sentences)
    tags_whole = whole.decode(enc_whole, one_hot_logits(whole, enc_whole)).char_tags
    tags_small = small.decode(enc_small, one_hot_logits(small, enc_small)).char_tags
    for a, b, s in zip(tags_whole, tags_small, sentences):
        assert a.tolist() == b.tolist(), s.id


def test_every_nonspace_character_gets_a_prediction_when_nothing_is_truncated(tokenizer):
    text = "가" * 5 + " " + "한국어 " * 200
    al = Aligner(tokenizer, KLUE_LABELS, max_length=16, stride=4)
    (e,) = al.encode([Sentence("s", text)])
    decoded = al.decode([e], one_hot_logits(al, [e]))
    assert decoded.char_tags[0].shape[0] == len(text)
    covered = [k >= 0 for k in e.char_token]
    assert all(covered[i] for i, c in enumerate(text) if not c.isspace())


def test_decode_gives_top_probabilities_per_character(tokenizer):
    al = Aligner(tokenizer, KLUE_LABELS)
    (e,) = al.encode([Sentence("s", "서울 경찰")])
    logits = torch.zeros(1, len(e.windows[0].input_ids), len(KLUE_LABELS))
    logits[0, 1, al.label2id["B-LC"]] = 3.0
    decoded = al.decode([e], logits)
    p = torch.softmax(logits[0, 1], -1).max().item()
    assert al.tag_names(decoded.char_tags[0])[:2] == ["B-LC", "I-LC"]
    assert decoded.char_probs[0][:2].tolist() == pytest.approx([p, p])
    assert decoded.token_probs[0][0].item() == pytest.approx(p)


def test_a_slow_tokenizer_is_refused_with_a_clear_error():
    class Slow:
        is_fast = False

    with pytest.raises(AlignmentError, match="not a fast tokenizer"):
        Aligner(Slow(), KLUE_LABELS)


def test_max_length_too_small_for_the_special_tokens_is_an_error(tokenizer):
    with pytest.raises(AlignmentError, match="max_length=2 leaves no room"):
        Aligner(tokenizer, KLUE_LABELS, max_length=2)


def test_stride_must_leave_the_window_room_to_advance(tokenizer):
    with pytest.raises(AlignmentError, match="stride=10"):
        Aligner(tokenizer, KLUE_LABELS, max_length=12, stride=10)


def test_special_layout_reads_prefix_and_suffix(tokenizer):
    assert special_layout(tokenizer) == ([tokenizer.cls_token_id], [tokenizer.sep_token_id])


def test_entities_are_strict_iob2_spans_over_nonspace_characters_with_mean_scores():
    text = "5월 3일 서울"
    tags = ["B-DT", "I-DT", "O", "I-DT", "I-DT", "O", "I-LC", "I-LC"]
    probs = [0.9, 0.7, 1.0, 0.5, 0.5, 1.0, 0.8, 0.8]
    ents = entities_from_tags(text, tags, probs)
    # the space inside the date is not scored, so 5월 3일 is one entity; I-LC without B- starts none.
    assert [(e.label, e.start, e.end, e.text) for e in ents] == [("DT", 0, 5, "5월 3일")]
    assert ents[0].score == pytest.approx((0.9 + 0.7 + 0.5 + 0.5) / 4)


def test_alignment_ceiling_on_klue_dev_does_not_fall(tokenizer, klue_dir):
    """Gold characters -> token labels -> characters, scored officially (README figure: 98.11 / 81.70)."""
    from ner_lit.metrics import CharMacroF1, EntityMacroF1

    sentences = read_klue_tsv(klue_dir / "dev.tsv")
    al = Aligner(tokenizer, KLUE_LABELS, max_length=128, stride=32)
    enc = al.encode(sentences)
    decoded = al.decode_labels(enc, [al.token_labels(e) for e in enc])
    f1c, f1e = CharMacroF1(KLUE_LABELS), EntityMacroF1(KLUE_LABELS)
    preds, golds = [], []
    for s, d in zip(sentences, decoded):
        keep = torch.tensor([not c.isspace() for c in s.text])
        preds.append(d[keep])
        golds.append(torch.tensor([al.label2id[t] for t in s.tags])[keep])
    f1c.update(preds, golds)
    f1e.update(preds, golds)
    assert float(f1c.compute()) >= 98.1088
    assert float(f1e.compute()) >= 81.6954


def _valid_iob2(tags: list[str]) -> bool:
    prev = "O"
    for t in tags:
        if t.startswith("I-") and prev[2:] != t[2:]:
            return False
        prev = t
    return True


def test_viterbi_finds_the_most_probable_valid_iob2_sequence():
    import itertools

    from ner_lit.alignment import viterbi

    labels = ["O", "B-A", "I-A", "B-B", "I-B"]
    allowed = np.array([[not (j in (2, 4)) or (j == 2 and i in (1, 2)) or (j == 4 and i in (3, 4))
                         for j in range(5)] for i in range(5)])
    may_start = np.array([True, True, False, True, False])
    gen = torch.Generator().manual_seed(3)
    lengths = [1, 4, 0, 3, 5]
    logp = torch.log_softmax(torch.randn(sum(lengths), 5, generator=gen) * 3, -1).double().numpy()
    paths = np.split(viterbi(logp, lengths, allowed, may_start), np.cumsum(lengths)[:-1])
    start = 0
    for n, path in zip(lengths, paths):
        sentence = logp[start : start + n]
        start += n
        best = max(
            (seq for seq in itertools.product(range(5), repeat=n) if _valid_iob2([labels[i] for i in seq])),
            key=lambda seq: sum(float(sentence[t, k]) for t, k in enumerate(seq)),
        ) if n else ()
        assert tuple(path.tolist()) == tuple(best)


def test_viterbi_decoding_never_yields_an_entity_that_starts_inside(tokenizer):
    al = Aligner(tokenizer, KLUE_LABELS)
    (e,) = al.encode([Sentence("s", "서울 경찰 부산")])
    logits = torch.zeros(1, len(e.windows[0].input_ids), len(KLUE_LABELS))
    logits[0, 1:-1, al.label2id["I-LC"]] = 2.0  # every token's own best tag is I-LC
    logits[0, 1:-1, al.label2id["B-LC"]] = 1.5
    viterbi_tags = al.tag_names(al.decode([e], logits).char_tags[0])
    argmax_tags = Aligner(tokenizer, KLUE_LABELS, decoding="argmax").decode([e], logits).char_tags[0]
    assert al.tag_names(argmax_tags)[0] == "I-LC"  # each token alone: an invalid start
    assert viterbi_tags[0] == "B-LC" and _valid_iob2([t for t, c in zip(viterbi_tags, "서울 경찰 부산") if c != " "])
