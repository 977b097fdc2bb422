"""``predict`` input as a stream: sentences are read, encoded and batched a chunk at a time.

A corpus to tag can be far larger than memory allows to hold encoded, so ``predict`` never
holds more than a few chunks of it: :class:`PredictStream` reads ``chunk_size`` sentences,
encodes them in one tokenizer call, cuts them into batches of whole sentences (longest
first, as evaluation does, so little padding) and yields those; the writer
(``ner_lit.training.callbacks.PredictionWriter``) puts the rows back into input order and writes them.

Chunks are the unit of sharing: chunk ``k`` belongs to the DataLoader shard
``k % (world_size * workers)`` (:class:`ChunkPlan`), so every process and worker reads
the whole file but encodes and predicts only its own chunks, and knows, from the sentence
count alone, which sentence indices it owns and in which order.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from torch.utils.data import IterableDataset, get_worker_info

from ner_lit.alignment.aligner import Aligner
from ner_lit.alignment.collate import pad_windows
from ner_lit.alignment.windows import EncodedSentence
from ner_lit.corpus.formats import resolve_format
from ner_lit.corpus.jsonl import iter_jsonl, json_line
from ner_lit.corpus.klue import read_klue_tsv
from ner_lit.corpus.lines import iter_lines
from ner_lit.corpus.records import CorpusError, Sentence, _check_length
from ner_lit.corpus.text import iter_text
from ner_lit.data.samplers import SortedSentenceBatchSampler


@dataclass
class PredictItem:
    """A sentence to tag, its encoding, and its position in the input (counting sentences, not lines)."""

    sentence: Sentence
    encoded: EncodedSentence
    index: int


class PredictItems:
    """The Python side of a predict batch; not a sequence, so Lightning's batch transfer leaves it alone."""

    def __init__(self, items: list[PredictItem]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class ChunkPlan:
    """Which shard (process ``rank``, DataLoader worker) predicts which chunk of ``total`` sentences."""

    total: int
    chunk_size: int
    world_size: int = 1
    workers: int = 1

    @property
    def num_chunks(self) -> int:
        return -(-self.total // self.chunk_size)

    def shard(self, chunk: int) -> int:
        return chunk % (self.world_size * self.workers)

    def rank_of(self, chunk: int) -> int:
        return self.shard(chunk) // self.workers

    def chunks_of_rank(self, rank: int) -> Iterator[int]:
        return (k for k in range(self.num_chunks) if self.rank_of(k) == rank)

    def indices_of_rank(self, rank: int) -> Iterator[int]:
        """The sentence indices ``rank`` predicts, in the order its part of the output lists them."""
        for k in self.chunks_of_rank(rank):
            yield from range(k * self.chunk_size, min((k + 1) * self.chunk_size, self.total))

    def count_of_rank(self, rank: int) -> int:
        return sum(min(self.chunk_size, self.total - k * self.chunk_size) for k in self.chunks_of_rank(rank))


# --------------------------------------------------------------------------- reading
def iter_sentences(path: Path, max_chars: int | None = None) -> Iterator[Sentence]:
    """The sentences of a predict file, in order. Plain text and JSONL are read line by line;
    KLUE TSV (a sentence spread over one line a character, checked against its header) is read whole.
    ``max_chars``: the longest sentence accepted (``count_sentences`` checks it before predicting)."""
    fmt = resolve_format(path, "auto")
    if fmt == "text":
        return iter_text(path, max_chars)
    if fmt == "jsonl":
        return iter_jsonl(path, labelled=False, max_chars=max_chars)
    return iter(read_klue_tsv(path, max_chars=max_chars))


def count_sentences(path: Path, max_chars: int | None = None) -> int:
    """How many sentences ``iter_sentences`` will yield, counted cheaply (no tokenizing), and
    ``max_chars`` checked, so an over-long sentence is refused before anything is predicted.
    A JSONL line is parsed only where it is longer than ``max_chars``: a shorter line can not
    hold a longer text."""
    fmt = resolve_format(path, "auto")
    if fmt == "klue":
        return len(read_klue_tsv(path, max_chars=max_chars))
    what = "non-blank line" if fmt == "text" else "JSON object line"
    n = 0
    for lineno, line in iter_lines(path, "text" if fmt == "text" else "JSONL"):
        if not line.strip():
            continue
        n += 1
        if max_chars is not None and len(line) > max_chars:
            sentence = Sentence(f"{path.stem}-{lineno}", line) if fmt == "text" else json_line(path, lineno, line, labelled=False)
            _check_length(f"{path}:{lineno}", sentence, max_chars)
    if n == 0:
        raise CorpusError(f"{path}: no sentences, expected at least one {what}")
    return n


# --------------------------------------------------------------------------- batching
def sentence_batches(encoded: list[EncodedSentence], max_windows: int) -> list[list[int]]:
    """Batches (positions in ``encoded``) of whole sentences, longest first, at most
    ``max_windows`` windows each: evaluation's batching."""

    return SortedSentenceBatchSampler(
        [len(e.windows) for e in encoded], [sum(len(w.input_ids) for w in e.windows) for e in encoded], max_windows
    ).batches


def collate_predict(items: list[PredictItem], pad_id: int) -> dict[str, Any]:
    batch: dict[str, Any] = pad_windows([w for it in items for w in it.encoded.windows], pad_id)
    del batch["labels"]  # predict has no gold
    batch["items"] = PredictItems(items)
    return batch


def _identity(batch: Any) -> Any:
    return batch


class PredictStream(IterableDataset):
    """Ready predict batches, chunk by chunk, of this process's and this worker's chunks only.

    ``read`` opens the input anew on every iteration (each DataLoader worker iterates its own copy).
    """

    collate_fn: Callable[[Any], Any] = staticmethod(_identity)

    def __init__(self, read: Callable[[], Iterable[Sentence]], aligner: Aligner, plan: ChunkPlan, rank: int,
                 max_windows: int, pad_id: int) -> None:
        self.read = read
        self.aligner = aligner
        self.plan = plan
        self.rank = rank
        self.max_windows = max_windows
        self.pad_id = pad_id

    def _shard(self) -> int:
        info = get_worker_info()
        return self.rank * self.plan.workers + (info.id if info is not None else 0)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        shard = self._shard()
        sentences = iter(self.read())
        chunk = 0
        while part := list(islice(sentences, self.plan.chunk_size)):
            if self.plan.shard(chunk) == shard:
                yield from self._batches(part, chunk * self.plan.chunk_size)
            chunk += 1

    def _batches(self, part: list[Sentence], first: int) -> Iterator[dict[str, Any]]:
        encoded = self.aligner.encode(part, with_labels=False)
        for batch in sentence_batches(encoded, self.max_windows):
            yield collate_predict([PredictItem(part[i], encoded[i], first + i) for i in batch], self.pad_id)
