"""The one place where sentences become model inputs: windows of token ids, and their labels.

KLUE scores characters; models predict tokens. Everything that crosses that border —
token labels for training, windows for long sentences, token predictions back to
character tags for validation, test, predict and serve — goes through the :class:`Aligner`
(decoding through the :class:`~ner_lit.alignment.decoding.Decoder` it holds), so the four
paths can not drift apart.

Rules of encoding (the reasons are in docs/alignment.md; those of decoding in
:mod:`ner_lit.alignment.decoding`):

* User text is tokenized as text: the spelling of a special token in it (``[PAD]``,
  ``<s>``, ``<mask>``) stays ordinary characters and never becomes that special token. The
  Aligner encodes with a private copy of the tokenizer's ``tokenizers`` pipeline that does
  not extract special tokens (``encode_special_tokens``) and, for a SentencePiece
  (Unigram) or WordPiece/WordLevel vocabulary, whose pieces include the special spellings
  themselves, can not match them either; a tokenizer that still turns one into a special
  id is refused when the Aligner is built.
* Tokens are located with the character offsets of that encoding. Whitespace at the edge
  of an offset span is trimmed; a character covered by two tokens (byte-level BPE can split
  one Hangul syllable into several tokens) belongs to the first. A SentencePiece token that
  is only the word-boundary mark ``▁`` owns nothing: a standalone ``▁`` is given the
  offsets of the character after it (a known behaviour of transformers' SentencePiece
  tokenizers, huggingface/transformers#17454), which the next token really holds. So every
  character is labelled through exactly one token. A token that owns no character is never
  trained (label -100) and predicts nothing.
* A token's label comes from its characters' gold tags (``label_rule``): ``first_char``
  takes the first character's tag, ``first_entity`` the first non-O tag inside the token.
* Special and padding tokens get -100, so they are never trained as ``O``.
* A sentence longer than ``max_length`` tokens becomes several overlapping windows
  (``stride`` tokens of overlap). At prediction time each token takes the logits of the
  window in which it sits farthest from an inner window edge; nothing is truncated.
  Encoding is linear in the sentence's length (array operations over its tokens and
  characters; each window holds only its own ids), so even a very long line encodes
  without a window or a Python object per token.
* Tagging unit (``tagging``). ``char`` (what new taggers use): the classifier gives every
  token ``char_slots`` rows of label scores, one per character it owns (row k for its k-th
  character), so an entity can start and end at any character: ``김철수는`` is tagged
  ``B-PS I-PS I-PS O`` even when it is one token. Training labels are the characters' own
  gold tags (``label_rule`` plays no part). ``token`` (taggers of format 2 and before, and
  plain Hugging Face token classifiers): one label per token, from ``label_rule``.
"""
from __future__ import annotations

from itertools import chain
from typing import Optional, Sequence

import numpy as np
import torch
from tokenizers import Encoding

from ner_lit.alignment.decoding import CRFScores, Decoder, _starts
from ner_lit.alignment.tokenizers import _char_owner, _owned, _space_mask, owned_spans, special_layout, text_tokenizer
from ner_lit.alignment.windows import (
    DEFAULT_CHAR_SLOTS,
    IGNORE,
    AlignmentError,
    CharSlots,
    Decoded,
    Decoding,
    EncodedChunk,
    EncodedSentence,
    LabelRule,
    Tagging,
    Window,
)
from ner_lit.corpus.records import OUTSIDE, Sentence


