"""Window logits back to character tags: the one decoder of training, evaluation, predict and serve.

Rules (the reasons are in docs/alignment.md):

* Each token takes the logits of the window the :class:`~ner_lit.alignment.aligner.Aligner`
  chose for it (``token_window``/``token_pos``): the one where it sits farthest from an inner
  window edge.
* Tags: ``viterbi`` (default) takes, per sentence, the most probable tag sequence that is
  valid IOB2 (``I-X`` only after ``B-X`` or ``I-X``), from the log probabilities;
  ``argmax`` takes each position's most probable tag on its own. Strict entity scoring
  discards an entity that starts with ``I-`` or switches type midway, so an invalid
  sequence can only lose entities (bench/results/alignment_notes.md compares the two).
* ``char`` tagging: every character's tag comes from its own slot of its token's scores
  and the Viterbi path runs over the characters; a character past a token's last slot
  continues that slot's tag (``B-X`` becomes ``I-X``). ``token`` tagging: the first
  character of a token takes the token's tag, its following characters take ``I-<type>``
  when the tag is an entity tag, else ``O``, so a particle fused to a name joins the entity.
* Whitespace is not scored (as in KLUE) and always decodes to ``O``; characters no token
  covers decode to ``O``.
* A CRF head's learned transition and start scores (``crf``) join the Viterbi path's score;
  the IOB2 constraint still holds. Its emissions are the same log probabilities: per-position
  constants do not change which path is best.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from ner_lit.alignment.viterbi import _NEG, viterbi
from ner_lit.alignment.windows import IGNORE, AlignmentError, Decoded, Decoding, EncodedSentence
from ner_lit.corpus.records import OUTSIDE

#: A CRF head's learned scores: ``(transitions[previous, current], start[current])``.
CRFScores = tuple[np.ndarray, np.ndarray]


class Decoder:
    """Turns a batch's window logits (or per-token label ids) into per-sentence character tags.

    ``labels`` fixes the id of every tag; ``slots`` is the number of label rows per token under
    ``char`` tagging, None under ``token`` tagging. Besides the decoding it owns the IOB2
    constraint: ``inside`` (each tag's continuation: ``B-X`` and ``I-X`` to ``I-X``, ``O`` to
    ``O``), ``allowed[previous, current]`` and ``may_start``.
    """

    def __init__(self, labels: Sequence[str], decoding: Decoding = "viterbi", slots: int | None = None) -> None:
        self.labels = list(labels)
        self.label2id = {t: i for i, t in enumerate(self.labels)}
        self.outside_id = self.label2id[OUTSIDE]
        self.decoding = decoding
        self.slots = slots
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
        #: a trained CRF head's scores (:meth:`use_crf`), used by every Viterbi path; None: no CRF
        self.crf: Optional[CRFScores] = None

    def use_crf(self, transitions: Sequence[Sequence[float]], start: Sequence[float]) -> None:
        """Decode with a CRF head's learned transition and start scores (a tagger whose spec has them)."""
        n = len(self.labels)
        t, s = np.asarray(transitions, dtype=np.float64), np.asarray(start, dtype=np.float64)
        if t.shape != (n, n) or s.shape != (n,):
            raise AlignmentError(f"CRF scores of shapes {t.shape} and {s.shape} for {n} labels")
        self.crf = (t, s)

    def _path(self, scores: np.ndarray, lengths: Sequence[int], crf: Optional[CRFScores]) -> np.ndarray:
        crf = self.crf if crf is None else crf
        return viterbi(scores, lengths, self.allowed, self.may_start, *(crf if crf is not None else (None, None)))

    def decode(
        self,
        encoded: Sequence[EncodedSentence],
        logits: torch.Tensor,
        first_row: Sequence[int] | None = None,
        crf: Optional[CRFScores] = None,
    ) -> "Decoded":
        """Character (and token) tag ids with their top probabilities, per sentence.

        ``logits`` is ``[windows, positions, labels]`` for the windows of ``encoded`` in
        order (``first_row[i]``: the row of sentence i's first window; by default the
        windows follow each other). ``crf``: CRF scores to use instead of :attr:`crf` (a model
        in training decodes with its current ones).
        """
        if first_row is None:
            first_row, row = [], 0
            for e in encoded:
                first_row.append(row)
                row += len(e.windows)
        lengths = [e.text_length for e in encoded]
        n_tokens = [e.num_tokens for e in encoded]
        base = int(sum(n_tokens))
        rows = _cat([r0 + e.token_window.astype(np.int64) for e, r0 in zip(encoded, first_row)])
        pos = _cat([e.token_pos for e in encoded])
        char_token = _global_char_token(encoded)
        # One gather on the logits' device, then NumPy: what follows is many operations on a
        # few thousand numbers, where torch's intra-op threads only add synchronisation.
        token_logits = logits.detach()[torch.from_numpy(rows), torch.from_numpy(pos)]
        z = token_logits.float().cpu().numpy().astype(np.float64)
        if self.slots is not None:
            return self._decode_chars(encoded, z, char_token, crf)
        empty = _cat([e.offsets[:, 0] == e.offsets[:, 1] for e in encoded], dtype=bool)
        z = z - z.max(axis=-1, keepdims=True) if base else z
        logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True)) if base else z
        if self.decoding == "viterbi" and base:
            # A token that owns no character was never trained: let it take whatever keeps the path valid.
            masked = logp.copy()
            masked[empty] = 0.0
            top = self._path(masked, n_tokens, crf)
        else:
            top = logp.argmax(axis=-1) if base else np.zeros(0, dtype=np.int64)
        top_prob = np.exp(np.take_along_axis(logp, top[:, None], axis=1)[:, 0]) if base else np.zeros(0)
        tags, char_prob = self._chars_from_tokens(char_token, top, top_prob)
        return Decoded(
            _split(tags, lengths), _split(char_prob.astype(np.float32), lengths),
            _split(top, n_tokens), _split(top_prob.astype(np.float32), n_tokens),
        )

    def _decode_chars(self, encoded: Sequence[EncodedSentence], z: np.ndarray, char_token: np.ndarray,
                      crf: Optional[CRFScores] = None) -> "Decoded":
        """``char`` tagging: every character's tag from its own slot of its token's scores.

        ``z`` is ``[content tokens, slots * labels]``. The Viterbi path (or argmax) runs over
        the characters a token owns, one sentence after another; characters past a token's
        last slot score as its last slot's characters continue (B-X and I-X both count for
        I-X). Uncovered characters (whitespace) are O and not on the path.
        """
        lengths = [e.text_length for e in encoded]
        n_tokens = [e.num_tokens for e in encoded]
        k, n = self.slots, len(self.labels)
        first_char, covered, owner, slot = _char_slots(encoded, char_token)
        z = z.reshape(len(z), k, n)
        z = z - z.max(axis=-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
        rows = logp[owner, np.minimum(slot, k - 1)]
        tail = slot >= k
        if tail.any():  # past the last slot: the character continues that slot's tag
            folded = np.zeros((int(tail.sum()), n))
            np.add.at(folded.T, self.inside, np.exp(rows[tail]).T)
            with np.errstate(divide="ignore"):
                rows[tail] = np.maximum(np.log(folded), _NEG)
        char_sentence = np.repeat(np.arange(len(encoded)), lengths)
        per_sentence = np.bincount(char_sentence[covered], minlength=len(encoded))
        if self.decoding == "viterbi" and len(covered):
            top = self._path(rows, per_sentence.tolist(), crf)
        else:
            top = rows.argmax(axis=-1) if len(covered) else np.zeros(0, dtype=np.int64)
        top_prob = np.exp(np.take_along_axis(rows, top[:, None], axis=1)[:, 0]) if len(covered) else np.zeros(0)
        tags = np.full(len(char_token), self.outside_id, dtype=np.int64)
        probs = np.ones(len(char_token))
        tags[covered], probs[covered] = top, top_prob
        token_tags, token_probs = self._token_view(first_char, _cat([e.offsets[:, 1] - e.offsets[:, 0] for e in encoded]),
                                                   tags, probs)
        return Decoded(_split(tags, lengths), _split(probs.astype(np.float32), lengths),
                       _split(token_tags, n_tokens), _split(token_probs.astype(np.float32), n_tokens))

    def _token_view(self, first_char: np.ndarray, owned: np.ndarray, tags: np.ndarray, probs: np.ndarray):
        """Per token, the tag and probability of its first owned character (O, 1 for a token that owns none):
        the per-token list of ``/api`` under ``char`` tagging."""
        has = owned > 0
        safe = np.where(has, first_char, 0)
        if len(tags) == 0:
            return np.full(len(first_char), self.outside_id, dtype=np.int64), np.ones(len(first_char))
        return np.where(has, tags[safe], self.outside_id), np.where(has, probs[safe], 1.0)

    def decode_labels(self, encoded: Sequence[EncodedSentence], token_labels: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """Character tags from per-token label ids (the alignment ceiling: gold -> tokens -> characters).

        Under ``char`` tagging each token's labels are ``[slots]`` rows (``Aligner.token_labels``); a
        character past the last slot continues that slot's tag, as :meth:`decode` reads it.
        """
        lengths = [e.text_length for e in encoded]
        char_token = _global_char_token(encoded)
        if self.slots is None:
            flat = _cat([np.asarray(labels, dtype=np.int64).reshape(-1) for labels in token_labels])
            top = np.where(flat == IGNORE, self.outside_id, flat)
            tags, _ = self._chars_from_tokens(char_token, top, np.ones(len(top)))
            return _split(tags, lengths)
        k = self.slots
        slots = np.concatenate([np.asarray(labels, dtype=np.int64).reshape(-1, k) for labels in token_labels]) \
            if len(token_labels) else np.zeros((0, k), dtype=np.int64)
        slots = np.where(slots == IGNORE, self.outside_id, slots)
        _, covered, owner, slot = _char_slots(encoded, char_token)
        value = slots[owner, np.minimum(slot, k - 1)]
        value = np.where(slot >= k, self.inside[value], value)
        tags = np.full(len(char_token), self.outside_id, dtype=np.int64)
        tags[covered] = value
        return _split(tags, lengths)

    def _chars_from_tokens(self, char_token: np.ndarray, top: np.ndarray, top_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``token`` tagging: each character's tag and probability from its token's (``I-`` after a token's first character)."""
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

    def tag_names(self, ids: torch.Tensor) -> list[str]:
        """The tags of label ids."""
        return [self.labels[i] for i in ids.tolist()]


def _cat(parts: Sequence[np.ndarray], dtype=np.int64) -> np.ndarray:
    """One array of the parts (an empty one when there are none)."""
    return np.concatenate([np.asarray(p, dtype=dtype) for p in parts]) if len(parts) else np.zeros(0, dtype=dtype)


def _char_slots(encoded: Sequence[EncodedSentence], char_token: np.ndarray):
    """Every token's first character (counted in the sentences' concatenated characters); the
    characters a token covers, their token, and their slot (position inside it)."""
    lengths = np.asarray([e.text_length for e in encoded], dtype=np.int64)
    first_char = _cat([e.offsets[:, 0] for e in encoded]) + np.repeat(_starts(lengths), [e.num_tokens for e in encoded])
    covered = np.flatnonzero(char_token >= 0)
    owner = char_token[covered]
    return first_char, covered, owner, covered - first_char[owner]


def _global_char_token(encoded: Sequence[EncodedSentence]) -> np.ndarray:
    """Every sentence's character -> token map, with tokens numbered across the sentences."""
    parts, base = [], 0
    for e in encoded:
        k = e.char_token.astype(np.int64)
        parts.append(np.where(k < 0, -1, k + base))
        base += e.num_tokens
    return _cat(parts)


def _split(array: np.ndarray, lengths: Sequence[int]) -> list[torch.Tensor]:
    """Per-sentence tensors (views of one array; torch.from_numpy shares the memory)."""
    bounds = np.cumsum(lengths)[:-1] if len(lengths) else []
    return [torch.from_numpy(part) for part in np.split(np.ascontiguousarray(array), bounds)]


def _starts(counts: np.ndarray) -> np.ndarray:
    """Where each of consecutive runs of ``counts`` items begins."""
    return np.cumsum(counts) - counts
