"""Encoded corpora as flat arrays: chunked encoding, the datasets over them, and linear cost in corpus size."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ner_lit.alignment.aligner import Aligner
from ner_lit.corpus.klue import read_klue_tsv, write_klue_tsv
from ner_lit.corpus.records import Sentence
from ner_lit.data.datamodule import NERDataModule
from ner_lit.data.datasets import EvalSentences, TrainWindows

SAMPLE = Path(__file__).resolve().parents[2] / "ner_lit" / "sample"


def repeated_corpus(path: Path, n: int) -> Path:
    """``n`` sample training sentences (repeated, with fresh ids) as KLUE TSV."""
    base = read_klue_tsv(SAMPLE / "train.tsv")
    write_klue_tsv([Sentence(f"s{i}", base[i % len(base)].text, base[i % len(base)].tags) for i in range(n)], path)
    return path


def datamodule(data: Path, cache: Path, **kwargs) -> NERDataModule:
    options = dict(data_dir=str(data), scratch_tokenizer="syllable", max_length=16, stride=4, batch_size=8,
                   eval_batch_size=8, cache_dir=str(cache))
    options.update(kwargs)
    return NERDataModule(**options)


def plain(dm: NERDataModule) -> tuple[list, list]:
    windows = [(w.sentence, w.input_ids, w.labels) for w in dm.train_windows]
    evals = [(it.sentence.id, it.sentence.text, it.sentence.tags, it.gold.tolist(), it.scored.tolist(),
              [(w.input_ids, w.labels) for w in it.encoded.windows], it.encoded.offsets.tolist(),
              it.encoded.token_window.tolist(), it.encoded.token_pos.tolist(), it.encoded.char_token.tolist())
             for it in dm.eval_items["validate"]]
    return windows, evals


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    repeated_corpus(d / "train.tsv", 23)
    write_klue_tsv(read_klue_tsv(SAMPLE / "dev.tsv")[:9], d / "dev.tsv")
    return d


def test_chunked_encoding_equals_one_chunk_and_the_aligner_itself(data: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from ner_lit.data import datasets as encoded_data

    whole = datamodule(data, tmp_path / "c1")
    whole.setup("fit")
    monkeypatch.setattr(encoded_data, "CHUNK", 4)  # 23 sentences: five full chunks and a short one
    chunked = datamodule(data, tmp_path / "c2")
    chunked.setup("fit")
    assert plain(chunked) == plain(whole)
    # and both equal the Aligner's own encoding of the sentences, window by window
    direct = whole.aligner.encode(read_klue_tsv(data / "dev.tsv"))
    for item, e in zip(whole.eval_items["validate"], direct):
        assert [(w.input_ids, w.labels) for w in item.encoded.windows] == [(w.input_ids, w.labels) for w in e.windows]
        assert item.encoded.char_token.tolist() == e.char_token.tolist()
        assert item.encoded.offsets.tolist() == e.offsets.tolist()


def test_datasets_index_like_sequences(data: Path, tmp_path: Path) -> None:
    dm = datamodule(data, tmp_path / "cache")
    dm.setup("fit")
    windows, evals = dm.train_windows, dm.eval_items["validate"]
    assert isinstance(windows, TrainWindows) and isinstance(evals, EvalSentences)
    assert windows[-1] == windows[len(windows) - 1] and len(list(windows)) == len(windows)
    assert windows.lengths().tolist() == [len(w.input_ids) for w in windows]
    assert evals.window_counts().tolist() == [len(it.encoded.windows) for it in evals]
    assert evals.id_counts().tolist() == [sum(len(w.input_ids) for w in it.encoded.windows) for it in evals]
    for bad in (len(windows), -len(windows) - 1):
        with pytest.raises(IndexError):
            windows[bad]
    with pytest.raises(IndexError):
        evals[len(evals)]


def test_an_encoding_interrupted_midway_leaves_no_entry_and_no_temporary_files(
        data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ner_lit.data import datasets as encoded_data

    calls = []
    original = Aligner.encode_flat

    def killed_on_second_chunk(self, sentences, *args, **kwargs):
        calls.append(len(sentences))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, sentences, *args, **kwargs)

    monkeypatch.setattr(encoded_data, "CHUNK", 5)
    monkeypatch.setattr(Aligner, "encode_flat", killed_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        datamodule(data, tmp_path / "cache").setup("fit")
    assert calls == [5, 5]
    assert list((tmp_path / "cache" / "encoded").iterdir()) == []


def test_a_bad_line_found_while_encoding_is_the_corpus_error_and_leaves_no_entry(data: Path, tmp_path: Path) -> None:
    from ner_lit.corpus.records import CorpusError

    text = (data / "train.tsv").read_text(encoding="utf-8")
    (data / "train.tsv").write_text(text[: len(text) * 3 // 4] + "가\tB-NOPE\n\n", encoding="utf-8")
    dm = datamodule(data, tmp_path / "cache", labels=["O", "B-PS", "I-PS", "B-LC", "I-LC", "B-OG", "I-OG", "B-DT", "I-DT",
                                                      "B-TI", "I-TI", "B-QT", "I-QT"])
    with pytest.raises(CorpusError, match=r"train\.tsv:\d+: .*B-NOPE"):
        dm.setup("fit")
    assert list((tmp_path / "cache" / "encoded").iterdir()) == []


def test_derived_labels_are_cached_so_a_cached_run_parses_nothing(data: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from ner_lit.data import preparation

    first = datamodule(data, tmp_path / "cache")
    first.setup("fit")
    monkeypatch.setattr(preparation, "iter_corpus", lambda *a, **k: pytest.fail("a cached run read the corpus"))
    second = datamodule(data, tmp_path / "cache")
    second.setup("fit")
    assert second.labels == first.labels
    assert plain(second) == plain(first)
    assert second.spec.provenance.train_sha256 == first.spec.provenance.train_sha256 is not None


def test_evaluation_batches_hold_only_their_own_sentences(data: Path, tmp_path: Path) -> None:
    """A validation epoch makes each batch's items from the arrays and keeps none of them."""
    import gc
    import weakref

    from ner_lit.data.datasets import EvalItem

    dm = datamodule(data, tmp_path / "cache")
    dm.setup("fit")
    alive: list[weakref.ref] = []
    for batch in dm.val_dataloader():
        alive += [weakref.ref(it) for it in batch["items"].items]
        del batch
    gc.collect()
    assert len(alive) == len(dm.eval_items["validate"])
    assert sum(r() is not None for r in alive) == 0
    assert not any(type(o) is EvalItem for o in gc.get_objects())


