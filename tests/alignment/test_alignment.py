"""The character/token alignment: token labels, windows, decoding, entity spans."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from ner_lit.alignment.aligner import Aligner
from ner_lit.alignment.answers import entities_from_tags
from ner_lit.alignment.collate import pack_windows
from ner_lit.alignment.tokenizers import special_layout
from ner_lit.alignment.viterbi import PYTHON_VITERBI_MAX_SENTENCES
from ner_lit.alignment.windows import IGNORE, AlignmentError, Window
from ner_lit.corpus.klue import read_klue_tsv
from ner_lit.corpus.records import KLUE_LABELS, Sentence


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


def test_alignment_ceiling_on_klue_dev_does_not_fall(tokenizer, klue_dir, alignment_ceiling):
    """Gold characters -> token labels -> characters, scored officially (README figure: 98.11 / 81.70)."""
    sentences = read_klue_tsv(klue_dir / "dev.tsv")
    f1c, f1e = alignment_ceiling(Aligner(tokenizer, KLUE_LABELS, max_length=128, stride=32), sentences)
    assert f1c >= 98.1088
    assert f1e >= 81.6954


def _valid_iob2(tags: list[str]) -> bool:
    prev = "O"
    for t in tags:
        if t.startswith("I-") and prev[2:] != t[2:]:
            return False
        prev = t
    return True


@pytest.mark.parametrize("implementation", ["_viterbi_python", "_viterbi_numpy"])
def test_viterbi_finds_the_most_probable_valid_iob2_sequence(implementation):
    import itertools

    from ner_lit.alignment import viterbi as alignment

    viterbi = getattr(alignment, implementation)

    labels = ["O", "B-A", "I-A", "B-B", "I-B"]
    allowed = np.array([[j not in (2, 4) or (j == 2 and i in (1, 2)) or (j == 4 and i in (3, 4))
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


def test_python_and_numpy_viterbi_give_the_same_paths_on_klue_labels(tokenizer):
    from ner_lit.alignment.viterbi import _viterbi_numpy, _viterbi_python

    al = Aligner(tokenizer, KLUE_LABELS)
    rng = np.random.default_rng(0)
    for _ in range(200):
        lengths = rng.integers(0, 40, size=rng.integers(1, 6)).tolist()
        z = rng.normal(size=(sum(lengths), len(KLUE_LABELS))) * rng.uniform(0.1, 5)
        logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
        assert np.array_equal(
            _viterbi_python(logp, lengths, al.allowed, al.may_start), _viterbi_numpy(logp, lengths, al.allowed, al.may_start)
        ), lengths


@pytest.mark.parametrize("sentences", [1, PYTHON_VITERBI_MAX_SENTENCES + 1])
def test_viterbi_runs_in_python_for_few_sentences_and_numpy_for_many(monkeypatch, sentences):
    from ner_lit.alignment import viterbi as alignment

    ran: list[str] = []

    def recording(name: str):
        real = getattr(alignment, name)
        return lambda *a: ran.append(name) or real(*a)

    for name in ("_viterbi_python", "_viterbi_numpy"):
        monkeypatch.setattr(alignment, name, recording(name))
    al_allowed = np.ones((3, 3), dtype=bool)
    alignment.viterbi(np.zeros((2 * sentences, 3)), [2] * sentences, al_allowed, np.ones(3, dtype=bool))
    assert ran == ["_viterbi_python" if sentences <= PYTHON_VITERBI_MAX_SENTENCES else "_viterbi_numpy"]


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


# --------------------------------------------------------------------------- packing
def _windows(*lengths: int) -> list[Window]:
    return [Window(0, list(range(10 * (k + 1), 10 * (k + 1) + n)), None) for k, n in enumerate(lengths)]


def test_packing_puts_short_windows_in_one_row_and_keeps_their_ids():
    windows = _windows(5, 3, 2)
    batch = pack_windows(windows, pad_id=0, width=10)
    assert batch.input_ids.shape == (1, 10) and batch.row == [0, 0, 0]
    for w, a in zip(windows, batch.start):
        assert batch.input_ids[0, a : a + len(w.input_ids)].tolist() == w.input_ids


def test_packed_windows_count_their_positions_from_the_first_position_each():
    windows = _windows(4, 3)
    batch = pack_windows(windows, pad_id=0, width=8, first_position=2)  # RoBERTa counts from pad id + 1
    for w, r, a in zip(windows, batch.row, batch.start):
        assert batch.position_ids[r, a : a + len(w.input_ids)].tolist() == list(range(2, 2 + len(w.input_ids)))


def test_a_packed_window_attends_only_to_itself_and_padding_only_to_padding():
    batch = pack_windows(_windows(6, 4, 3), pad_id=0, width=8)  # rows: 6 + a pad | 4 + 3
    assert batch.row == [0, 1, 1] and batch.input_ids.shape == (2, 7)
    segments = [[0] * 6 + [-1], [1] * 4 + [2] * 3]
    for r, segment in enumerate(segments):
        allowed = (batch.attention_mask[r, 0] == 0).tolist()
        assert allowed == [[segment[k] == segment[q] for k in range(7)] for q in range(7)]
    assert batch.attention_mask.dtype == torch.float32 and float(batch.attention_mask.min()) == torch.finfo(torch.float32).min


def test_packing_opens_a_row_where_a_window_does_not_fit_and_gives_a_too_long_one_its_own():
    batch = pack_windows(_windows(6, 5, 12, 4), pad_id=0, width=10)
    assert batch.row[2] != batch.row[0] and batch.input_ids.shape[1] == 12  # the 12-token window: a row as wide as it
    rows = {r: sum(n for n, rr in zip((6, 5, 12, 4), batch.row) if rr == r) for r in set(batch.row)}
    assert all(n <= 10 for r, n in rows.items() if r != batch.row[2])
    assert len(rows) == 3  # 12 | 6 + 4 | 5: first fit, longest first


# --------------------------------------------------------------------------- long lines
def _klue_line(klue_dir, n_chars: int) -> str:
    """A line of ``n_chars`` characters of real KLUE text (dev sentences joined by spaces)."""
    base = " ".join(s.text for s in read_klue_tsv(klue_dir / "dev.tsv")[:2000])
    return (base * (n_chars // len(base) + 1))[:n_chars]


def _encode_cpu_seconds(aligner: Aligner, text: str, repeats: int = 3) -> float:
    """The least CPU time of ``repeats`` encodings (CPU time: other processes' load does not count)."""
    import time

    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        aligner.encode([Sentence("s", text)])
        best = min(best, time.process_time() - t0)
    return best


def test_encoding_a_long_line_is_linear_in_its_length(tokenizer, klue_dir):
    # Linear: doubling the line about doubles the time; the old token x window loop took 3.6x.
    al = Aligner(tokenizer, KLUE_LABELS, max_length=128, stride=32)
    small = _encode_cpu_seconds(al, _klue_line(klue_dir, 100_000))
    large = _encode_cpu_seconds(al, _klue_line(klue_dir, 200_000))
    assert large / small < 2.8, (small, large)


def test_a_long_lines_encoding_keeps_compact_maps(tokenizer, klue_dir):
    """Per character the encoding keeps int32 maps and its windows' ids, not Python lists of the
    whole sentence (the old encoding kept about 130 bytes a character)."""
    import tracemalloc

    al = Aligner(tokenizer, KLUE_LABELS, max_length=128, stride=32)
    text = _klue_line(klue_dir, 20_000)
    tracemalloc.start()
    (e,) = al.encode([Sentence("s", text)])
    kept, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert kept / len(text) < 80, kept / len(text)
    assert e.char_token.dtype == np.int32 and e.char_token.shape == (len(text),)


def test_vectorised_windows_pick_the_farthest_from_an_edge_for_every_token(tokenizer):
    """Every token's window against the rule spelled out token by token, over many window settings."""
    text = " ".join(["서울에서", "경찰은", "만났다", "한국어"] * 30)
    for max_length, stride in [(5, 0), (5, 2), (12, 9), (12, 3), (40, 20), (128, 32)]:
        al = Aligner(tokenizer, KLUE_LABELS, max_length=max_length, stride=stride)
        (e,) = al.encode([Sentence("s", text)])
        n, c, step = e.num_tokens, al.content_length, al.content_length - al.stride
        starts = [w * step for w in range(len(e.windows))]
        assert starts[-1] + c >= n and (len(starts) == 1 or starts[-2] + c < n)
        for t in range(n):
            margins = []
            for st in starts:
                en = min(st + c, n)
                inside = st <= t < en
                margins.append(min(t - st if st > 0 else n, en - 1 - t if en < n else n) if inside else -1)
            want = margins.index(max(margins))
            assert (e.token_window[t], e.token_pos[t]) == (want, 1 + t - starts[want]), (max_length, stride, t)


# --------------------------------------------------------------------------- special-token spellings in text
SPECIAL_TEXTS = ["[PAD]", "[CLS] 서울 [SEP]", "[MASK]은 [UNK]", "<s>", "</s>", "<pad>", "<mask>", "서울[SEP]부산"]


def _content_ids(al: Aligner, text: str) -> list[int]:
    (e,) = al.encode([Sentence("s", text)])
    return [e.windows[w].input_ids[p] for w, p in zip(e.token_window, e.token_pos)]


@pytest.mark.parametrize("text", SPECIAL_TEXTS)
def test_special_token_spellings_in_text_stay_text(tokenizer, text):
    al = Aligner(tokenizer, KLUE_LABELS)
    ids = _content_ids(al, text)
    specials = set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}
    assert not specials.intersection(ids), tokenizer.convert_ids_to_tokens(ids)
    (e,) = al.encode([Sentence("s", text)])
    assert all(e.char_token[i] >= 0 for i, ch in enumerate(text) if not ch.isspace())


