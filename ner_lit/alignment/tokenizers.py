"""Which characters each token owns, read off a fast tokenizer.

Offsets from Hugging Face tokenizers disagree across vocabularies about spaces and the
SentencePiece ``▁`` marker; this module turns them into one rule (every non-space
character belongs to exactly one token) and finds where a tokenizer puts its special tokens.
"""
from __future__ import annotations

import hashlib
import json
import weakref

import numpy as np
from tokenizers import Tokenizer

from ner_lit.alignment.windows import SPIECE_UNDERLINE, AlignmentError


def owned_spans(text: str, raw: np.ndarray, marker: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The characters each token owns, and per character its owning token (-1 if none).

    ``raw`` is the tokenizer's ``[tokens, 2]`` offsets; ``marker`` flags the tokens that are
    only SentencePiece's ``▁`` (they own nothing, see the module's rules). A span's edge
    whitespace is trimmed, and a token owns only characters after the last one an earlier
    token owns (offsets come in text order), so spans never overlap. Linear in the text's
    and the tokens' lengths.
    """
    space = np.fromiter((c.isspace() for c in text), dtype=bool, count=len(text))
    start, end = _owned(space, raw, marker)
    return np.stack([start, end], axis=1).astype(np.int32), _char_owner(start, end, len(text))


def _owned(space: np.ndarray, raw: np.ndarray, marker: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The [start, end) each token owns (:func:`owned_spans`' rules), from the characters' whitespace flags.

    The same for one text or for a chunk's texts concatenated (``raw`` shifted to match):
    a token's raw span lies in its own text, a search for the next or previous solid
    character that leaves it is clipped back by the span's other edge, and every span of a
    text ends before the next text's first span starts.
    """
    n_chars = len(space)
    chars = np.arange(n_chars, dtype=np.int64)
    # next_solid[i]: the first non-space character at or after i; solid_end[b]: one past the last before b
    next_solid = np.append(np.minimum.accumulate(np.where(space, n_chars, chars)[::-1])[::-1], n_chars)
    solid_end = np.concatenate(([0], np.maximum.accumulate(np.where(space, 0, chars + 1))))
    a = np.minimum(next_solid[raw[:, 0]], raw[:, 1])
    b = np.maximum(solid_end[raw[:, 1]], a)
    b = np.where(marker, a, b)
    taken = np.concatenate(([0], np.maximum.accumulate(b)[:-1])) if len(b) else b
    start = np.maximum(a, taken)
    return start, np.maximum(b, start)


def _char_owner(start: np.ndarray, end: np.ndarray, n_chars: int) -> np.ndarray:
    """Per character, the token whose (non-overlapping) span [start, end) holds it; -1 if none."""
    length = end - start
    char_token = np.full(n_chars, -1, dtype=np.int32)
    owner = np.repeat(np.arange(len(start), dtype=np.int32), length)
    first = np.repeat(start - (np.cumsum(length) - length), length)
    char_token[first + np.arange(len(owner))] = owner
    return char_token


#: str.isspace of every code point up to U+3001; none above is whitespace (U+3000, the
#: ideographic space, is the last; tests check).
_SPACE = np.fromiter((chr(i).isspace() for i in range(0x3002)), dtype=bool, count=0x3002)


def _space_mask(text: str) -> np.ndarray:
    """``str.isspace`` of every character of ``text``, by code point lookup rather than a call per character."""
    code = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    return _SPACE[np.minimum(code, len(_SPACE) - 1)]


#: The text tokenizer of each transformers tokenizer, built once (a 250k-piece vocabulary takes seconds).
_TEXT_TOKENIZERS: "weakref.WeakKeyDictionary[object, tuple[Tokenizer, np.ndarray]]" = weakref.WeakKeyDictionary()


