"""NERDataModule: the encoded-window cache and the rank-aware batch samplers."""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest

from ner_lit.alignment.aligner import Aligner
from ner_lit.corpus.klue import read_klue_tsv, write_klue_tsv
from ner_lit.corpus.records import Sentence
from ner_lit.data.cache import file_sha256
from ner_lit.data.datamodule import NERDataModule
from ner_lit.data.samplers import LengthGroupedBatchSampler, SortedSentenceBatchSampler

SAMPLE = Path(__file__).resolve().parents[2] / "ner_lit" / "sample"


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
    """The number of sentences of every encoding call: Aligner.encode, and encode_flat, the one
    the encoded cache makes for each chunk."""
    calls: list[int] = []

    def counting(original):
        def count(self, sentences, *args, **kwargs):
            calls.append(len(sentences))
            return original(self, sentences, *args, **kwargs)
        return count

    for name in ("encode", "encode_flat"):
        monkeypatch.setattr(Aligner, name, counting(getattr(Aligner, name)))
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


def test_a_change_of_content_with_the_same_size_and_time_reencodes(corpus: Path, encode_calls: list[int]) -> None:
    """The key is the content's hash: an edit that keeps the size, with the mtime put back, still misses."""
    import os

    dev = corpus / "dev.tsv"
    datamodule(corpus).setup("fit")
    before, data = dev.stat(), dev.read_bytes()
    sentences = read_klue_tsv(dev)
    k = next(k for k, s in enumerate(sentences) if s.tags[:2] == ["O", "O"] and s.text[0] != s.text[1])
    text = sentences[k].text
    sentences[k] = Sentence(sentences[k].id, text[1] + text[0] + text[2:], sentences[k].tags)  # two characters swapped
    write_klue_tsv(sentences, dev, overwrite=True)
    assert dev.read_bytes() != data and dev.stat().st_size == before.st_size
    os.utime(dev, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert dev.stat().st_mtime_ns == before.st_mtime_ns
    dm = datamodule(corpus)
    dm.setup("fit")
    assert encode_calls == [12, 7, 7]
    assert dm.eval_items["validate"][k].sentence.text == sentences[k].text != text


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
        assert len(windows) <= dm.loader.eval_batch_size or len(batch_items) == 1
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


# --------------------------------------------------------------------------- the cache is safe, whole and keyed
class PlantedPayload:
    """A pickle that, when unpickled, creates ``marker``: what a hostile cache entry could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def cache_entries(root: Path) -> list[Path]:
    return sorted(p for p in (root / "cache" / "encoded").iterdir() if not p.name.startswith("."))


def test_a_pickle_planted_as_a_cache_entry_never_runs_and_the_entry_is_rebuilt(
        corpus: Path, encode_calls: list[int]) -> None:
    import pickle

    first = datamodule(corpus)
    first.setup("fit")
    expected = flat_windows(first)  # before the files under its memory maps are overwritten in place
    marker = corpus.parent / "pwned"
    entries = cache_entries(corpus.parent)
    assert len(entries) == 2
    for entry in entries:
        # A hostile writer replaces an array with a pickle and fixes the manifest to match it.
        planted = entry / "input_ids.npy"
        planted.write_bytes(pickle.dumps(PlantedPayload(marker)))
        np.save(entry / "offsets.npy", np.array([PlantedPayload(marker)], dtype=object), allow_pickle=True)
        manifest = json.loads((entry / "manifest.json").read_text())
        for name in ("input_ids", "offsets"):
            manifest["fields"][name].update(bytes=(entry / f"{name}.npy").stat().st_size,
                                            sha256=file_sha256(entry / f"{name}.npy"))
        (entry / "manifest.json").write_text(json.dumps(manifest))
    second = datamodule(corpus)
    second.setup("fit")
    assert not marker.exists()
    assert encode_calls == [12, 7, 12, 7]  # both entries refused and encoded again
    assert flat_windows(second) == expected
    third = datamodule(corpus)
    third.setup("fit")
    assert encode_calls == [12, 7, 12, 7]  # the rebuilt entries are used
    assert not marker.exists()


def flip_one_byte(data: bytes) -> bytes:
    middle = len(data) - 3  # in the array's data, past the .npy header
    return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1:]


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "flipped"])
@pytest.mark.parametrize("part", ["input_ids.npy", "char_token.npy", "manifest.json"])
def test_a_damaged_cache_entry_is_rebuilt_not_an_error(
        corpus: Path, encode_calls: list[int], damage: str, part: str) -> None:
    """A kill mid-write can not leave a partial entry (see below), but a disk or a person can damage one:
    every file's size and sha256 is in the manifest, so even one flipped bit is refused, never used."""
    first = datamodule(corpus)
    first.setup("fit")
    expected = flat_windows(first)  # before the files under its memory maps are overwritten in place
    for entry in cache_entries(corpus.parent):
        target = entry / part
        data = target.read_bytes()
        target.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "garbage": b"\x00" * 64 + data[64:],
                            "flipped": flip_one_byte(data)}[damage])
    second = datamodule(corpus)
    second.setup("fit")
    assert encode_calls == [12, 7, 12, 7]
    assert flat_windows(second) == expected
    datamodule(corpus).setup("fit")
    assert encode_calls == [12, 7, 12, 7]  # the rebuilt entries replaced the damaged ones


