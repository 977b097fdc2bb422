"""Datasets over an encoded corpus held as flat arrays (:mod:`ner_lit.data.cache`).

Why: a Python object per window or sentence costs kilobytes, so a large corpus would need
gigabytes before training starts. Here a window or an evaluation sentence is made when a
batch asks for it, by slicing the (memory-mapped) arrays; nothing per sentence stays in
memory. :func:`encode_into` fills an entry from a stream of sentences, one chunk at a time.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import chain, repeat
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np
import torch

from ner_lit.alignment.aligner import Aligner
from ner_lit.alignment.windows import CharSlots, EncodedChunk, EncodedSentence, Window
from ner_lit.corpus.records import Sentence
from ner_lit.data.cache import Entry, EntryWriter

#: Sentences encoded per chunk: enough for the tokenizer's batch call, small enough to bound memory.
CHUNK = 4096


@dataclass
class EvalItem:
    """A sentence with its encoding and the gold ids of its non-whitespace characters."""

    sentence: Sentence
    encoded: EncodedSentence
    gold: torch.Tensor  # label ids of the scored (non-whitespace) characters
    scored: torch.Tensor  # bool mask over the text: which characters are scored


def chunks(sentences: Iterable[Sentence], size: int = CHUNK) -> Iterator[list[Sentence]]:
    """Consecutive lists of ``size`` sentences (the last one shorter)."""
    part: list[Sentence] = []
    for s in sentences:
        part.append(s)
        if len(part) == size:
            yield part
            part = []
    if part:
        yield part


def pack_chunk(encoded: EncodedChunk, sentences: Sequence[Sentence], label2id: dict[str, int]) -> dict[str, np.ndarray]:
    """The arrays :meth:`EntryWriter.append` takes for one chunk (window sentences local to the chunk)."""
    texts = [s.text.encode("utf-8") for s in sentences]
    ids = [s.id.encode("utf-8") for s in sentences]
    gold = encoded.char_tags  # the tags' ids, read once for the labels; without labels, unknown tags count as 0
    if gold is None:
        tags = chain.from_iterable(s.tags for s in sentences)
        gold = np.fromiter(map(label2id.get, tags, repeat(0)), np.int64, int(encoded.n_chars.sum()))
    chunk = {
        "n_windows": encoded.n_windows,
        "n_tokens": encoded.n_tokens,
        "n_chars": encoded.n_chars,
        "n_text_bytes": np.fromiter(map(len, texts), np.int64, len(texts)),
        "n_id_bytes": np.fromiter(map(len, ids), np.int64, len(ids)),
        "window_length": encoded.window_length,
        "window_sentence": encoded.window_sentence,
        "window_token": encoded.window_token,
        "input_ids": encoded.input_ids,
        "offsets": encoded.offsets,
        "token_window": encoded.token_window,
        "token_pos": encoded.token_pos,
        "char_token": encoded.char_token,
        "gold": gold,
        "text": np.frombuffer(b"".join(texts), dtype=np.uint8),
        "ids": np.frombuffer(b"".join(ids), dtype=np.uint8),
    }
    if encoded.labels is not None:
        chunk["labels"] = encoded.labels
    return chunk


def encode_into(writer: EntryWriter, aligner: Aligner, sentences: Iterable[Sentence], with_labels: bool,
                chunk: Optional[int] = None) -> int:
    """Encode ``sentences`` chunk by chunk (default :data:`CHUNK`) into ``writer``, one tokenizer batch call and
    one :meth:`Aligner.encode_flat` a chunk; returns the count."""
    chunk = chunk or CHUNK
    n = 0
    for part in chunks(sentences, chunk):
        writer.append(pack_chunk(aligner.encode_flat(part, with_labels=with_labels), part, aligner.label2id))
        n += len(part)
    return n


class TrainWindows(Sequence[Window]):
    """The training windows of an entry, one :class:`Window` made per access.

    With ``char_slots`` (``char`` tagging), a window's labels are its tokens' characters' gold
    tags, ``[ids, slots]``, made from the entry's per-character gold ids and token offsets when
    the window is asked for: the entry stays the same for every slot count.
    """

    def __init__(self, entry: Entry, char_slots: Optional[CharSlots] = None) -> None:
        self.entry = entry
        self.char_slots = char_slots

    def __len__(self) -> int:
        return self.entry.counts["windows"]

    def __getitem__(self, j: int) -> Window:  # type: ignore[override]
        if not -len(self) <= j < len(self):
            raise IndexError(j)
        j %= len(self)
        e = self.entry
        a, b = int(e.window_ids[j]), int(e.window_ids[j + 1])
        s = int(e.window_sentence[j])
        labels = None
        if e.with_labels:
            labels = e.labels[a:b].tolist() if self.char_slots is None else _slot_labels(e, s, j, b - a, self.char_slots)
        return Window(s, e.input_ids[a:b].tolist(), labels)

    def __iter__(self) -> Iterator[Window]:
        return (self[j] for j in range(len(self)))

    def lengths(self) -> np.ndarray:
        """Every window's length in ids (the length-grouped sampler's input)."""
        return np.diff(self.entry.window_ids).astype(np.int32)


class EvalSentences(Sequence[EvalItem]):
    """The evaluation sentences of an entry, one :class:`EvalItem` made per access (a batch at a time)."""

    def __init__(self, entry: Entry, labels: Sequence[str], char_slots: Optional[CharSlots] = None) -> None:
        self.entry = entry
        self.labels = list(labels)
        self.char_slots = char_slots  # as for TrainWindows

    def __len__(self) -> int:
        return len(self.entry)

    def __getitem__(self, i: int) -> EvalItem:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        sentence = self.sentence(i)
        e = self.entry
        c0, c1 = int(e.sentence_chars[i]), int(e.sentence_chars[i + 1])
        gold = torch.from_numpy(e.gold[c0:c1].astype(np.int64))
        scored = torch.tensor([not c.isspace() for c in sentence.text], dtype=torch.bool)
        return EvalItem(sentence, self.encoded(i), gold[scored] if len(sentence.text) else gold, scored)

    def __iter__(self) -> Iterator[EvalItem]:
        return (self[i] for i in range(len(self)))

    def sentence(self, i: int) -> Sentence:
        """Sentence i: id and text from the entry's bytes, tags from its gold ids."""
        e = self.entry
        text = bytes(e.text[int(e.sentence_text_bytes[i]):int(e.sentence_text_bytes[i + 1])]).decode("utf-8")
        sid = bytes(e.ids[int(e.sentence_id_bytes[i]):int(e.sentence_id_bytes[i + 1])]).decode("utf-8")
        c0, c1 = int(e.sentence_chars[i]), int(e.sentence_chars[i + 1])
        return Sentence(sid, text, [self.labels[g] for g in e.gold[c0:c1].tolist()])

    def encoded(self, i: int) -> EncodedSentence:
        """Sentence i's windows and alignment maps (int32 copies of the slices: the maps outlive no batch)."""
        e = self.entry
        w0, w1 = int(e.sentence_windows[i]), int(e.sentence_windows[i + 1])
        t0, t1 = int(e.sentence_tokens[i]), int(e.sentence_tokens[i + 1])
        c0, c1 = int(e.sentence_chars[i]), int(e.sentence_chars[i + 1])
        bounds = e.window_ids[w0:w1 + 1].tolist()
        ids = e.input_ids[bounds[0]:bounds[-1]].tolist()
        if e.with_labels and self.char_slots is not None:
            windows = [Window(i, ids[a - bounds[0]:b - bounds[0]], _slot_labels(e, i, w0 + j, b - a, self.char_slots))
                       for j, (a, b) in enumerate(zip(bounds, bounds[1:]))]
        else:
            labels = e.labels[bounds[0]:bounds[-1]].tolist() if e.with_labels else None
            windows = [Window(i, ids[a - bounds[0]:b - bounds[0]], labels[a - bounds[0]:b - bounds[0]] if labels is not None else None)
                       for a, b in zip(bounds, bounds[1:])]
        return EncodedSentence(i, c1 - c0, windows, np.array(e.offsets[t0:t1], dtype=np.int32),
                               np.array(e.token_window[t0:t1], dtype=np.int32), np.array(e.token_pos[t0:t1], dtype=np.int32),
                               np.array(e.char_token[c0:c1], dtype=np.int32))

    def window_counts(self) -> np.ndarray:
        return np.diff(self.entry.sentence_windows)

    def id_counts(self) -> np.ndarray:
        """Per sentence, the ids of all its windows (the evaluation sampler sorts by it)."""
        e = self.entry
        firsts = e.window_ids[np.asarray(e.sentence_windows)]
        return np.diff(firsts)


def _slot_labels(e: Entry, sentence: int, window: int, n_ids: int, slots: CharSlots) -> list[list[int]]:
    """Window ``window`` (of sentence ``sentence``, ``n_ids`` ids)'s ``[ids, slots]`` character labels."""
    t0, c0, c1 = int(e.sentence_tokens[sentence]), int(e.sentence_chars[sentence]), int(e.sentence_chars[sentence + 1])
    first = t0 + int(e.window_token[window])
    count = n_ids - slots.n_prefix - slots.n_suffix
    return slots.window_labels(e.offsets[first:first + count], e.gold[c0:c1])
