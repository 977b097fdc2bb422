"""NERDataModule: the encoded-window cache and the rank-aware batch samplers."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from ner_lit.alignment import Aligner
from ner_lit.corpus import read_klue_tsv, write_klue_tsv
from ner_lit.data import LengthGroupedBatchSampler, NERDataModule, SortedSentenceBatchSampler

SAMPLE = Path(__file__).resolve().parents[1] / "ner_lit" / "sample"


# --------------------------------------------------------------------------- the encoding cache
@pytest.fixture
def corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """12 training and 7 dev sample sentences; the cache (NER_LIT_CACHE) under tmp_path."""
    monkeypatch.setenv("NER_LIT_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    data.mkdir()
    write_klue_tsv(read_klue_tsv(SAMPLE / "train.tsv")[:12], data / "train.tsv")
    write_klue_tsv(read_klue_tsv(SAMPLE / "dev.tsv")[:7], data / "dev.tsv")
    return data


def datamodule(data: Path, **kwargs) -> NERDataModule:
    options = dict(data_dir=str(data), scratch_tokenizer="syllable", max_length=16, stride=4, eval_batch_size=4)
    options.update(kwargs)
    return NERDataModule(**options)


@pytest.fixture
def encode_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of sentences of every Aligner.encode call."""
    calls: list[int] = []
    original = Aligner.encode

    def counting(self, sentences, *args, **kwargs):
        calls.append(len(sentences))
        return original(self, sentences, *args, **kwargs)

    monkeypatch.setattr(Aligner, "encode", counting)
    return calls


def flat_windows(dm: NERDataModule) -> list[tuple]:
    windows = list(dm.train_windows) + [w for it in dm.eval_items["validate"] for w in it.encoded.windows]
    return [(tuple(w.input_ids), tuple(w.labels or ())) for w in windows]


def test_second_setup_loads_encoded_windows_from_the_cache(corpus: Path, encode_calls: list[int]) -> None:
    first = datamodule(corpus)
    first.setup("fit")
    assert encode_calls == [12, 7]
    second = datamodule(corpus)
    second.setup("fit")
    assert encode_calls == [12, 7]  # nothing encoded again
    assert flat_windows(second) == flat_windows(first)


def test_cache_is_keyed_by_file_content_not_by_file_time(corpus: Path, encode_calls: list[int]) -> None:
    datamodule(corpus).setup("fit")
    (corpus / "dev.tsv").write_bytes((corpus / "dev.tsv").read_bytes())  # same bytes, new mtime
    datamodule(corpus).setup("fit")
    assert encode_calls == [12, 7]


def test_changing_a_file_reencodes_it(corpus: Path, encode_calls: list[int]) -> None:
    datamodule(corpus).setup("fit")
    write_klue_tsv(read_klue_tsv(corpus / "dev.tsv")[:5], corpus / "dev.tsv", overwrite=True)
    dm = datamodule(corpus)
    dm.setup("fit")
    assert encode_calls == [12, 7, 5]  # only the changed file
    assert len(dm.eval_items["validate"]) == 5


def test_changing_window_settings_reencodes(corpus: Path, encode_calls: list[int]) -> None:
    datamodule(corpus).setup("fit")
    datamodule(corpus, stride=2).setup("fit")
    assert encode_calls == [12, 7, 12, 7]


def test_eval_batches_hold_every_window_of_their_sentences(corpus: Path) -> None:
    dm = datamodule(corpus)
    dm.setup("fit")
    items = dm.eval_items["validate"]
    assert max(len(it.encoded.windows) for it in items) > 1  # the test needs sentences of several windows
    seen = []
    for batch in dm.val_dataloader():
        batch_items = batch["items"].items
        windows = [w for it in batch_items for w in it.encoded.windows]
        assert batch["input_ids"].shape[0] == len(windows)
        for row, w in enumerate(windows):
            assert batch["input_ids"][row, : len(w.input_ids)].tolist() == w.input_ids
        assert len(windows) <= dm.eval_batch_size or len(batch_items) == 1
        seen += [it.sentence.id for it in batch_items]
    assert sorted(seen) == sorted(it.sentence.id for it in items)