def test_cache_entries_hold_only_integer_arrays_loadable_without_pickle(corpus: Path) -> None:
    datamodule(corpus).setup("fit")
    for entry in cache_entries(corpus.parent):
        arrays = {p.stem: np.load(p, mmap_mode="r", allow_pickle=False) for p in entry.glob("*.npy")}
        assert {"input_ids", "offsets", "gold", "text"} <= arrays.keys()
        assert all(a.dtype.kind in "iu" for a in arrays.values())
        assert {p.name for p in entry.iterdir()} == {f"{name}.npy" for name in arrays} | {"manifest.json"}


def test_training_windows_and_eval_maps_are_memory_mapped_not_python_objects(corpus: Path) -> None:
    dm = datamodule(corpus)
    dm.setup("fit")
    for entry in (dm.train_windows.entry, dm.eval_items["validate"].entry):
        assert all(isinstance(a, np.memmap) or a.base is not None for a in entry.arrays.values() if a.size)
        assert isinstance(entry.input_ids, np.memmap) and isinstance(entry.char_token, np.memmap)


def test_cached_encoding_equals_a_fresh_one_field_by_field(corpus: Path) -> None:
    from dataclasses import asdict

    first = datamodule(corpus)
    first.setup("fit")
    second = datamodule(corpus)
    second.setup("fit")  # from the cache

    def plain(encoded) -> dict:
        return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in asdict(encoded).items()}

    assert [plain(it.encoded) for it in second.eval_items["validate"]] == [
        plain(it.encoded) for it in first.eval_items["validate"]]


@pytest.mark.parametrize("change", [{"label_rule": "first_entity"}, {"max_length": 20}, {"scratch_tokenizer": "wordpiece"},
                                    {"labels": ["O", "B-DT", "I-DT", "B-LC", "I-LC", "B-OG", "I-OG", "B-PS", "I-PS",
                                                "B-QT", "I-QT", "B-TI", "I-TI", "B-XX", "I-XX"]}])
def test_every_setting_that_shapes_the_encoding_is_part_of_the_key(
        corpus: Path, encode_calls: list[int], change: dict) -> None:
    datamodule(corpus).setup("fit")
    datamodule(corpus, **change).setup("fit")
    assert encode_calls == [12, 7, 12, 7]


def test_unlabelled_and_labelled_encodings_of_one_file_are_cached_apart(corpus: Path, encode_calls: list[int]) -> None:
    dm = datamodule(corpus)
    dm.setup("fit")
    dev = corpus / "dev.tsv"
    from ner_lit.data.datasets import EvalSentences

    unlabelled = EvalSentences(dm._encode(dev, with_labels=False), dm.labels)
    assert encode_calls == [12, 7, 7]
    assert all(w.labels is None for it in unlabelled for w in it.encoded.windows)
    assert all(w.labels is not None for it in dm.eval_items["validate"] for w in it.encoded.windows)