def test_a_bracketed_special_spelling_is_tokenized_like_any_bracketed_word(tokenizer):
    al = Aligner(tokenizer, KLUE_LABELS)
    assert _content_ids(al, "[PAD]") == tokenizer("[ PAD ]", add_special_tokens=False)["input_ids"]


def test_the_syllable_scratch_tokenizer_keeps_special_spellings_as_text():
    from ner_lit.data.scratch import build_tokenizer

    tok = build_tokenizer(["[PAD] 서울 [CLS] 부산 [SEP] [MASK]"] * 3, kind="syllable", vocab_size=100, min_frequency=1)
    al = Aligner(tok, KLUE_LABELS)
    for text in SPECIAL_TEXTS:
        ids = _content_ids(al, text)
        assert not (set(tok.all_special_ids) - {tok.unk_token_id}).intersection(ids), (text, ids)
    assert tok.convert_ids_to_tokens(_content_ids(al, "[SEP]")) == list("[SEP]")


def test_the_text_tokenizer_encodes_ordinary_text_exactly_as_the_tokenizer(tokenizer, klue_dir):
    texts = [s.text for s in read_klue_tsv(klue_dir / "dev.tsv")[:500]]
    al = Aligner(tokenizer, KLUE_LABELS)
    ref = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    for text, ids, offsets, enc in zip(texts, ref["input_ids"], ref["offset_mapping"], al.text_tokenizer.encode_batch(texts, add_special_tokens=False)):
        assert (enc.ids, enc.offsets) == (ids, [tuple(o) for o in offsets]), text


def test_the_predictor_answers_special_spellings_as_text(tiny_predictor):
    (pad,) = tiny_predictor.predict(["[PAD]"])
    assert [t.token for t in pad.tokens] == ["[", "PAD", "]"]
    (seps,) = tiny_predictor.predict(["[CLS] 서울 [SEP]"])
    assert [t.token for t in seps.tokens] == ["[", "CLS", "]", "서", "##울", "[", "SEP", "]"]
