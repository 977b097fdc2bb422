"""The most probable valid IOB2 sequence: Viterbi over (sentence, position, label) scores.

A tag ``I-X`` may only follow ``B-X`` or ``I-X``; decoding under that constraint turns a model's
per-position scores into well-formed spans. A CRF head adds learned scores for each step from
one tag to the next (``transitions``) and for the first tag (``start``); the constraint still
applies on top of them. Two implementations give the same paths: a plain loop, cheaper for a
handful of sentences, and a NumPy one batched over sentences.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

#: Up to this many sentences the Viterbi recursion runs in plain Python, one sentence after
#: another; beyond, in NumPy over all sentences at once. NumPy pays its per-call overhead at
#: every position whatever the batch, plain Python pays per token, so plain Python wins for a
#: few sentences of KLUE's length and NumPy for more (bench/results/alignment_notes.md has the
#: timings). A server's requests are decoded in batches of a few, a validation run's in batches of 64.
PYTHON_VITERBI_MAX_SENTENCES = 6


#: The score of a forbidden start or step: far below any sum of log probabilities.
_NEG = -1e30


def viterbi(logp: np.ndarray, lengths: Sequence[int], allowed: np.ndarray, may_start: np.ndarray,
            transitions: Optional[np.ndarray] = None, start: Optional[np.ndarray] = None) -> np.ndarray:
    """The best valid tag path of every sentence at once (label ids, one per token).

    ``logp`` is ``[tokens, labels]`` for the sentences' tokens one after another
    (``lengths`` tokens each); ``allowed[i, j]``: tag j may follow tag i; ``may_start[j]``:
    tag j may open a sentence; ``transitions[i, j]`` and ``start[j]``: a CRF's learned scores
    for those steps, added to the path's score. Both ways of running it (see
    ``PYTHON_VITERBI_MAX_SENTENCES``) give the same paths, ties broken towards the
    lower label id.
    """
    if len(lengths) <= PYTHON_VITERBI_MAX_SENTENCES:
        return _viterbi_python(logp, lengths, allowed, may_start, transitions, start)
    return _viterbi_numpy(logp, lengths, allowed, may_start, transitions, start)


def _viterbi_python(logp: np.ndarray, lengths: Sequence[int], allowed: np.ndarray, may_start: np.ndarray,
                    transitions: Optional[np.ndarray] = None, start: Optional[np.ndarray] = None) -> np.ndarray:
    """One sentence at a time over Python floats (float64, as NumPy's), each tag looking
    only at the tags allowed before it."""
    if transitions is not None:
        return _crf_viterbi_python(logp, lengths, allowed, may_start, transitions, start)
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
        out.extend(_backtrack(score, back))
    return np.asarray(out, dtype=np.int64)


def _crf_viterbi_python(logp: np.ndarray, lengths: Sequence[int], allowed: np.ndarray, may_start: np.ndarray,
                        transitions: np.ndarray, start: Optional[np.ndarray]) -> np.ndarray:
    """The plain loop with learned step scores: each tag weighs every previous one with its own step
    score (a forbidden step scores ``_NEG``), the first best winning, as NumPy's argmax picks."""
    c = allowed.shape[0]
    step = np.where(allowed, transitions, _NEG).tolist()
    incoming = [[step[k][j] for k in range(c)] for j in range(c)]
    first = (np.where(may_start, 0.0, _NEG) + (0.0 if start is None else start)).tolist()
    out: list[int] = []
    row = 0
    for n in lengths:
        rows = logp[row : row + n].tolist()
        row += n
        if not n:
            continue
        score = [x + f for x, f in zip(rows[0], first)]
        back: list[list[int]] = []
        for values in rows[1:]:
            new, ptr = [], []
            for j in range(c):
                candidates = [s + w for s, w in zip(score, incoming[j])]
                best = max(candidates)
                k = candidates.index(best)
                new.append(best + values[j])
                ptr.append(k)
            score = new
            back.append(ptr)
        out.extend(_backtrack(score, back))
    return np.asarray(out, dtype=np.int64)


def _backtrack(score: list[float], back: list[list[int]]) -> list[int]:
    """The best path from the last position's scores and each step's back pointers (the first best, as argmax)."""
    current = score.index(max(score))
    path = [current]
    for ptr in reversed(back):
        current = ptr[current]
        path.append(current)
    return path[::-1]


def _viterbi_numpy(logp: np.ndarray, lengths: Sequence[int], allowed: np.ndarray, may_start: np.ndarray,
                   transitions: Optional[np.ndarray] = None, start: Optional[np.ndarray] = None) -> np.ndarray:
    """All sentences at once: the recursion runs over positions, batched over sentences,
    so its cost is the longest sentence's length in small array operations, not the
    number of tokens. NumPy, not torch: these operations are a few hundred numbers each,
    where torch's intra-op thread pool only adds synchronisation (far slower on a busy machine).
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
    transition = np.where(allowed, 0.0 if transitions is None else transitions, _NEG)
    score = grid[:, 0] + np.where(may_start, 0.0, _NEG) + (0.0 if start is None else start)
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