def test_a_cache_write_killed_midway_leaves_no_entry_and_no_temporary_file(
        corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ner_lit.data import cache as encoded_cache

    def killed(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(encoded_cache.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        datamodule(corpus).setup("fit")
    assert list((corpus.parent / "cache" / "encoded").iterdir()) == []


def test_a_file_rewritten_while_it_is_read_is_not_cached(corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ner_lit.data import preparation

    original = preparation.iter_corpus

    def read_then_rewrite(path, *args, **kwargs):
        sentences = list(original(path, *args, **kwargs))
        if Path(path).name == "dev.tsv":
            write_klue_tsv(read_klue_tsv(path)[:3], path, overwrite=True)
        return iter(sentences)

    monkeypatch.setattr(preparation, "iter_corpus", read_then_rewrite)
    dm = datamodule(corpus)
    dm.setup("fit")
    assert len(cache_entries(corpus.parent)) == 1  # the training file only
    assert len(dm.eval_items["validate"]) == 7  # what was read is what is scored


# --------------------------------------------------------------------------- reading: limits and label checks
def test_a_predict_line_over_max_chars_is_an_error_naming_file_line_and_length(corpus: Path) -> None:
    from ner_lit.corpus.records import CorpusError

    (corpus / "in.txt").write_text("서울에 갔다\n" + "가" * 100_001 + "\n", encoding="utf-8")
    dm = datamodule(corpus, predict_file="in.txt")
    dm.setup("fit")
    with pytest.raises(CorpusError, match=r"in\.txt:2: sentence 'in-2' has 100,001 characters, expected at most "
                                          r"max_chars=100,000"):
        dm.setup("predict")


def test_max_chars_can_be_raised_or_lifted(corpus: Path) -> None:
    (corpus / "in.txt").write_text("서울에 갔다\n" + "가" * 300 + "\n", encoding="utf-8")
    for limit in (300, None):
        dm = datamodule(corpus, predict_file="in.txt", max_chars=limit)
        dm.setup("fit")
        dm.setup("predict")
        assert dm.predict_count == 2
        assert [len(it.sentence.text) for batch in dm.predict_dataloader() for it in batch["items"].items] == [300, 6]


def test_max_chars_applies_to_training_files_too(corpus: Path) -> None:
    from ner_lit.corpus.records import CorpusError

    longest = max(len(s.text) for s in read_klue_tsv(corpus / "train.tsv"))
    with pytest.raises(CorpusError, match=rf"train\.tsv:\d+: sentence .* has {longest} characters"):
        datamodule(corpus, max_chars=longest - 1).setup("fit")


def test_max_chars_must_be_positive(corpus: Path) -> None:
    from ner_lit.data.datamodule import DataError

    with pytest.raises(DataError, match="max_chars 0, expected a positive number"):
        datamodule(corpus, max_chars=0)


@pytest.mark.parametrize(("option", "value", "message"), [
    ("batch_size", 0, "--data.batch_size 0: expected at least 1"),
    ("batch_size", -1, "--data.batch_size -1: expected at least 1"),
    ("eval_batch_size", 0, "--data.eval_batch_size 0: expected at least 1"),
    ("num_workers", -2, "--data.num_workers -2: expected 0"),
])
def test_batch_sizes_and_workers_out_of_range_are_refused(corpus: Path, option: str, value: int, message: str) -> None:
    from ner_lit.data.datamodule import DataError

    with pytest.raises(DataError, match=re.escape(message)):
        datamodule(corpus, **{option: value})


def test_a_dev_tag_unknown_to_training_is_named_by_its_line(corpus: Path) -> None:
    from ner_lit.corpus.records import CorpusError, Sentence

    odd = Sentence("odd-1", "화성에서 왔다", ["B-PL", "I-PL", "O", "O", "O", "O", "O"])
    write_klue_tsv([*read_klue_tsv(corpus / "dev.tsv")[:2], odd], corpus / "dev.tsv", overwrite=True)
    line = (corpus / "dev.tsv").read_text(encoding="utf-8").split("\n").index("화\tB-PL") + 1
    with pytest.raises(CorpusError, match=rf"dev\.tsv:{line}: sentence 'odd-1', character 0 \('화'\): tag 'B-PL'"):
        datamodule(corpus).setup("fit")


# --------------------------------------------------------------------------- the cache directory, checked first
def test_an_unusable_cache_directory_is_one_error_naming_it_before_any_reading(
        corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ner_lit.data import preparation
    from ner_lit.data.datamodule import DataError

    (corpus.parent / "blocker").write_text("a file where the cache directory should be\n", encoding="utf-8")
    cache = corpus.parent / "blocker" / "cache"
    monkeypatch.setattr(preparation, "iter_corpus", lambda *a, **k: pytest.fail("read before the cache check"))
    dm = datamodule(corpus, cache_dir=str(cache))
    for hook in (dm.prepare_data, lambda: dm.setup("fit")):
        with pytest.raises(DataError, match=rf"^{cache}: the cache directory \(--data.cache_dir.*\) is not a "
                                            r"writable directory \(Not a directory\)"):
            hook()


def test_a_cache_directory_without_write_permission_is_named(corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ner_lit.data import files
    from ner_lit.data.datamodule import DataError

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(files.tempfile, "mkstemp", refused)  # as root, chmod can not make a directory read-only
    with pytest.raises(DataError, match=r"cache: the cache directory .* \(Permission denied\)"):
        datamodule(corpus).setup("fit")


def test_the_writability_probe_leaves_nothing_behind(tmp_path: Path) -> None:
    from ner_lit.data.files import check_writable_dir

    check_writable_dir(tmp_path / "new" / "dir", "a test directory")
    assert list((tmp_path / "new" / "dir").iterdir()) == []
