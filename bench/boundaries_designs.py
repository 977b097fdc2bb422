"""The boundary designs bench/boundaries.py compares, and how each is scored against gold.

* Kiwi (kiwipiepy): :class:`KiwiMorphemes` analyses each text once and keeps what loading and
  analysing cost; :func:`trim_end` cuts an entity's trailing particles and endings.
* Tags and scores: entities from character tags and back, the official KLUE F1 over the
  non-space characters (ner_lit's CharMacroF1 / EntityMacroF1).
* Token units: which token (or, for the morpheme pre-split, which piece) owns each character,
  the pre-split simulation, and the shares of gold entities a design can not end exactly.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Sequence

import numpy as np

from bench import common

SLOTS = (1, 2, 4, 8)
DEFAULT_SLOTS = 8
#: Kiwi tags trimmed off an entity's end: particles (J*), endings (E*), the copula, noun suffixes.
TRIM_TAGS = ("VCP", "XSN")
WARMUP_TEXT = "김철수는 2019년 3월 서울에서 일했다."

Morphemes = list[tuple[int, int, str]]  # (start, end, tag) per morpheme, in the text's characters
Spans = list[tuple[int, int, str]]  # (start, end, type) per entity, end exclusive


# ================================================================================ Kiwi
class KiwiMorphemes:
    """kiwipiepy loaded once, each text analysed once; what loading and analysing cost.

    The costs are recorded because trimming or pre-splitting with Kiwi puts the analyser on
    the serving path: its load time and memory come on top of the model's, its analysis on top
    of every request.
    """

    def __init__(self) -> None:
        before = common.rss_bytes()
        t0 = time.perf_counter()
        try:
            from kiwipiepy import Kiwi
        except ImportError:
            sys.exit("bench/boundaries.py needs kiwipiepy: python -m pip install -e '.[bench]' (make install-bench)")

        self.kiwi = Kiwi()
        self.load_s = time.perf_counter() - t0
        # the first analysis loads the rest of the model, at a cost of its own: counted apart
        t0 = time.perf_counter()
        self.kiwi.tokenize(WARMUP_TEXT)
        self.first_analysis_s = time.perf_counter() - t0
        self.rss_after_load = common.rss_bytes() - before
        self._rss_before = before
        self.seconds: list[float] = []
        self.cache: dict[str, Morphemes] = {}

    def of(self, text: str) -> Morphemes:
        found = self.cache.get(text)
        if found is None:
            t0 = time.perf_counter()
            tokens = self.kiwi.tokenize(text)
            self.seconds.append(time.perf_counter() - t0)
            found = self.cache[text] = [(int(t.start), int(t.start + t.len), str(t.tag)) for t in tokens]
        return found

    def costs(self) -> dict[str, Any]:
        import kiwipiepy

        ms = [s * 1000 for s in self.seconds]
        return {"kiwipiepy": kiwipiepy.__version__, "load_s": self.load_s, "first_analysis_s": self.first_analysis_s,
                "rss_increase_after_load_bytes": self.rss_after_load,
                "rss_increase_after_analysis_bytes": common.rss_bytes() - self._rss_before, "sentences_analysed": len(ms),
                "analysis_ms_p50": common.median(ms), "analysis_ms_mean": float(np.mean(ms)) if ms else float("nan"),
                "analysis_ms_p99": float(np.percentile(ms, 99)) if ms else float("nan")}


def trim_end(text: str, start: int, end: int, morphemes: Morphemes) -> int:
    """The entity ``[start, end)``'s end with trailing particles / endings / copula / noun suffix cut off.

    The morphemes inside the span are taken from the end while the last one is such a
    morpheme and removing it leaves something; trailing whitespace goes too.
    """
    inside = [m for m in morphemes if m[0] >= start and m[1] <= end]
    while inside:
        m_start, _, tag = inside[-1]
        if not (tag.startswith(("J", "E")) or tag in TRIM_TAGS) or m_start <= start:
            break
        end = m_start
        inside = [m for m in inside[:-1] if m[1] <= end]
    while end > start and text[end - 1].isspace():
        end -= 1
    return end


# ================================================================================ tags and scores
def entities_of(text: str, tag_ids: Sequence[int], labels: Sequence[str]) -> Spans:
    """Strict IOB2 entities as ``predict`` reports them (ner_lit.alignment.answers.entities_from_tags)."""
    from ner_lit.alignment.answers import entities_from_tags

    return [(e.start, e.end, e.label) for e in entities_from_tags(text, [labels[int(i)] for i in tag_ids])]


def tags_of(text: str, spans: Spans, label2id: dict[str, int]) -> np.ndarray:
    """Character tag ids of entity spans: B- on the first character, I- on the rest."""
    tags = np.full(len(text), label2id["O"], dtype=np.int64)
    for start, end, label in spans:
        tags[start] = label2id[f"B-{label}"]
        tags[start + 1 : end] = label2id[f"I-{label}"]
    return tags


def trimmed(text: str, spans: Spans, morphemes: Morphemes) -> Spans:
    return [(s, trim_end(text, s, e, morphemes), label) for s, e, label in spans]


def nonspace(text: str) -> np.ndarray:
    return np.fromiter((not c.isspace() for c in text), dtype=bool, count=len(text))


def score(labels: Sequence[str], texts: Sequence[str], pred: Sequence[np.ndarray], gold: Sequence[np.ndarray]) -> dict[str, Any]:
    """Official KLUE F1c / F1e (x100) over the non-space characters, per-type F1e and the entity recall."""
    import torch

    from ner_lit.training.metrics import MACRO_AVG, MICRO_AVG, CharMacroF1, EntityMacroF1

    keep = [nonspace(t) for t in texts]
    p = [torch.as_tensor(np.asarray(x, dtype=np.int64)[k]) for x, k in zip(pred, keep)]
    g = [torch.as_tensor(np.asarray(x, dtype=np.int64)[k]) for x, k in zip(gold, keep)]
    f1c, f1e = CharMacroF1(labels), EntityMacroF1(labels)
    f1c.update(p, g)
    f1e.update(p, g)
    report = f1e.report()
    return {"F1c": float(f1c.compute()), "F1e": float(f1e.compute()), "entity_recall": report[MICRO_AVG]["recall"],
            "per_type_F1e": {k: v["f1"] for k, v in report.items() if k not in (MICRO_AVG, MACRO_AVG)}}


def share(flags: Sequence[bool]) -> float:
    return 100.0 * sum(flags) / len(flags) if flags else 0.0


# ================================================================================ token units
def token_units(enc) -> list[np.ndarray]:
    """Per sentence, the owning token of every character (-1: none)."""
    return [np.asarray(e.char_token, dtype=np.int64) for e in enc]


def presplit(enc, morph_starts: Sequence[Sequence[int]], gold: Sequence[np.ndarray], inside: np.ndarray,
             outside: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Token tagging where every morpheme start inside a token also starts a piece: per sentence
    the characters' tags (``first_char`` per piece, its other characters ``I-`` of it or ``O``) and
    every character's piece (-1: none)."""
    tags, units = [], []
    for e, starts, g in zip(enc, morph_starts, gold):
        owner = np.asarray(e.char_token, dtype=np.int64)
        n = len(owner)
        covered = owner >= 0
        boundary = np.zeros(n, dtype=bool)
        token_start = np.asarray(e.offsets, dtype=np.int64)[:, 0]
        owned = token_start < np.asarray(e.offsets, dtype=np.int64)[:, 1]
        boundary[token_start[owned]] = True
        cut = np.asarray([s for s in starts if 0 <= s < n], dtype=np.int64)
        boundary[cut] = True
        boundary &= covered
        first = np.maximum.accumulate(np.where(boundary, np.arange(n), 0)) if n else np.zeros(0, dtype=np.int64)
        t = np.where(boundary, g, inside[g[first]]) if n else np.zeros(0, dtype=np.int64)
        tags.append(np.where(covered, t, outside))
        units.append(np.where(covered, np.cumsum(boundary) - 1, -1))
    return tags, units


def ends_inside(spans: Sequence[Spans], units: Sequence[np.ndarray]) -> float:
    """% of the gold entities whose last character and the next one belong to the same unit
    (token or piece): the entities token tagging can not end exactly."""
    flags = []
    for sp, u in zip(spans, units):
        for _, end, _ in sp:
            flags.append(bool(end < len(u) and u[end] >= 0 and u[end] == u[end - 1]))
    return share(flags)


def past_slots(spans: Sequence[Spans], enc, slots: int) -> float:
    """% of the gold entities with a boundary no ``char`` tagger of ``slots`` rows can reach: a start,
    or the first character after the end, at a token's ``slots``-th character or later (those
    characters continue the last row's tag)."""
    flags = []
    for sp, e in zip(spans, enc):
        owner = np.asarray(e.char_token, dtype=np.int64)
        start = np.asarray(e.offsets, dtype=np.int64)[:, 0]
        # per character: its position inside its token (-1 where no token owns it), one past the end too
        depth = np.append(np.where(owner >= 0, np.arange(len(owner)) - start[np.maximum(owner, 0)], -1), -1)
        for s, end, _ in sp:
            flags.append(bool(depth[s] >= slots or (depth[end] >= slots and owner[end] == owner[end - 1])))
    return share(flags)