# --------------------------------------------------------------------------- LengthGroupedBatchSampler
def lengths(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(3, 128) for _ in range(n)]


def sampler(n: int, rank: int = 0, world: int = 1, epoch: int = 0, batch_size: int = 8, **kwargs) -> LengthGroupedBatchSampler:
    options = dict(shuffle=True, group_by_length=True, seed=7)
    options.update(kwargs)
    s = LengthGroupedBatchSampler(lengths(n), batch_size, rank=rank, world_size=world, **options)
    s.set_epoch(epoch)
    return s


@pytest.mark.parametrize("shuffle,group", [(True, True), (True, False), (False, True), (False, False)])
def test_length_grouped_sampler_covers_every_window_once_per_epoch(shuffle: bool, group: bool) -> None:
    batches = list(sampler(1003, shuffle=shuffle, group_by_length=group))
    assert sorted(i for b in batches for i in b) == list(range(1003))
    assert all(len(b) <= 8 for b in batches)


def test_length_grouped_sampler_ranks_share_one_permutation() -> None:
    # 126 batches of 8 (the last one short): ranks 0..2 take every third batch of the one-process order.
    whole = list(sampler(1003, world=1))
    shares = [list(sampler(1003, rank=r, world=3)) for r in range(3)]
    interleaved = [b for group in zip(*shares) for b in group]
    assert interleaved == whole[: len(interleaved)]


def test_length_grouped_sampler_rank_shares_are_disjoint() -> None:
    shares = [{i for b in sampler(1003, rank=r, world=3) for i in b} for r in range(3)]
    assert not shares[0] & shares[1] and not shares[0] & shares[2] and not shares[1] & shares[2]


@pytest.mark.parametrize("n", [1003, 1000, 17, 9])
def test_length_grouped_sampler_gives_every_rank_the_same_number_of_batches(n: int) -> None:
    counts = [len(list(sampler(n, rank=r, world=3))) for r in range(3)]
    assert len(set(counts)) == 1
    assert counts == [len(sampler(n, rank=r, world=3)) for r in range(3)]


def test_length_grouped_sampler_reshuffles_every_epoch_and_repeats_an_epoch() -> None:
    assert list(sampler(500, epoch=1)) != list(sampler(500, epoch=0))
    assert list(sampler(500, epoch=1)) == list(sampler(500, epoch=1))


def test_length_grouped_sampler_groups_similar_lengths() -> None:
    ls = lengths(1003)
    spread = [max(ls[i] for i in b) - min(ls[i] for i in b) for b in sampler(1003)]
    unsorted = [max(ls[i] for i in b) - min(ls[i] for i in b) for b in sampler(1003, group_by_length=False)]
    assert sum(spread) * 4 < sum(unsorted)


# --------------------------------------------------------------------------- SortedSentenceBatchSampler
@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("n", [1, 2, 21, 100])
def test_sentence_sampler_scores_every_sentence_exactly_once_across_ranks(world: int, n: int) -> None:
    rng = random.Random(n)
    counts = [rng.choice([1, 1, 1, 2, 3]) for _ in range(n)]
    lens = [c * 30 + rng.randint(0, 29) for c in counts]
    taken = [i for r in range(world) for b in SortedSentenceBatchSampler(counts, lens, 5, r, world) for i in b]
    assert sorted(taken) == list(range(n))


def test_sentence_sampler_batches_respect_the_window_budget() -> None:
    counts = [1, 2, 3, 7, 1, 1, 2, 4, 1]
    lens = [10 * c for c in counts]
    for batch in SortedSentenceBatchSampler(counts, lens, 4):
        assert sum(counts[i] for i in batch) <= 4 or len(batch) == 1


def test_sentence_sampler_allows_uneven_rank_shares() -> None:
    counts, lens = [1] * 5, [5, 4, 3, 2, 1]
    shares = [list(SortedSentenceBatchSampler(counts, lens, 1, r, 2)) for r in range(2)]
    assert shares == [[[0], [2], [4]], [[1], [3]]]
