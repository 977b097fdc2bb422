"""The training loader knows its place in the epoch: a state saved after k batches resumes at batch k+1."""
from __future__ import annotations

import random

import pytest
from lightning.fabric.utilities.data import _set_sampler_epoch
from lightning.fabric.utilities.types import _Stateful

from ner_lit.data.resumable import ResumableLoader
from ner_lit.data.samplers import LengthGroupedBatchSampler
from ner_lit.data.settings import DataError

WINDOWS = 203  # 26 batches of 8, the last one short


def loader(batch_size: int = 8, world: int = 1, rank: int = 0, num_workers: int = 0) -> ResumableLoader:
    rng = random.Random(0)
    lengths = [rng.randint(3, 128) for _ in range(WINDOWS)]
    sampler = LengthGroupedBatchSampler(lengths, batch_size, shuffle=True, group_by_length=True, seed=7, rank=rank,
                                        world_size=world)
    return ResumableLoader(list(range(WINDOWS)), batch_sampler=sampler, collate_fn=list, num_workers=num_workers)


def epoch(dl: ResumableLoader, number: int) -> list[list[int]]:
    _set_sampler_epoch(dl, number)  # as Lightning's fit loop does at every epoch start
    return list(dl)


def test_lightning_sees_the_loader_as_stateful() -> None:
    assert isinstance(loader(), _Stateful)


def test_lightning_setting_the_epoch_reaches_the_batch_sampler() -> None:
    # Lightning sets `sampler` and `batch_sampler.sampler`, never the batch sampler: without the
    # handle, every epoch drew epoch 0's order.
    dl = loader()
    assert epoch(dl, 1) != epoch(dl, 0)
    assert epoch(dl, 1) == epoch(loader(), 1)


@pytest.mark.parametrize("taken", [0, 1, 13, 25])
def test_a_state_saved_after_k_batches_resumes_with_the_rest_of_that_epoch(taken: int) -> None:
    first = loader()
    _set_sampler_epoch(first, 3)
    whole = list(first)
    it = iter(first)
    for _ in range(taken):
        next(it)
    state = first.state_dict()
    assert (state["epoch"], state["position"]) == (3, taken)

    resumed = loader()
    resumed.load_state_dict(state)
    assert list(resumed) == whole[taken:]
    assert resumed.state_dict()["position"] == len(whole)


def test_the_position_goes_on_counting_after_a_resume_so_a_second_stop_resumes_right() -> None:
    whole = epoch(loader(), 2)
    first = loader()
    _set_sampler_epoch(first, 2)
    it = iter(first)
    for _ in range(5):
        next(it)
    second = loader()
    second.load_state_dict(first.state_dict())
    it = iter(second)
    for _ in range(7):
        next(it)
    third = loader()
    assert second.state_dict()["position"] == 12  # 5 before the first resume, 7 after it
    third.load_state_dict(second.state_dict())
    assert list(third) == whole[12:]


def test_the_skip_applies_even_when_the_iterator_was_made_before_the_state_was_loaded() -> None:
    # Lightning creates the training iterator before it restores a checkpoint when the model asks
    # for estimated_stepping_batches (Lightning issue #20550); the loader starts lazily.
    whole = epoch(loader(), 1)
    dl = loader()
    it = iter(dl)
    dl.load_state_dict({**loader().state_dict(), "epoch": 1, "position": 4})
    assert list(it) == whole[4:]


def test_worker_processes_read_the_resumed_epoch_and_position() -> None:
    whole = epoch(loader(), 1)
    dl = loader(num_workers=1)
    dl.load_state_dict({**loader().state_dict(), "epoch": 1, "position": 20})
    assert list(dl) == whole[20:]


def test_a_state_from_other_batches_is_refused_saying_what_changed() -> None:
    state = loader(batch_size=8).state_dict()
    with pytest.raises(DataError, match=r"batches 26 -> 13, .*batch_size 8 -> 16"):
        loader(batch_size=16).load_state_dict({**state, "position": 3})


def test_a_state_from_another_number_of_ranks_is_refused() -> None:
    state = loader(world=1).state_dict()
    with pytest.raises(DataError, match=r"world_size 1 -> 2.*number of devices"):
        loader(world=2).load_state_dict({**state, "position": 3})


def test_a_state_of_an_unknown_format_is_refused() -> None:
    with pytest.raises(DataError, match="format 99"):
        loader().load_state_dict({**loader().state_dict(), "format": 99})


def test_each_rank_resumes_its_own_share() -> None:
    for rank in (0, 1):
        whole = epoch(loader(world=2, rank=rank), 0)
        dl = loader(world=2, rank=rank)
        dl.load_state_dict({**loader(world=2, rank=rank).state_dict(), "position": 6})
        assert list(dl) == whole[6:]
