"""Under DDP the metrics sum their counts across processes, so the synced score is the single-process one.

Two CPU processes on the gloo backend; the sentences are split unevenly between them, down
to a rank with one sentence and a rank with none.
"""
from __future__ import annotations

import json
import os
import random
import socket
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ner_lit.training.metrics import MACRO_AVG, CharMacroF1, EntityMacroF1

LABELS = ["O", "B-A", "I-A", "B-B", "I-B", "B-C", "I-C"]
WORLD_SIZE = 2
N_SENTENCES = 100
#: Rank 0 scores sentences [0, cut), rank 1 the rest.
CUTS = {"70/30": 70, "1/99": 1, "100/0": 100}


def dataset() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Seeded random (pred, gold) label ids, identical in every process."""
    rng = random.Random(1234)
    gold = [[rng.randrange(len(LABELS)) for _ in range(rng.randint(0, 20))] for _ in range(N_SENTENCES)]
    pred = [[t if rng.random() < 0.7 else rng.randrange(len(LABELS)) for t in s] for s in gold]
    return [torch.tensor(s, dtype=torch.long) for s in pred], [torch.tensor(s, dtype=torch.long) for s in gold]


def scores(pred: list[torch.Tensor], gold: list[torch.Tensor]) -> dict[str, float]:
    char, entity = CharMacroF1(LABELS), EntityMacroF1(LABELS)
    char.update(pred, gold)
    entity.update(pred, gold)
    return {"char": char.compute().item(), "entity": entity.compute().item(), "report": entity.report()[MACRO_AVG]["f1"]}


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE, timeout=timedelta(seconds=60)
    )
    try:
        pred, gold = dataset()
        results = {}
        for name, cut in CUTS.items():
            part = slice(0, cut) if rank == 0 else slice(cut, N_SENTENCES)
            results[name] = scores(pred[part], gold[part])
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, dict[str, float]]]:
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(free_port(), str(out)), nprocs=WORLD_SIZE, join=True)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD_SIZE)]


@pytest.mark.parametrize("split", list(CUTS))
def test_synced_scores_equal_single_process_scores(synced: list[dict[str, dict[str, float]]], split: str) -> None:
    single = scores(*dataset())
    for rank in range(WORLD_SIZE):
        assert synced[rank][split] == pytest.approx(single, abs=1e-9), f"rank {rank}"