def text_tokenizer(tokenizer) -> tuple[Tokenizer, np.ndarray]:
    """A private copy of a fast tokenizer's pipeline that tokenizes special-token spellings
    as text, and the ids of its pieces that are only SentencePiece's ``▁`` (``▁``, ``▁▁``...).

    ``split_special_tokens=True`` alone does not do it: it only stops the added-token pass
    from extracting them, and a SentencePiece (Unigram) vocabulary holds ``<s>``, ``<pad>``,
    ``</s>``, ``<unk>`` and ``<mask>`` as pieces of score 0, the best there is, so its model
    matches them inside words all the same. The copy renames those pieces in its own
    vocabulary to strings the pipeline can never produce (they contain a plain space, which
    the SentencePiece pre-tokenizer turns into ``▁``), keeping every id and score; WordPiece
    and WordLevel vocabularies get the same renaming. Non-special added tokens are still
    recognised, as in the original. Being a copy, it also shares no padding, truncation or
    ``encode_special_tokens`` state with transformers' calls on the original. A tokenizer
    whose copy still turns a special spelling into a special id is refused (AlignmentError).
    """
    if isinstance(tokenizer, PieceNames):
        return tokenizer.pieces, tokenizer.markers
    try:
        return _TEXT_TOKENIZERS[tokenizer]
    except (KeyError, TypeError):
        pass
    source = tokenizer.backend_tokenizer.to_str()
    special = {str(t) for t in tokenizer.all_special_tokens}
    key = hashlib.sha256(json.dumps([_KEPT_FORMAT, source, sorted(special)]).encode()).hexdigest()
    large = len(source) >= KEEP_MIN_CHARS
    if large:
        _remember_key(tokenizer, key)
        kept = _kept_copy(key)
        if kept is not None:
            _refuse_special_text(tokenizer, kept[0])
            return _remember(tokenizer, *kept)
    spec = json.loads(source)
    model = spec["model"]
    pieces: list[tuple[str, int]] = []
    if model.get("type") == "Unigram":
        pieces = [(piece, i) for i, (piece, _) in enumerate(model["vocab"])]
        model["vocab"] = [[f" {piece} " if piece in special else piece, score] for piece, score in model["vocab"]]
    elif model.get("type") in ("WordPiece", "WordLevel"):
        pieces = list(model["vocab"].items())
        model["vocab"] = {f" {piece} " if piece in special else piece: i for piece, i in model["vocab"].items()}
        if model.get("unk_token") in special:
            model["unk_token"] = f" {model['unk_token']} "
    elif isinstance(model.get("vocab"), dict):  # BPE: merges keep to pre-tokens (checked below); markers only
        pieces = list(model["vocab"].items())
    spec["truncation"] = spec["padding"] = None
    text = json.dumps(spec)
    copy = Tokenizer.from_str(text)
    copy.encode_special_tokens = True
    _refuse_special_text(tokenizer, copy)
    markers = np.asarray(sorted(i for piece, i in pieces if piece and not piece.strip(SPIECE_UNDERLINE)), dtype=np.int64)
    if large:
        _keep_copy(key, text, markers)
    return _remember(tokenizer, copy, markers)


#: The key of each large tokenizer's copy kept on disk (what a restart finds it by: :class:`PieceNames`).
_KEPT_KEYS: "weakref.WeakKeyDictionary[object, str]" = weakref.WeakKeyDictionary()


def _remember_key(tokenizer, key: str) -> None:
    try:
        _KEPT_KEYS[tokenizer] = key
    except TypeError:
        pass


def _remember(tokenizer, copy: Tokenizer, markers: np.ndarray) -> tuple[Tokenizer, np.ndarray]:
    try:
        _TEXT_TOKENIZERS[tokenizer] = (copy, markers)
    except TypeError:  # not weak-referenceable: simply not cached
        pass
    return copy, markers


#: The version of the copies kept on disk (part of their key): raise it when the renaming changes.
_KEPT_FORMAT = 1
#: Only a tokenizer this large (its JSON, in characters) has its copy kept on disk: a small one is
#: built in milliseconds (XLM-R's, 17 M characters, takes seconds).
KEEP_MIN_CHARS = 1_000_000


def _kept_folder():
    from ner_lit.resources import cache_root

    return cache_root() / "text-tokenizers"


def _kept_copy(key: str) -> tuple[Tokenizer, np.ndarray] | None:
    """A copy an earlier process built from the same tokenizer, kept in ner_lit's cache folder
    (``<key>.json`` and its record ``<key>.record.json`` with the sha256 and the marker ids),
    or None. A large vocabulary's copy takes seconds to build in Python and a fraction of one
    to load; a record that does not match its file is a miss."""
    folder = _kept_folder()
    try:
        record = json.loads((folder / f"{key}.record.json").read_text(encoding="utf-8"))
        data = (folder / f"{key}.json").read_bytes()
        if record.get("sha256") != hashlib.sha256(data).hexdigest():
            return None
        copy = Tokenizer.from_str(data.decode("utf-8"))
        copy.encode_special_tokens = True
        return copy, np.asarray(record["markers"], dtype=np.int64)
    except Exception:  # noqa: BLE001 - a damaged or foreign record is a cache miss, never an error
        return None


def _keep_copy(key: str, text: str, markers: np.ndarray) -> None:
    from ner_lit.files import write_json_atomic, write_text_atomic

    folder = _kept_folder()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        data = text.encode("utf-8")
        write_text_atomic(folder / f"{key}.json", text)
        write_json_atomic(folder / f"{key}.record.json", {"format": _KEPT_FORMAT, "sha256": hashlib.sha256(data).hexdigest(),
                                                          "markers": markers.tolist()})
    except OSError:
        return


