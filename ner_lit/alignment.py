"""The one place where characters meet tokens.

KLUE scores characters; models predict tokens. Everything that crosses that border —
token labels for training, windows for long sentences, token predictions back to
character tags for validation, test, predict and serve — goes through this module, so
the four paths can not drift apart.

Rules (each chosen for a reason stated in the README's "Alignment" section):

* Tokens are located with the fast tokenizer's character offsets. Whitespace at the edge
  of an offset span is trimmed; a character covered by two tokens (byte-level BPE can split
  one Hangul syllable into several tokens) belongs to the first. A token that owns no
  character is never trained (label -100) and predicts nothing.
* A token's label comes from its characters' gold tags (``label_rule``): ``first_char``
  takes the first character's tag, ``first_entity`` the first non-O tag inside the token.
* Special and padding tokens get -100, so they are never trained as ``O``.
* A sentence longer than ``max_length`` tokens becomes several overlapping windows
  (``stride`` tokens of overlap). At prediction time each token takes the logits of the
  window in which it sits farthest from an inner window edge; nothing is truncated.
* Token tags: ``viterbi`` (default) takes, per sentence, the most probable tag sequence
  that is valid IOB2 (``I-X`` only after ``B-X`` or ``I-X``), from the tokens' log
  probabilities; ``argmax`` takes each token's most probable tag on its own. Strict
  entity scoring discards an entity that starts with ``I-`` or switches type midway, so an
  invalid sequence can only lose entities: on KLUE dev this is worth about +3 F1e.
* Decoding: the first character of a token takes the token's tag, its following
  characters take ``I-<type>`` when the tag is an entity tag, else ``O``. Whitespace is
  not scored (as in KLUE) and always decodes to ``O``; characters no token covers decode to ``O``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch

from ner_lit.corpus import OUTSIDE, Entity, Sentence, spans_from_tags

LabelRule = Literal["first_char", "first_entity"]
Decoding = Literal["viterbi", "argmax"]
IGNORE = -100


class AlignmentError(ValueError):
    """A tokenizer or setting the alignment can not work with."""


@dataclass
class Window:
    """One model input: at most ``max_length`` token ids of one sentence, specials included."""

    sentence: int  # index of the sentence in the list given to ``encode``
    input_ids: list[int]
    labels: list[int] | None  # per input id; -100 on special tokens; None without gold tags


@dataclass
class EncodedSentence:
    """A sentence's windows plus the maps that turn their predictions back into characters."""

    index: int
    text_length: int
    windows: list[Window]
    offsets: list[tuple[int, int]]  # per content token: owned characters [start, end)
    token_window: list[int]  # per content token: the window that predicts it
    token_pos: list[int]  # per content token: its position in that window's input_ids
    char_token: list[int]  # per character: the content token owning it, -1 if none

    @property
    def num_tokens(self) -> int:
        return len(self.offsets)


@dataclass
class Decoded:
    """Per-sentence predictions: character tag ids and probabilities, and the same per content token."""

    char_tags: list[torch.Tensor]
    char_probs: list[torch.Tensor]
    token_tags: list[torch.Tensor]
    token_probs: list[torch.Tensor]


@dataclass(frozen=True)
class ScoredEntity:
    """An entity span in the original text, with the mean top probability of its characters."""

    label: str
    start: int
    end: int
    text: str
    score: float | None = None


