"""Tokenizers and model configurations built from scratch, for the tiny recipe.

The tiny recipe trains a small BERT from random weights, so its tokenizer is built from
the training texts too. Two kinds exist:

- ``"wordpiece"`` reproduces the project's reference tokenizer
  (``shared/tools/reference-model/make_tiny_model.py``) exactly, so that its figures and
  ours are side by side. It keeps case and accents: NFD accent stripping would decompose
  Hangul syllables into jamo.
- ``"syllable"`` gives one token per character. A token then never joins an entity and
  the particle after it (``경찰은``), so token labels can express every gold character tag:
  the alignment ceiling is 100%, where the WordPiece vocabulary stops at about 98 F1c.

Both are deterministic: the same texts and parameters give byte-identical saved files in
any process, whatever its hash seed, because a cached tokenizer and a rebuilt one must
encode alike, and because the `tokenizers` WordPiece trainer alone is not deterministic
(huggingface/tokenizers#1794).

This module imports nothing else of ner_lit.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Literal, Sequence

import tokenizers
from tokenizers import BertWordPieceTokenizer, Regex, Tokenizer, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import BertConfig, BertTokenizer, PreTrainedTokenizerFast

TokenizerKind = Literal["wordpiece", "syllable"]
KINDS: tuple[str, ...] = ("wordpiece", "syllable")

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
#: Ids 0..4 in this order, as in the reference model (and so ``pad_token_id=0``).
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, CLS, SEP, MASK)
MODEL_MAX_LENGTH = 512

#: Bump whenever a change here could change a built tokenizer: it is part of the cache key,
#: so a stale cached tokenizer is never mistaken for the current recipe's.
SCRATCH_RECIPE_VERSION = 1


def build_tokenizer(
    texts: Sequence[str],
    kind: TokenizerKind = "wordpiece",
    vocab_size: int = 8000,
    min_frequency: int = 2,
    limit_alphabet: int = 1000,
) -> PreTrainedTokenizerFast:
    """A fast tokenizer trained on ``texts`` that adds [CLS]/[SEP] and reports character offsets.

    ``vocab_size`` counts the special tokens. ``limit_alphabet`` only concerns "wordpiece"
    (its initial alphabet); "syllable" is bounded by ``vocab_size`` and ``min_frequency``.
    """
    if kind == "wordpiece":
        return _build_wordpiece(texts, vocab_size, min_frequency, limit_alphabet)
    if kind == "syllable":
        return _build_syllable(texts, vocab_size, min_frequency)
    raise ValueError(f"unknown tokenizer kind {kind!r}; expected one of {', '.join(KINDS)}")


def _deterministic_alphabet(
    wp: BertWordPieceTokenizer, texts: Sequence[str], limit: int
) -> tuple[list[str], list[str]]:
    """The trainer's own alphabet rule, made stable: the ``limit`` most frequent characters
    of the normalized, pre-tokenized words, ties broken by code point (the trainer's sort is
    unstable); and the ``##`` continuation tokens it would create for them, sorted (the
    trainer numbers them in hash-map order, which then breaks merge-count ties)."""
    counts: Counter[str] = Counter()
    inner: set[str] = set()
    for text in texts:
        normalized = wp.normalizer.normalize_str(text)
        for word, _ in wp.pre_tokenizer.pre_tokenize_str(normalized):
            counts.update(word)
            inner.update(word[1:])
    alphabet = [c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]]
    continuation = ["##" + c for c in sorted(inner & set(alphabet))]
    return alphabet, continuation


def _build_wordpiece(
    texts: Sequence[str], vocab_size: int, min_frequency: int, limit_alphabet: int
) -> PreTrainedTokenizerFast:
    wp = BertWordPieceTokenizer(clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False)
    alphabet, continuation = _deterministic_alphabet(wp, texts, limit_alphabet)
    wp.train_from_iterator(
        list(texts),
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS) + continuation,
        limit_alphabet=limit_alphabet,
        initial_alphabet=alphabet,
        show_progress=False,
        wordpieces_prefix="##",
    )
    # Rebuilt from the vocabulary alone, as the reference does: the trained tokenizer keeps
    # the pre-registered `##` tokens as added special tokens, which would match inside text.
    vocab = dict(sorted(wp.get_vocab().items(), key=lambda kv: kv[1]))
    return BertTokenizer(
        vocab=vocab,
        do_lower_case=False,
        strip_accents=False,
        tokenize_chinese_chars=True,
        model_max_length=MODEL_MAX_LENGTH,
    )


def _syllable_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """Whitespace is dropped, then every remaining code point is a word of its own; the
    offsets of each piece stay those of its character in the original text."""
    return pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex("."), behavior="isolated")]
    )


def _build_syllable(texts: Sequence[str], vocab_size: int, min_frequency: int) -> PreTrainedTokenizerFast:
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size {vocab_size} leaves no room beside the {len(SPECIAL_TOKENS)} special tokens")
    pre_tokenizer = _syllable_pre_tokenizer()
    # Counted with the tokenizer's own pre-tokenizer, so that "a character" means exactly
    # what it will mean at encoding time (Rust's notion of whitespace, not Python's).
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(piece for piece, _ in pre_tokenizer.pre_tokenize_str(text))
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    kept = [c for c, n in ranked if n >= min_frequency and c not in SPECIAL_TOKENS]
    chars = kept[: vocab_size - len(SPECIAL_TOKENS)]
    vocab = {token: i for i, token in enumerate(list(SPECIAL_TOKENS) + chars)}

    backend = Tokenizer(WordLevel(vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizer
    backend.post_processor = processors.TemplateProcessing(
        single=f"{CLS}:0 $A:0 {SEP}:0",
        pair=f"{CLS}:0 $A:0 {SEP}:0 $B:1 {SEP}:1",
        special_tokens=[(CLS, vocab[CLS]), (SEP, vocab[SEP])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        unk_token=UNK,
        cls_token=CLS,
        sep_token=SEP,
        mask_token=MASK,
        model_max_length=MODEL_MAX_LENGTH,
    )


def scratch_bert_config(
    vocab_size: int,
    labels: Sequence[str],
    hidden_size: int = 256,
    num_layers: int = 4,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 512,
    pad_token_id: int = 0,
) -> BertConfig:
    """A randomly initialisable BERT sized for the tiny recipe; the defaults are the
    reference model's (intermediate size 4 x hidden, as in BERT). ``labels`` names the
    classifier's outputs (a ``char`` tagger's are ``<label>@<slot>``, see ``TaggerSpec.id2label``)."""
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size {hidden_size} is not a multiple of num_heads {num_heads}")
    id2label = dict(enumerate(labels))
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=4 * hidden_size if intermediate_size is None else intermediate_size,
        max_position_embeddings=max_position_embeddings,
        type_vocab_size=2,
        pad_token_id=pad_token_id,
        num_labels=len(id2label),
        id2label=id2label,
        label2id={label: i for i, label in id2label.items()},
    )


def tokenizer_key(
    texts: Sequence[str],
    kind: TokenizerKind,
    vocab_size: int,
    min_frequency: int,
    limit_alphabet: int,
) -> str:
    """sha256 of everything a built tokenizer depends on. The `tokenizers` version is in it
    because another trainer may build another vocabulary from the same texts."""
    h = hashlib.sha256()
    recipe = {
        "recipe_version": SCRATCH_RECIPE_VERSION,
        "tokenizers": tokenizers.__version__,
        "kind": kind,
        "vocab_size": vocab_size,
        "min_frequency": min_frequency,
        "limit_alphabet": limit_alphabet,
    }
    h.update(json.dumps(recipe, sort_keys=True).encode("utf-8"))
    for text in texts:
        data = text.encode("utf-8")
        # Length-prefixed, so that ["ab", "c"] and ["a", "bc"] differ.
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def cached_tokenizer(
    texts: Sequence[str],
    kind: TokenizerKind = "wordpiece",
    vocab_size: int = 8000,
    min_frequency: int = 2,
    limit_alphabet: int = 1000,
    cache_dir: str | Path = ".cache/tokenizers",
) -> Path:
    """The directory of the tokenizer built from these texts and parameters, built only on a miss.

    A directory exists only complete: it is written under a temporary name and renamed, so
    an interrupted build, or two processes building at once, never leave a half-saved one.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown tokenizer kind {kind!r}; expected one of {', '.join(KINDS)}")
    cache_dir = Path(cache_dir)
    key = tokenizer_key(texts, kind, vocab_size, min_frequency, limit_alphabet)
    final = cache_dir / f"{kind}-{key}"
    if final.is_dir():
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=cache_dir))
    try:
        build_tokenizer(texts, kind, vocab_size, min_frequency, limit_alphabet).save_pretrained(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp's 0o700 would hide the cache from other users
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # not a lost race with another builder: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