class Aligner:
    """Encodes sentences into windows; decodes window logits into character tags through its
    :class:`~ner_lit.alignment.decoding.Decoder` (``decoder``), so every caller decodes the same way.

    ``labels`` fixes the id of every tag; ``max_length`` counts special tokens, as the
    model sees them.
    """

    def __init__(
        self,
        tokenizer,
        labels: Sequence[str],
        max_length: int = 128,
        stride: int = 32,
        label_rule: LabelRule = "first_char",
        decoding: Decoding = "viterbi",
        tagging: Tagging = "token",
        char_slots: int = DEFAULT_CHAR_SLOTS,
    ) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise AlignmentError(
                f"{type(tokenizer).__name__} is not a fast tokenizer: ner_lit needs character offsets, "
                "which only tokenizers backed by the `tokenizers` library (a tokenizer.json) provide"
            )
        if OUTSIDE not in labels:
            raise AlignmentError(f"the label list {list(labels)} has no {OUTSIDE!r}")
        if label_rule not in ("first_char", "first_entity"):
            raise AlignmentError(f"label_rule must be 'first_char' or 'first_entity', got {label_rule!r}")
        self.tokenizer = tokenizer
        self.text_tokenizer, self.marker_ids = text_tokenizer(tokenizer)
        self.labels = list(labels)
        self.label2id = {t: i for i, t in enumerate(self.labels)}
        self.outside_id = self.label2id[OUTSIDE]
        self.label_rule = label_rule
        if decoding not in ("viterbi", "argmax"):
            raise AlignmentError(f"decoding must be 'viterbi' or 'argmax', got {decoding!r}")
        self.decoding = decoding
        if tagging not in ("char", "token"):
            raise AlignmentError(f"tagging must be 'char' or 'token', got {tagging!r}")
        if tagging == "char" and not (isinstance(char_slots, int) and char_slots >= 1):
            raise AlignmentError(f"char_slots must be a whole number of at least 1, got {char_slots!r}")
        self.tagging = tagging
        self.prefix, self.suffix = special_layout(tokenizer)
        #: ``char`` tagging's label layout (None under ``token`` tagging)
        self.char_slots = CharSlots(char_slots, len(self.prefix), len(self.suffix)) if tagging == "char" else None
        n_special = len(self.prefix) + len(self.suffix)
        #: the classifier's outputs per token: a row of label scores per character slot under ``char`` tagging
        self.num_outputs = len(labels) * (char_slots if tagging == "char" else 1)
        if max_length <= n_special:
            raise AlignmentError(
                f"max_length={max_length} leaves no room for text: this tokenizer adds {n_special} special tokens"
            )
        self.max_length = max_length
        self.content_length = max_length - n_special
        if not 0 <= stride < self.content_length:
            raise AlignmentError(
                f"stride={stride} must be >= 0 and smaller than the {self.content_length} text tokens a window holds "
                f"(max_length={max_length} minus {n_special} special tokens)"
            )
        self.stride = stride
        #: window logits back to character tags; it also holds the IOB2 constraint (``inside``, ``allowed``, ``may_start``)
        self.decoder = Decoder(self.labels, decoding, char_slots if tagging == "char" else None)
        self.inside, self.allowed, self.may_start = self.decoder.inside, self.decoder.allowed, self.decoder.may_start

    @classmethod
    def for_tagger(cls, tokenizer, spec, max_length: int | None = None, stride: int | None = None) -> "Aligner":
        """The alignment a trained tagger's spec (:class:`ner_lit.checkpoint.spec.TaggerSpec`) records: its labels,
        windows, label rule, decoding, tagging unit and CRF scores; ``max_length``/``stride`` override its windows."""
        aligner = cls(tokenizer, list(spec.labels), spec.max_length if max_length is None else max_length,
                      spec.stride if stride is None else stride, spec.label_rule, spec.decoding, spec.tagging,
                      spec.char_slots)
        if getattr(spec, "crf", None):
            aligner.decoder.use_crf(spec.crf["transitions"], spec.crf["start"])
        return aligner

    # ------------------------------------------------------------------ encoding
    def encode(self, sentences: Sequence[Sentence], with_labels: bool = True, chunk: int = 2048) -> list[EncodedSentence]:
        """Windows and maps of every sentence (training data, predict and serve alike).

        Texts go through :func:`text_tokenizer`'s pipeline, so special-token spellings in
        them stay text; ``chunk`` sentences are tokenized per call (in parallel by
        `tokenizers`).
        """
        out: list[EncodedSentence] = []
        for lo in range(0, len(sentences), chunk):
            part = sentences[lo : lo + chunk]
            encodings = self.text_tokenizer.encode_batch([s.text for s in part], add_special_tokens=False)
            for j, (s, enc) in enumerate(zip(part, encodings)):
                out.append(self._encode_one(lo + j, s, enc, with_labels))
        return out

    def encode_flat(self, sentences: Sequence[Sentence], with_labels: bool = True) -> EncodedChunk:
        """The encoding of ``sentences`` (one tokenizer batch call) as flat arrays, equal to
        :meth:`encode`'s, for the encoded cache.

        Every step is an array operation over the chunk's tokens, characters or windows at
        once (sentences told apart by their offsets into the concatenation), long sentences'
        windows included; only reading the tokenizer's ids and offsets and the tags touch
        each element in Python.
        """
        texts = [s.text for s in sentences]
        encodings = self.text_tokenizer.encode_batch(texts, add_special_tokens=False)
        n_sent = len(sentences)
        sentence = np.arange(n_sent, dtype=np.int64)
        n_tokens = np.fromiter(map(len, encodings), np.int64, n_sent)
        n_chars = np.fromiter(map(len, texts), np.int64, n_sent)
        tok_base, char_base = _starts(n_tokens), _starts(n_chars)
        n_all = int(n_tokens.sum())
        ids = np.fromiter(chain.from_iterable(e.ids for e in encodings), np.int64, n_all)
        raw = np.fromiter(chain.from_iterable(chain.from_iterable(e.offsets for e in encodings)), np.int64, 2 * n_all)
        token_sentence = np.repeat(sentence, n_tokens)
        token = np.arange(n_all, dtype=np.int64) - tok_base[token_sentence]  # index within its sentence
        raw = raw.reshape(-1, 2) + char_base[token_sentence][:, None]  # offsets into the concatenated texts
        start, end = _owned(_space_mask("".join(texts)), raw, np.isin(ids, self.marker_ids))
        char_token = _char_owner(start, end, int(n_chars.sum()))
        char_token = np.where(char_token < 0, -1, char_token - tok_base[np.repeat(sentence, n_chars)])
        local = char_base[token_sentence]
        offsets = np.stack([start - local, end - local], axis=1).astype(np.int32)
        token_labels = tag_ids = None
        if with_labels:
            tags = chain.from_iterable(s.tags for s in sentences)
            tag_ids = np.fromiter(map(self.label2id.__getitem__, tags), np.int64, len(char_token))
            token_labels = self._labels_of(tag_ids, start, end)
        # windows: the same starts as _window_starts, for every sentence at once
        step = self.content_length - self.stride
        n_windows = np.where(n_tokens <= self.content_length, 1, 1 - (-(n_tokens - self.content_length) // step))
        window_sentence = np.repeat(sentence, n_windows)
        w_start = (np.arange(len(window_sentence), dtype=np.int64) - _starts(n_windows)[window_sentence]) * step
        w_count = np.minimum(w_start + self.content_length, n_tokens[window_sentence]) - w_start
        n_special = len(self.prefix) + len(self.suffix)
        window_length = w_count + n_special
        w_base = _starts(window_length)
        inner = np.arange(int(w_count.sum()), dtype=np.int64) - np.repeat(_starts(w_count), w_count)
        source = np.repeat(tok_base[window_sentence] + w_start, w_count) + inner
        target = np.repeat(w_base + len(self.prefix), w_count) + inner
        input_ids = _with_specials(ids[source], target, w_base, w_count, self.prefix, self.suffix, int(window_length.sum()))
        labels = None
        if token_labels is not None:
            labels = _with_specials(token_labels[source], target, w_base, w_count, [IGNORE] * len(self.prefix),
                                         [IGNORE] * len(self.suffix), int(window_length.sum()))
        token_window, token_pos = _best_window(token, n_tokens[token_sentence], n_windows[token_sentence] - 1,
                                               self.content_length, step, len(self.prefix))
        return EncodedChunk(n_windows, n_tokens, n_chars, window_length, window_sentence, w_start.astype(np.int32),
                            input_ids, labels, offsets, token_window, token_pos, char_token.astype(np.int32), tag_ids)

    def _encode_one(self, index: int, s: Sentence, enc: Encoding, with_labels: bool) -> EncodedSentence:
        ids = np.asarray(enc.ids, dtype=np.int64)
        raw = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
        offsets, char_token = owned_spans(s.text, raw, np.isin(ids, self.marker_ids))
        token_labels = None
        if with_labels:
            if self.char_slots is not None:
                tag_ids = np.fromiter((self.label2id[t] for t in s.tags), dtype=np.int64, count=len(s.tags))
                token_labels = self.char_slots.token_labels(offsets, tag_ids)
            else:
                token_labels = self._token_labels(s.tags, offsets)
        starts = self._window_starts(len(ids))
        windows = self._windows(index, ids, token_labels, starts)
        token_window, token_pos = self._predicting_window(len(ids), starts)
        return EncodedSentence(index, len(s.text), windows, offsets, token_window, token_pos, char_token)

    def _window_starts(self, n: int) -> np.ndarray:
        """The first content token of each window: every ``content_length - stride`` tokens,
        until a window reaches the sentence's end."""
        if n <= self.content_length:
            return np.zeros(1, dtype=np.int64)
        step = self.content_length - self.stride
        return np.arange(1 + -(-(n - self.content_length) // step), dtype=np.int64) * step

    def _windows(self, index: int, ids: np.ndarray, token_labels: np.ndarray | None, starts: np.ndarray) -> list[Window]:
        """Each window's ids (and labels) with the specials around them; only its own slice of the sentence."""
        n = len(ids)
        windows: list[Window] = []
        for st in starts.tolist():
            en = min(st + self.content_length, n)
            labels = None
            if token_labels is not None and self.char_slots is not None:
                labels = self.char_slots.with_specials(token_labels[st:en])
            elif token_labels is not None:
                labels = [IGNORE] * len(self.prefix) + token_labels[st:en].tolist() + [IGNORE] * len(self.suffix)
            windows.append(Window(index, self.prefix + ids[st:en].tolist() + self.suffix, labels))
        return windows

    def _predicting_window(self, n: int, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per token, the window where it sits farthest from an inner window edge (ties: the
        earlier window) and its position there (see :func:`_best_window`)."""
        step = self.content_length - self.stride
        return _best_window(np.arange(n, dtype=np.int64), n, len(starts) - 1, self.content_length, step, len(self.prefix))

    def _token_labels(self, tags: Sequence[str], offsets: np.ndarray) -> np.ndarray:
        """Each token's label from its characters' gold tags (``label_rule``); -100 where it owns none."""
        tag_ids = np.fromiter((self.label2id[t] for t in tags), dtype=np.int64, count=len(tags))
        return self._labels_of(tag_ids, offsets[:, 0].astype(np.int64), offsets[:, 1].astype(np.int64))

    def _labels_of(self, tag_ids: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Token labels from the characters' tag ids and the tokens' owned spans [a, b).

        The same for one sentence or for a chunk's concatenated characters: a token owns
        characters of its own sentence only, and "the first entity character at or after a"
        that lies in a later sentence lies at or after b.
        """
        n_chars = len(tag_ids)
        if n_chars == 0:
            return np.full(len(a), IGNORE, dtype=np.int64)
        first = np.minimum(a, n_chars - 1)  # a token that owns nothing may sit at the text's end
        if self.label_rule == "first_entity":
            # per character, the first entity character at or after it (n_chars where none follows)
            idx = np.where(tag_ids != self.outside_id, np.arange(n_chars), n_chars)
            next_entity = np.append(np.minimum.accumulate(idx[::-1])[::-1], n_chars)
            j = next_entity[a]
            labels = np.where(j < b, tag_ids[np.minimum(j, n_chars - 1)], self.outside_id)
        else:
            labels = tag_ids[first]
        return np.where(b > a, labels, IGNORE)

    # ------------------------------------------------------------------ decoding (the Decoder's)
    def decode(self, encoded: Sequence[EncodedSentence], logits: torch.Tensor,
               first_row: Sequence[int] | None = None, crf: Optional[CRFScores] = None) -> Decoded:
        """Character (and token) tag ids with their top probabilities, per sentence (:meth:`Decoder.decode`)."""
        return self.decoder.decode(encoded, logits, first_row, crf)

    def decode_labels(self, encoded: Sequence[EncodedSentence], token_labels: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """Character tags from per-token label ids, the alignment ceiling (:meth:`Decoder.decode_labels`)."""
        return self.decoder.decode_labels(encoded, token_labels)

    def tag_names(self, ids: torch.Tensor) -> list[str]:
        """The tags of label ids."""
        return self.decoder.tag_names(ids)

    # ------------------------------------------------------------------ helpers
    def token_labels(self, e: EncodedSentence) -> list:
        """The per-content-token labels of an encoded sentence (its windows' labels, overlap removed):
        an id per token, or under ``char`` tagging a list of ``slots`` ids per token."""
        width = None if self.char_slots is None else self.char_slots.slots
        if e.num_tokens == 0 or e.windows[0].labels is None:
            return [IGNORE if width is None else [IGNORE] * width for _ in range(e.num_tokens)]
        return [e.windows[w].labels[p] for w, p in zip(e.token_window.tolist(), e.token_pos.tolist())]


def _best_window(t: np.ndarray, n, last, content_length: int, step: int, n_prefix: int) -> tuple[np.ndarray, np.ndarray]:
    """Per token ``t`` of a sentence of ``n`` tokens in windows 0..``last``, the window where it
    sits farthest from an inner window edge (ties: the earlier window) and its position there.

    ``n`` and ``last`` are numbers (one sentence) or arrays beside ``t`` (many sentences'
    tokens at once). A token lies in at most ``ceil(content_length / step)`` windows, so the
    candidates are a few array passes over the tokens, whatever the sentences' lengths.
    """
    best = np.zeros(len(t), dtype=np.int64)
    best_margin = np.full(len(t), -1, dtype=np.int64)
    reach = -(-content_length // step)
    for back in range(reach - 1, -1, -1):  # candidate windows in increasing order
        w = np.minimum(t // step, last) - back
        valid = w >= 0
        st = np.where(valid, w, 0) * step
        en = np.minimum(st + content_length, n)
        valid &= (st <= t) & (t < en)
        left = np.where(st > 0, t - st, n)  # a sentence edge is no window edge
        right = np.where(en < n, en - 1 - t, n)
        margin = np.where(valid, np.minimum(left, right), -1)
        better = margin > best_margin
        best = np.where(better, w, best)
        best_margin = np.where(better, margin, best_margin)
    pos = n_prefix + t - best * step
    return best.astype(np.int32), pos.astype(np.int32)


def _with_specials(content: np.ndarray, target: np.ndarray, w_base: np.ndarray, w_count: np.ndarray,
                   prefix: Sequence[int], suffix: Sequence[int], total: int) -> np.ndarray:
    """Windows laid end to end: each one's prefix, its content (placed at ``target``), its suffix."""
    out = np.empty(total, dtype=np.int64)
    for j, value in enumerate(prefix):
        out[w_base + j] = value
    for j, value in enumerate(suffix):
        out[w_base + len(prefix) + w_count + j] = value
    out[target] = content
    return out


def nonspace(text: str, tags: torch.Tensor) -> torch.Tensor:
    """The tags of the characters KLUE scores: every character but whitespace."""
    keep = torch.tensor([not c.isspace() for c in text], dtype=torch.bool)
    return tags[keep] if len(text) else tags


def gold_ids(sentence: Sentence, label2id: dict[str, int]) -> torch.Tensor:
    return torch.tensor([label2id[t] for t in sentence.tags], dtype=torch.long)
