"""What the alignment hands on: windows of token ids, per-character slots, encoded sentences.

Plain records with no behaviour beyond their own shape, so that the data, training and
inference packages can hold them without importing the aligner itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ner_lit.errors import UserError

LabelRule = Literal["first_char", "first_entity"]

Decoding = Literal["viterbi", "argmax"]

Tagging = Literal["char", "token"]


#: ``char`` tagging: label rows per token unless a tagger says otherwise. Enough rows that almost
#: no entity boundary falls past a token's last one, for SentencePiece vocabularies and for WordPiece
#: ones trained on Korean (whose pieces run longer); bench/results/boundaries.md has the alignment
#: ceiling per number of rows (bench/boundaries.py measures it).
DEFAULT_CHAR_SLOTS = 8


IGNORE = -100


#: SentencePiece's word-boundary mark (U+2581), the first character of a word's first piece.
SPIECE_UNDERLINE = "\u2581"


class AlignmentError(UserError):
    """A tokenizer or setting the alignment can not work with."""


@dataclass
class Window:
    """One model input: at most ``max_length`` token ids of one sentence, specials included."""

    sentence: int  # index of the sentence in the list given to ``encode``
    input_ids: list[int]
    # per input id (``token`` tagging) or per input id a list of one per character slot (``char``);
    # -100 on special tokens and unused slots; None without gold tags
    labels: list[int] | list[list[int]] | None


@dataclass(frozen=True)
class CharSlots:
    """Where ``char`` tagging's training labels come from: each content token's characters'
    gold tags, one per slot (a small picklable record: DataLoader workers build windows with it).
    """

    slots: int
    n_prefix: int
    n_suffix: int

    def token_labels(self, offsets: np.ndarray, gold: np.ndarray) -> np.ndarray:
        """``[tokens, slots]`` labels: slot k of a token is the gold tag id of its k-th owned
        character, -100 past its last one. ``offsets``: the tokens' owned ``[start, end)`` in
        the characters of ``gold`` (a sentence's tag ids)."""
        offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
        index = offsets[:, :1] + np.arange(self.slots, dtype=np.int64)
        inside = index < offsets[:, 1:]
        if len(gold) == 0:
            return np.full(index.shape, IGNORE, dtype=np.int64)
        values = np.asarray(gold, dtype=np.int64)[np.minimum(index, len(gold) - 1)]
        return np.where(inside, values, IGNORE)

    def window_labels(self, offsets: np.ndarray, gold: np.ndarray) -> list[list[int]]:
        """A window's ``[ids][slots]`` labels: its content tokens' (``offsets``), specials -100."""
        return self.with_specials(self.token_labels(offsets, gold))

    def with_specials(self, content: np.ndarray) -> list[list[int]]:
        """A window's content tokens' ``[tokens, slots]`` labels with -100 rows for its special tokens."""
        out = np.full((self.n_prefix + len(content) + self.n_suffix, self.slots), IGNORE, dtype=np.int64)
        out[self.n_prefix : self.n_prefix + len(content)] = content
        return out.tolist()


@dataclass
class EncodedSentence:
    """A sentence's windows plus the maps that turn their predictions back into characters.

    The maps are int32 arrays rather than lists: a long line has as many entries as
    characters, and a Python int list would take several times the memory.
    """

    index: int
    text_length: int
    windows: list[Window]
    offsets: np.ndarray  # [content tokens, 2]: the characters [start, end) each owns
    token_window: np.ndarray  # per content token: the window that predicts it
    token_pos: np.ndarray  # per content token: its position in that window's input_ids
    char_token: np.ndarray  # per character: the content token owning it, -1 if none

    @property
    def num_tokens(self) -> int:
        return len(self.offsets)


@dataclass
class EncodedChunk:
    """The encoding of many sentences as flat arrays (what the encoded cache stores), from
    :meth:`Aligner.encode_flat`: the same windows and maps as :meth:`Aligner.encode` gives per
    sentence, concatenated in sentence order.

    Why: a training corpus is encoded once, a chunk of thousands of sentences at a time; built
    with array operations over the whole chunk, it costs no NumPy call and no Python object per
    sentence. Token and window numbers in ``token_window``/``char_token`` are local to their
    sentence, ``window_sentence`` to the chunk.
    """

    n_windows: np.ndarray  # per sentence
    n_tokens: np.ndarray  # per sentence: its content tokens
    n_chars: np.ndarray  # per sentence
    window_length: np.ndarray  # per window: its ids, specials included
    window_sentence: np.ndarray  # per window: its sentence's index in the chunk
    window_token: np.ndarray  # per window: its first content token (of its sentence)
    input_ids: np.ndarray  # every window's ids, one window after another
    labels: np.ndarray | None  # per id, -100 on special tokens; None without gold tags
    offsets: np.ndarray  # [content tokens, 2]: the characters [start, end) each owns
    token_window: np.ndarray  # per content token: the window (of its sentence) that predicts it
    token_pos: np.ndarray  # per content token: its position in that window's ids
    char_token: np.ndarray  # per character: the content token (of its sentence) owning it, -1 if none
    char_tags: np.ndarray | None  # per character: its gold tag's id; None without gold tags


@dataclass
class Decoded:
    """Per-sentence predictions: character tag ids and probabilities, and the same per content token."""

    char_tags: list[torch.Tensor]
    char_probs: list[torch.Tensor]
    token_tags: list[torch.Tensor]
    token_probs: list[torch.Tensor]

    def sentence(self, j: int) -> "Decoded":
        """Sentence ``j`` of a decoded batch, as a batch of its own."""
        return Decoded([self.char_tags[j]], [self.char_probs[j]], [self.token_tags[j]], [self.token_probs[j]])