class Aligner:
    """Encodes sentences into windows and decodes window logits into character tags.

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
        self.labels = list(labels)
        self.label2id = {t: i for i, t in enumerate(self.labels)}
        self.outside_id = self.label2id[OUTSIDE]
        self.label_rule = label_rule
        if decoding not in ("viterbi", "argmax"):
            raise AlignmentError(f"decoding must be 'viterbi' or 'argmax', got {decoding!r}")
        self.decoding = decoding
        self.prefix, self.suffix = special_layout(tokenizer)
        n_special = len(self.prefix) + len(self.suffix)
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
        inside = []
        for tag in self.labels:
            if tag == OUTSIDE:
                inside.append(self.outside_id)
            else:
                i_tag = "I-" + tag[2:]
                if i_tag not in self.label2id:
                    raise AlignmentError(f"the label list has {tag!r} but not {i_tag!r}")
                inside.append(self.label2id[i_tag])
        self.inside = np.asarray(inside, dtype=np.int64)
        # IOB2 validity: I-X may only follow B-X or I-X, and may not start a sentence.
        n = len(self.labels)
        self.allowed = np.ones((n, n), dtype=bool)  # [previous, current]
        self.may_start = np.ones(n, dtype=bool)
        for j, tag in enumerate(self.labels):
            if tag.startswith("I-"):
                self.may_start[j] = False
                for i, prev in enumerate(self.labels):
                    self.allowed[i, j] = prev != OUTSIDE and prev[2:] == tag[2:]

    # ------------------------------------------------------------------ encoding
    def encode(self, sentences: Sequence[Sentence], with_labels: bool = True, chunk: int = 2048) -> list[EncodedSentence]:
        out: list[EncodedSentence] = []
        for lo in range(0, len(sentences), chunk):
            part = sentences[lo : lo + chunk]
            enc = self.tokenizer(
                [s.text for s in part], add_special_tokens=False, return_offsets_mapping=True, verbose=False
            )
            for j, s in enumerate(part):
                out.append(
                    self._encode_one(lo + j, s, enc["input_ids"][j], enc["offset_mapping"][j], with_labels)
                )
        return out

    def _encode_one(self, index: int, s: Sentence, ids: list[int], raw_offsets, with_labels: bool) -> EncodedSentence:
        text = s.text
        char_token = [-1] * len(text)
        offsets: list[tuple[int, int]] = []
        for k, (a, b) in enumerate(raw_offsets):
            while a < b and text[a].isspace():
                a += 1
            while b > a and text[b - 1].isspace():
                b -= 1
            # Own only the characters no earlier token owns (byte-level BPE overlaps).
            while a < b and char_token[a] != -1:
                a += 1
            end = a
            while end < b and char_token[end] == -1:
                char_token[end] = k
                end += 1
            offsets.append((a, end))
        token_labels: list[int] | None = None
        if with_labels:
            token_labels = [self._token_label(s.tags, a, b) for a, b in offsets]

        n = len(ids)
        step = self.content_length - self.stride
        starts = [0]
        while starts[-1] + self.content_length < n:
            starts.append(starts[-1] + step)
        windows: list[Window] = []
        for st in starts:
            en = min(st + self.content_length, n)
            labels = None
            if token_labels is not None:
                labels = [IGNORE] * len(self.prefix) + token_labels[st:en] + [IGNORE] * len(self.suffix)
            windows.append(Window(index, self.prefix + ids[st:en] + self.suffix, labels))

        token_window = [0] * n
        token_pos = [0] * n
        for t in range(n):
            best, best_margin = 0, -1
            for w, st in enumerate(starts):
                en = min(st + self.content_length, n)
                if not st <= t < en:
                    continue
                left = t - st if st > 0 else n  # a sentence edge is no window edge
                right = en - 1 - t if en < n else n
                margin = min(left, right)
                if margin > best_margin:
                    best, best_margin = w, margin
            token_window[t] = best
            token_pos[t] = len(self.prefix) + t - starts[best]
        return EncodedSentence(index, len(text), windows, offsets, token_window, token_pos, char_token)

    def _token_label(self, tags: Sequence[str], a: int, b: int) -> int:
        if a == b:
            return IGNORE
        if self.label_rule == "first_entity":
            for tag in tags[a:b]:
                if tag != OUTSIDE:
                    return self.label2id[tag]
            return self.outside_id
        return self.label2id[tags[a]]

    # ------------------------------------------------------------------ decoding
    def decode(
        self,
        encoded: Sequence[EncodedSentence],
        logits: torch.Tensor,
        first_row: Sequence[int] | None = None,
    ) -> "Decoded":
        """Character (and token) tag ids with their top probabilities, per sentence.

        ``logits`` is ``[windows, positions, labels]`` for the windows of ``encoded`` in
        order (``first_row[i]``: the row of sentence i's first window; by default the
        windows follow each other).
        """
        if first_row is None:
            first_row, row = [], 0
            for e in encoded:
                first_row.append(row)
                row += len(e.windows)
        rows: list[int] = []
        pos: list[int] = []
        char_token: list[int] = []
        lengths: list[int] = []
        n_tokens: list[int] = []
        empty: list[bool] = []
        base = 0
        for e, r0 in zip(encoded, first_row):
            rows.extend(r0 + w for w in e.token_window)
            pos.extend(e.token_pos)
            empty.extend(a == b for a, b in e.offsets)
            char_token.extend(-1 if k < 0 else k + base for k in e.char_token)
            lengths.append(e.text_length)
            n_tokens.append(e.num_tokens)
            base += e.num_tokens
        # One gather on the logits' device, then NumPy: what follows is many operations on a
        # few thousand numbers, where torch's intra-op threads only add synchronisation.
        token_logits = logits.detach()[torch.tensor(rows, dtype=torch.long), torch.tensor(pos, dtype=torch.long)]
        z = token_logits.float().cpu().numpy().astype(np.float64)
        z = z - z.max(axis=-1, keepdims=True) if base else z
        logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True)) if base else z
        if self.decoding == "viterbi" and base:
            # A token that owns no character was never trained: let it take whatever keeps the path valid.
            masked = logp.copy()
            masked[np.asarray(empty, dtype=bool)] = 0.0
            top = viterbi(masked, n_tokens, self.allowed, self.may_start)
        else:
            top = logp.argmax(axis=-1) if base else np.zeros(0, dtype=np.int64)
        top_prob = np.exp(np.take_along_axis(logp, top[:, None], axis=1)[:, 0]) if base else np.zeros(0)
        tags, char_prob = self._chars_from_tokens(np.asarray(char_token, dtype=np.int64), top, top_prob)
        return Decoded(
            _split(tags, lengths), _split(char_prob.astype(np.float32), lengths),
            _split(top, n_tokens), _split(top_prob.astype(np.float32), n_tokens),
        )

    def decode_labels(self, encoded: Sequence[EncodedSentence], token_labels: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """Character tags from per-token label ids (the alignment ceiling: gold -> tokens -> characters)."""
        char_token: list[int] = []
        lengths: list[int] = []
        flat: list[int] = []
        for e, labels in zip(encoded, token_labels):
            base = len(flat)
            flat.extend(self.outside_id if x == IGNORE else x for x in labels)
            char_token.extend(-1 if k < 0 else k + base for k in e.char_token)
            lengths.append(e.text_length)
        top = np.asarray(flat, dtype=np.int64)
        tags, _ = self._chars_from_tokens(np.asarray(char_token, dtype=np.int64), top, np.ones(len(flat)))
        return _split(tags, lengths)

    def _chars_from_tokens(self, char_token: np.ndarray, top: np.ndarray, top_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        covered = char_token >= 0
        safe = np.maximum(char_token, 0)
        first = np.ones(char_token.shape, dtype=bool)
        first[1:] = char_token[1:] != char_token[:-1]
        if top.size == 0:
            token_tag = np.full(char_token.shape, self.outside_id, dtype=np.int64)
            prob = np.ones(char_token.shape)
        else:
            token_tag = top[safe]
            prob = top_prob[safe]
        char_tag = np.where(first, token_tag, self.inside[token_tag])
        char_tag = np.where(covered, char_tag, self.outside_id)
        prob = np.where(covered, prob, 1.0)
        return char_tag, prob

    # ------------------------------------------------------------------ helpers
    def token_labels(self, e: EncodedSentence) -> list[int]:
        """The per-content-token labels of an encoded sentence (its windows' labels, overlap removed)."""
        out = []
        for t in range(e.num_tokens):
            labels = e.windows[e.token_window[t]].labels
            out.append(IGNORE if labels is None else labels[e.token_pos[t]])
        return out

    def tag_names(self, ids: torch.Tensor) -> list[str]:
        return [self.labels[i] for i in ids.tolist()]


def _split(array: np.ndarray, lengths: Sequence[int]) -> list[torch.Tensor]:
    """Per-sentence tensors (views of one array; torch.from_numpy shares the memory)."""
    bounds = np.cumsum(lengths)[:-1] if len(lengths) else []
    return [torch.from_numpy(part) for part in np.split(np.ascontiguousarray(array), bounds)]


#: Up to this many sentences the Viterbi recursion runs in plain Python, one sentence after
#: another; beyond, in NumPy over all sentences at once. NumPy pays its per-call overhead at
#: every position whatever the batch, plain Python pays per token: on 31-token sentences
#: (KLUE's mean) 0.07 vs 0.44 ms for one sentence, 0.70 vs 0.68 ms for eight (measured).
#: A server's requests are decoded in batches of a few, a validation run's in batches of 64.
PYTHON_VITERBI_MAX_SENTENCES = 6

#: The score of a forbidden start or step: far below any sum of log probabilities.
_NEG = -1e30


def viterbi(logp: np.ndarray, lengths: Sequence[int], allowed: np.ndarray, may_start: np.ndarray) -> np.ndarray:
    """The best valid tag path of every sentence at once (label ids, one per token).

    ``logp`` is ``[tokens, labels]`` for the sentences' tokens one after another
    (``lengths`` tokens each); ``allowed[i, j]``: tag j may follow tag i; ``may_start[j]``:
    tag j may open a sentence. Both ways of running it (see
    ``PYTHON_VITERBI_MAX_SENTENCES``) give the same paths, ties broken towards the
    lower label id.
    """
    if len(lengths) <= PYTHON_VITERBI_MAX_SENTENCES:
        return _viterbi_python(logp, lengths, allowed, may_start)
    return _viterbi_numpy(logp, lengths, allowed, may_start)


def _viterbi_python(logp: np.ndarray, lengths: Sequence[int], allowed: np.ndarray, may_start: np.ndarray) -> np.ndarray:
    """One sentence at a time over Python floats (float64, as NumPy's), each tag looking
    only at the tags allowed before it."""
    columns = list(zip(*allowed.tolist()))
    before = [None if all(col) else [i for i, ok in enumerate(col) if ok] for col in columns]
    starts = may_start.tolist()
    labels = range(len(columns))
    out: list[int] = []
    row = 0
    for n in lengths:
        rows = logp[row : row + n].tolist()
        row += n
        if not n:
            continue
        score = [x if ok else x + _NEG for x, ok in zip(rows[0], starts)]
        back: list[list[int]] = []
        for values in rows[1:]:
            top = max(score)
            arg = score.index(top)  # the first best, as argmax
            new, ptr = [], []
            for j in labels:
                prev = before[j]
                if prev is None:
                    best, k = top, arg
                else:
                    k = prev[0]
                    best = score[k]
                    for q in prev[1:]:
                        if score[q] > best:
                            best, k = score[q], q
                new.append(best + values[j])
                ptr.append(k)
            score = new
            back.append(ptr)
        current = score.index(max(score))
        path = [current]
        for ptr in reversed(back):
            current = ptr[current]
            path.append(current)
        out.extend(reversed(path))
    return np.asarray(out, dtype=np.int64)


def _viterbi_numpy(logp: np.ndarray, lengths: Sequence[int], allowed: np.ndarray, may_start: np.ndarray) -> np.ndarray:
    """All sentences at once: the recursion runs over positions, batched over sentences,
    so its cost is the longest sentence's length in small array operations, not the
    number of tokens. NumPy, not torch: these operations are a few hundred numbers each,
    where torch's intra-op thread pool only adds synchronisation (100x slower on a busy
    2-core machine, measured).
    """
    n, c = logp.shape
    lengths_np = np.asarray(lengths, dtype=np.int64)
    s = len(lengths_np)
    width = int(lengths_np.max()) if s else 0
    if n == 0 or width == 0:
        return np.zeros(n, dtype=np.int64)
    sentence = np.repeat(np.arange(s), lengths_np)
    offset = np.cumsum(lengths_np) - lengths_np
    position = np.arange(n) - offset[sentence]
    grid = np.zeros((s, width, c), dtype=np.float64)
    grid[sentence, position] = logp
    transition = np.where(allowed, 0.0, _NEG)
    score = grid[:, 0] + np.where(may_start, 0.0, _NEG)
    back = np.zeros((s, width, c), dtype=np.int64)
    for t in range(1, width):
        candidates = score[:, :, None] + transition
        arg = candidates.argmax(axis=1)
        best = candidates.max(axis=1)  # the value at arg, without take_along_axis's index building
        active = (t < lengths_np)[:, None]
        score = np.where(active, best + grid[:, t], score)
        back[:, t] = arg
    rows = np.arange(s)
    current = score.argmax(axis=-1)
    path = np.zeros((s, width), dtype=np.int64)
    path[rows, np.maximum(lengths_np - 1, 0)] = current
    for t in range(width - 1, 0, -1):
        active = t <= lengths_np - 1
        previous = back[rows, t, current]
        current = np.where(active, previous, current)
        path[:, t - 1] = np.where(active, previous, path[:, t - 1])
    return path[sentence, position]


def pad_windows(windows: Sequence[Window], pad_id: int) -> dict[str, torch.Tensor]:
    """One padded batch (dynamic padding: as wide as its longest window); labels padded with -100."""
    width = max(len(w.input_ids) for w in windows)
    ids = torch.full((len(windows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(windows), width), dtype=torch.long)
    labels = torch.full((len(windows), width), IGNORE, dtype=torch.long)
    for r, w in enumerate(windows):
        n = len(w.input_ids)
        ids[r, :n] = torch.tensor(w.input_ids)
        mask[r, :n] = 1
        if w.labels is not None:
            labels[r, :n] = torch.tensor(w.labels)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@dataclass
class PackedBatch:
    """Several windows per row, for inference: no row is padded to a longer window's length."""

    input_ids: torch.Tensor  # [rows, width]
    attention_mask: torch.Tensor  # [rows, 1, width, width] additive: 0 within a window, the dtype's min across
    position_ids: torch.Tensor  # [rows, width]: every window counts its positions from ``first_position`` again
    row: list[int]  # per window (in the order given): its row
    start: list[int]  # per window: the column of its first token in that row


def pack_windows(windows: Sequence[Window], pad_id: int, width: int, first_position: int = 0) -> PackedBatch:
    """Windows packed into rows of at most ``width`` tokens (first fit, longest first).

    Each window attends only to itself and takes the position ids it would have alone, so
    a model gives it the logits it gives it alone (up to float rounding); the padding at a
    row's end attends only to itself, which keeps its (unread) values finite. A window
    longer than ``width`` gets a row of its own, as wide as it is.
    """
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i].input_ids))
    fill: list[int] = []
    row = [0] * len(windows)
    start = [0] * len(windows)
    for i in order:
        n = len(windows[i].input_ids)
        r = next((r for r, used in enumerate(fill) if used + n <= width), len(fill))
        if r == len(fill):
            fill.append(0)
        row[i], start[i] = r, fill[r]
        fill[r] += n
    rows, cols = len(fill), max(fill, default=0)
    ids = torch.full((rows, cols), pad_id, dtype=torch.long)
    positions = torch.full((rows, cols), first_position, dtype=torch.long)
    segment = torch.full((rows, cols), -1, dtype=torch.long)
    for i, w in enumerate(windows):
        n, r, a = len(w.input_ids), row[i], start[i]
        ids[r, a : a + n] = torch.tensor(w.input_ids)
        positions[r, a : a + n] = torch.arange(first_position, first_position + n)
        segment[r, a : a + n] = i
    same = segment[:, :, None] == segment[:, None, :]
    mask = torch.zeros(rows, 1, cols, cols).masked_fill_(~same[:, None], torch.finfo(torch.float32).min)
    return PackedBatch(ids, mask, positions, row, start)


