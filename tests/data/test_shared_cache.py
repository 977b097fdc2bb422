"""One encoded-cache directory shared by concurrent processes (ner_lit.data.cache): two encoders of the
same entry at once both succeed with the same entry, a reader never sees a half-written one, and an
entry a process may be reading is never moved or removed by another."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ner_lit.corpus.klue import read_klue_tsv, write_klue_tsv
from ner_lit.corpus.records import Sentence
from ner_lit.data import cache as encoded_cache
from ner_lit.data.datamodule import NERDataModule
from ner_lit.data.datasets import encode_into

SAMPLE = Path(__file__).resolve().parents[2] / "ner_lit" / "sample"
REPO = Path(__file__).resolve().parents[2]

#: The child: a `fit` setup of the datamodule into a shared cache, each EntryWriter.publish held at a
#: barrier until both children reach it (so both have encoded the whole entry and publish at once);
#: it writes the digests of the entries it ended up with, and their paths.
CHILD = textwrap.dedent("""
    import hashlib, json, os, sys, time
    from pathlib import Path
    from ner_lit.data import cache
    from ner_lit.data.datamodule import NERDataModule

    data, cache_dir, barrier, out, kill_at = sys.argv[1:6]
    barrier, kill_at = Path(barrier), int(kill_at)

    def wait_for_both(tag):
        (barrier / f"{tag}.{os.getpid()}").touch()
        deadline = time.monotonic() + 60
        while len(list(barrier.glob(f"{tag}.*"))) < 2:
            if time.monotonic() > deadline:
                sys.exit(f"barrier {tag}: the other process never came")
            time.sleep(0.005)

    publish = cache.EntryWriter.publish
    def at_once(self, meta):
        wait_for_both(self.final.name)
        return publish(self, meta)
    if not kill_at:
        cache.EntryWriter.publish = at_once

    finish_field = cache.EntryWriter._finish_field
    finished = []
    def killed_midway(self, name):
        finished.append(name)
        if len(finished) == kill_at:  # half the entry's arrays written: the process dies here, kill -9
            os.kill(os.getpid(), 9)
        return finish_field(self, name)
    cache.EntryWriter._finish_field = killed_midway

    dm = NERDataModule(data_dir=data, scratch_tokenizer="syllable", max_length=16, stride=4, batch_size=8,
                       eval_batch_size=8, cache_dir=cache_dir)
    dm.setup("fit")
    def digest(entry):
        return {name: hashlib.sha256(a.tobytes()).hexdigest() for name, a in sorted(entry.arrays.items())}
    entries = [dm.train_windows.entry, dm.eval_items["validate"].entry]
    Path(out).write_text(json.dumps({"digests": [digest(e) for e in entries],
                                     "paths": [str(e.path) for e in entries]}))
""")


def entry_digest(entry: encoded_cache.Entry) -> dict[str, str]:
    return {name: hashlib.sha256(a.tobytes()).hexdigest() for name, a in sorted(entry.arrays.items())}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    base = read_klue_tsv(SAMPLE / "train.tsv")
    write_klue_tsv([Sentence(f"s{i}", base[i % len(base)].text, base[i % len(base)].tags) for i in range(23)],
                   d / "train.tsv")
    write_klue_tsv(read_klue_tsv(SAMPLE / "dev.tsv")[:9], d / "dev.tsv")
    return d


def datamodule(data: Path, cache: Path) -> NERDataModule:
    dm = NERDataModule(data_dir=str(data), scratch_tokenizer="syllable", max_length=16, stride=4, batch_size=8,
                       eval_batch_size=8, cache_dir=str(cache))
    dm.setup("fit")
    return dm


@pytest.fixture
def reference(data: Path, tmp_path: Path) -> list[dict[str, str]]:
    """The entries of a single process's encoding, in a cache of its own."""
    dm = datamodule(data, tmp_path / "alone")
    return [entry_digest(dm.train_windows.entry), entry_digest(dm.eval_items["validate"].entry)]


def start(data: Path, cache: Path, barrier: Path, out: Path, kill_at: int = 0) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(data), str(cache), str(barrier), str(out), str(kill_at)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run_two_at_once(data: Path, cache: Path, tmp_path: Path) -> list[dict]:
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    children = [start(data, cache, barrier, tmp_path / f"out{i}.json") for i in range(2)]
    outputs = [c.communicate(timeout=120)[0] for c in children]
    for c, output in zip(children, outputs):
        assert c.returncode == 0, output
        assert "was not cached" not in output, output  # neither fell back to an in-memory encoding
    return [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(2)]


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "encoded").iterdir() if p.name.startswith("."))