# --------------------------------------------------------------------------- linear in the corpus size
def traced_lines(fn) -> int:
    """The Python lines ``fn`` executes (deterministic, unlike time): a quadratic Python step shows as a ratio."""
    count = 0

    def tracer(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
        return tracer

    sys.settrace(tracer)
    try:
        fn()
    finally:
        sys.settrace(None)
    return count


def pipeline_cost(tmp_path: Path, n: int) -> dict[str, int]:
    """Executed lines of each step: a cold setup (read, encode, write the entry), a cached one, a pass over
    every training batch and one over every validation batch; and the entry's bytes."""
    data = tmp_path / f"data-{n}"
    data.mkdir()
    repeated_corpus(data / "train.tsv", n)
    repeated_corpus(data / "dev.tsv", n)
    cache = tmp_path / f"cache-{n}"
    datamodule(data, cache).setup("fit")  # the scratch tokenizer is trained outside the count
    for entry in (cache / "encoded").iterdir():
        import shutil

        shutil.rmtree(entry)
    cost = {"cold setup": traced_lines(lambda: datamodule(data, cache).setup("fit"))}
    dm = datamodule(data, cache)
    cost["cached setup"] = traced_lines(lambda: dm.setup("fit"))
    cost["train epoch"] = traced_lines(lambda: [None for _ in dm.train_dataloader()])
    cost["validation epoch"] = traced_lines(lambda: [None for _ in dm.val_dataloader()])
    cost["entry bytes"] = sum(p.stat().st_size for p in (cache / "encoded").rglob("*.npy"))
    return cost


def test_reading_encoding_caching_and_batching_are_linear_in_corpus_size(tmp_path: Path) -> None:
    small, large = pipeline_cost(tmp_path, 100), pipeline_cost(tmp_path, 400)
    for step in small:
        # linear: at most 4x the work for 4x the sentences (a setup's fixed cost makes it less); quadratic: 16x
        assert large[step] / small[step] < 4 * 1.2, (step, small[step], large[step])
    assert large["cached setup"] / small["cached setup"] < 1.5  # a cached setup does no Python work per sentence
    assert large["entry bytes"] / small["entry bytes"] > 3.5
