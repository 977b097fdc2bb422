"""Freed memory handed back to the system during fit (ReleaseFreedMemory), before checkpoints are written."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from ner_lit.checkpoint.io import NERModelCheckpoint
from ner_lit.cli import lightning as cli
from ner_lit.data.datamodule import NERDataModule
from ner_lit.memory import release_freed_memory
from ner_lit.training.callbacks import ReleaseFreedMemory
from ner_lit.training.model import NERModel

REPO = Path(__file__).resolve().parents[2]


def _anon_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    pytest.skip("no RssAnon in /proc/self/status")


def test_freed_heap_memory_leaves_the_process(tmp_path):
    """Many small blocks (from the heap, not mapped one by one) freed: the allocator keeps them resident
    until released. Judged as a share of what was allocated, not as a figure."""
    # Memory earlier tests freed but the heap kept would take these blocks without growing the
    # process (the CI run measured -112 KiB allocated): released first, the blocks must grow it.
    if not release_freed_memory():
        pytest.skip("this C library has no malloc_trim")
    before = _anon_kib()
    pins = []
    blocks = []
    for i in range(12000):  # 32 KiB each, about 375 MiB; a pinned block every 1000 keeps the heap's top in use
        blocks.append(torch.ones(8192))
        if i % 1000 == 0:
            pins.append(torch.ones(16))
    allocated = _anon_kib() - before
    del blocks
    kept = _anon_kib() - before
    release_freed_memory()
    released = kept - (_anon_kib() - before)
    assert allocated > 0 and released > 0.5 * allocated, (allocated, kept, released)
    assert pins  # held to the end on purpose


def test_fit_trims_before_its_checkpoints_are_written(tmp_path):
    parsed = cli.NERCLI(NERModel, NERDataModule, run=False, auto_configure_optimizers=False,
                        args=["--config", str(REPO / "configs" / "tiny.yaml"), "--trainer.default_root_dir", str(tmp_path),
                              "--data.data_dir", str(REPO / "ner_lit" / "sample")])
    os.environ.pop(cli._VERSION_ENV, None)
    callbacks = parsed.trainer.callbacks
    kinds = [type(c) for c in callbacks]
    assert ReleaseFreedMemory in kinds and NERModelCheckpoint in kinds
    # Lightning calls hooks in this order: the release runs before the checkpoint's own on_validation_end.
    assert kinds.index(ReleaseFreedMemory) < kinds.index(NERModelCheckpoint)