def special_layout(tokenizer) -> tuple[list[int], list[int]]:
    """The special token ids a tokenizer puts before and after a single sentence.

    Read off an encoding rather than from tokenizer internals, which differ between
    model families and transformers versions.
    """
    probe = "a"
    with_special = tokenizer(probe, add_special_tokens=True)["input_ids"]
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    for i in range(len(with_special) - len(bare) + 1):
        if with_special[i : i + len(bare)] == bare:
            return list(with_special[:i]), list(with_special[i + len(bare) :])
    raise AlignmentError(f"{type(tokenizer).__name__}: can not locate the text between its special tokens")


def nonspace(text: str, tags: torch.Tensor) -> torch.Tensor:
    """The tags of the characters KLUE scores: every character but whitespace."""
    keep = torch.tensor([not c.isspace() for c in text], dtype=torch.bool)
    return tags[keep] if len(text) else tags


def gold_ids(sentence: Sentence, label2id: dict[str, int]) -> torch.Tensor:
    return torch.tensor([label2id[t] for t in sentence.tags], dtype=torch.long)


def entities_from_tags(text: str, tags: Sequence[str], probs: Sequence[float] | None = None) -> list[ScoredEntity]:
    """Strict IOB2 entities of a character tag sequence, read as KLUE scores them.

    Spans are found on the non-whitespace characters (whitespace is not scored, and a
    model's whitespace tags mean nothing), then mapped back to offsets in ``text``: an
    entity that runs over a space, such as a date, comes out as one span.
    """
    keep = [i for i, c in enumerate(text) if not c.isspace()]
    spans = spans_from_tags([tags[i] for i in keep])
    out = []
    for sp in spans:
        start, end = keep[sp.start], keep[sp.end - 1] + 1
        score = None
        if probs is not None:
            chars = [float(probs[keep[i]]) for i in range(sp.start, sp.end)]
            score = sum(chars) / len(chars)
        out.append(ScoredEntity(sp.label, start, end, text[start:end], score))
    return out


def sentence_from_entities(sentence_id: str, text: str, entities: Sequence[ScoredEntity]) -> Sentence:
    """A predicted sentence record (spaces inside an entity tagged ``I-``, as KLUE files do)."""
    return Sentence.from_entities(sentence_id, text, [Entity(e.label, e.start, e.end) for e in entities])