def _refuse_special_text(tokenizer, text_tok: Tokenizer) -> None:
    """An AlignmentError if the text tokenizer still turns a special-token spelling into a special id.

    ``<unk>`` is no special id here: unknown characters legitimately become it.
    """
    special_ids = set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}
    for spelling in tokenizer.all_special_tokens:
        for text in (str(spelling), f"a {spelling} b", f"a{spelling}b"):
            hit = special_ids.intersection(text_tok.encode(text, add_special_tokens=False).ids)
            if hit:
                raise AlignmentError(
                    f"{type(tokenizer).__name__}: the text {text!r} becomes special token id {min(hit)}; "
                    "ner_lit can not keep user text apart from special tokens with this tokenizer"
                )


def special_layout(tokenizer) -> tuple[list[int], list[int]]:
    """The special token ids a tokenizer puts before and after a single sentence.

    Read off an encoding rather than from tokenizer internals, which differ between
    model families and transformers versions.
    """
    if isinstance(tokenizer, PieceNames):
        return list(tokenizer.prefix), list(tokenizer.suffix)
    probe = "a"
    with_special = tokenizer(probe, add_special_tokens=True)["input_ids"]
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    for i in range(len(with_special) - len(bare) + 1):
        if with_special[i : i + len(bare)] == bare:
            return list(with_special[:i]), list(with_special[i + len(bare) :])
    raise AlignmentError(f"{type(tokenizer).__name__}: can not locate the text between its special tokens")


class PieceNames:
    """What encoding and answering need of a tokenizer once the text tokenizer exists: the text
    tokenizer itself (:func:`text_tokenizer`) with its ``▁`` marker ids, each id's piece, the
    unknown and padding ids, and the special ids around a sentence (:func:`special_layout`).

    A server keeps this instead of the transformers tokenizer (:meth:`Predictor.release_tokenizer
    <ner_lit.inference.predictor.Predictor.release_tokenizer>`), so that one copy of a large
    vocabulary stays in memory, not two. The pieces are the same: the text tokenizer renames only
    special pieces, which content tokens never are (the unknown piece is shown as the text's own
    characters anyway). Where the text tokenizer's copy is kept on disk, :meth:`record` says how
    to find it again, and a restart builds this from that record (:meth:`from_record`) without
    loading transformers or the tokenizer's own files.
    """

    is_fast = True

    def __init__(self, pieces: Tokenizer, markers: np.ndarray, unk_token_id: int | None, pad_token_id: int | None,
                 unk_token: str | None, prefix: list[int], suffix: list[int], kept_key: str | None = None) -> None:
        self.pieces, self.markers = pieces, markers
        self.unk_token_id, self.pad_token_id, self.unk_token = unk_token_id, pad_token_id, unk_token
        self.prefix, self.suffix = list(prefix), list(suffix)
        self.kept_key = kept_key

    @classmethod
    def of(cls, tokenizer, aligner) -> "PieceNames":
        """The names of a transformers tokenizer, with the text tokenizer and layout its aligner built."""
        return cls(aligner.text_tokenizer, aligner.marker_ids, tokenizer.unk_token_id, tokenizer.pad_token_id,
                   tokenizer.unk_token, aligner.prefix, aligner.suffix, _KEPT_KEYS.get(tokenizer))

    def record(self) -> dict | None:
        """What :meth:`from_record` needs (plain JSON values), or None where no copy is kept on disk."""
        if self.kept_key is None:
            return None
        return {"format": _KEPT_FORMAT, "kept_key": self.kept_key, "unk_token_id": self.unk_token_id,
                "pad_token_id": self.pad_token_id, "unk_token": self.unk_token, "prefix": self.prefix,
                "suffix": self.suffix}

    @classmethod
    def from_record(cls, record: object) -> "PieceNames | None":
        """The names a :meth:`record` describes, its text tokenizer read back from the disk copy (sha256
        checked), or None where the record is not this version's or the copy is gone or damaged."""
        if not isinstance(record, dict) or record.get("format") != _KEPT_FORMAT:
            return None
        kept = _kept_copy(str(record.get("kept_key")))
        if kept is None:
            return None
        try:
            return cls(*kept, record["unk_token_id"], record["pad_token_id"], record["unk_token"],
                       [int(i) for i in record["prefix"]], [int(i) for i in record["suffix"]], str(record["kept_key"]))
        except (KeyError, TypeError, ValueError):
            return None

    def convert_ids_to_tokens(self, ids) -> list[str]:
        return [self.unk_token if i == self.unk_token_id else self.pieces.id_to_token(int(i)) for i in ids]