@pytest.mark.slow  # processes racing on one entry: a few seconds each
def test_two_processes_encoding_the_same_entry_at_once_both_succeed_with_one_equal_entry(
        data: Path, tmp_path: Path, reference: list[dict[str, str]]) -> None:
    cache = tmp_path / "shared"
    results = run_two_at_once(data, cache, tmp_path)
    for result in results:
        assert result["digests"] == reference
    assert results[0]["paths"] == results[1]["paths"]  # one entry per content, the same for both
    entries = sorted(p for p in (cache / "encoded").iterdir() if not p.name.startswith("."))
    assert [str(p) for p in entries] == sorted(results[0]["paths"])
    assert leftovers(cache) == []  # the loser's temporary is gone
    assert [entry_digest(encoded_cache.load(p)) for p in map(Path, results[0]["paths"])] == reference


@pytest.mark.slow  # processes racing on one entry: a few seconds each
def test_two_processes_replacing_the_same_broken_entry_at_once_both_succeed(
        data: Path, tmp_path: Path, reference: list[dict[str, str]]) -> None:
    cache = tmp_path / "shared"
    first = datamodule(data, cache)
    paths = [first.train_windows.entry.path, first.eval_items["validate"].entry.path]
    del first
    for path in paths:  # damaged in place: both processes find it broken, both rebuild and publish at once
        with open(path / "input_ids.npy", "r+b") as f:
            f.seek(-1, os.SEEK_END)
            last = f.read(1)[0]
            f.seek(-1, os.SEEK_END)
            f.write(bytes([last ^ 0xFF]))
        assert encoded_cache.load(path) is None
    results = run_two_at_once(data, cache, tmp_path)
    for result in results:
        assert result["digests"] == reference
        assert result["paths"] == [str(p) for p in paths]
    assert leftovers(cache) == []


def test_an_entry_being_read_is_never_moved_aside_by_a_process_that_found_the_old_one_broken(
        data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The interleaving that a check-then-replace without a lock allows: A finds the entry broken, B
    replaces it and a reader maps B's, then A moves B's entry aside and deletes it under the reader."""
    dm = datamodule(data, tmp_path / "ref")
    sentences = read_klue_tsv(data / "train.tsv")
    final = tmp_path / "shared" / "entry"

    def built() -> encoded_cache.EntryWriter:
        writer = encoded_cache.EntryWriter(final, True)
        encode_into(writer, dm.aligner, sentences, True)
        return writer

    built().publish({})
    (final / encoded_cache.MANIFEST).write_text("{")  # broken in place
    a, b = built(), built()
    b_done, read = threading.Event(), {}

    def b_publishes() -> None:
        b.publish({})
        read["entry"] = encoded_cache.load(final)
        read["inode"] = os.stat(final).st_ino
        b_done.set()

    real_load = encoded_cache.load
    calls = []

    def load_racing_b(path: Path, verify: bool = True):
        found = real_load(path, verify)
        if not calls:  # A's check: let B run before A acts on it (blocked, if publishing is locked)
            calls.append(path)
            threading.Thread(target=b_publishes, daemon=True).start()
            b_done.wait(2)
        return found

    monkeypatch.setattr(encoded_cache, "load", load_racing_b)
    assert a.publish({}) == final
    monkeypatch.setattr(encoded_cache, "load", real_load)
    assert b_done.wait(30)
    entry = read["entry"]
    assert entry is not None
    # what the reader mapped is still the entry in place, whole, and its files still there
    assert os.stat(final).st_ino == read["inode"]
    assert real_load(final) is not None
    assert all((final / f"{name}.npy").is_file() for name in entry.arrays)
    assert np.array_equal(entry.input_ids, real_load(final).input_ids)
    assert sorted(p.name for p in final.parent.iterdir()) == ["entry"]


@pytest.mark.slow  # processes racing on one entry: a few seconds each
def test_a_process_killed_mid_write_leaves_no_entry_and_its_temporary_is_ignored_then_cleaned(
        data: Path, tmp_path: Path, reference: list[dict[str, str]]) -> None:
    cache = tmp_path / "shared"
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    child = start(data, cache, barrier, tmp_path / "out.json", kill_at=5)  # alone: no barrier
    output = child.communicate(timeout=120)[0]
    assert child.returncode == -signal.SIGKILL, output
    encoded = cache / "encoded"
    assert [p for p in encoded.iterdir() if not p.name.startswith(".")] == []  # no entry under a final name
    temporaries = [p for p in encoded.iterdir() if p.name.endswith(".tmp")]
    assert len(temporaries) == 1 and (temporaries[0] / "input_ids.raw").exists()  # half-written, left behind
    final = encoded / temporaries[0].name.split(".")[1]
    assert encoded_cache.load(final) is None
    old = time.time() - 3600  # the dead writer's temporary, an hour old
    os.utime(temporaries[0], (old, old))
    dm = datamodule(data, cache)  # a reader ignores it, encodes afresh, publishes, and cleans it up
    assert [entry_digest(dm.train_windows.entry), entry_digest(dm.eval_items["validate"].entry)] == reference
    assert leftovers(cache) == []
