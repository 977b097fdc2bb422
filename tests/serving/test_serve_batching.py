"""The micro-batcher: every caller gets its own answer, piled-up requests share a call."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ner_lit.serving.batching import BatcherClosed, MicroBatcher


def shout(texts: list[str]) -> list[str]:
    return [t.upper() + "!" for t in texts]


class GatedFn:
    """A batch function that blocks on its first call until released, so tests can pile
    requests up behind a 'busy model' deterministically."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, texts: list[str]) -> list[str]:
        self.calls.append(list(texts))
        if len(self.calls) == 1:
            self.entered.set()
            assert self.release.wait(10), "test never released the gate"
        return shout(texts)


def wait_until_queued(batcher: MicroBatcher, n: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while batcher.pending < n:
        assert time.monotonic() < deadline, f"only {batcher.pending} of {n} requests queued"
        time.sleep(0.001)


def test_each_of_eight_concurrent_callers_gets_its_own_result():
    def slow_shout(texts: list[str]) -> list[str]:
        time.sleep(0.002)
        return shout(texts)

    with MicroBatcher(slow_shout, max_batch_size=8) as batcher:

        def client(c: int) -> list[tuple[str, str]]:
            return [(f"c{c}-r{r}", batcher.submit(f"c{c}-r{r}")) for r in range(50)]

        with ThreadPoolExecutor(8) as pool:
            pairs = [p for ps in pool.map(client, range(8)) for p in ps]
    assert len(pairs) == 400
    assert all(answer == sent.upper() + "!" for sent, answer in pairs)


def test_requests_arriving_while_the_model_is_busy_are_run_as_one_batch():
    fn = GatedFn()
    with MicroBatcher(fn, max_batch_size=32, max_wait_ms=0) as batcher:
        with ThreadPoolExecutor(6) as pool:
            first = pool.submit(batcher.submit, "first")
            assert fn.entered.wait(5)
            rest = [pool.submit(batcher.submit, f"t{i}") for i in range(5)]
            wait_until_queued(batcher, 5)
            fn.release.set()
            assert first.result(5) == "FIRST!"
            assert [f.result(5) for f in rest] == [f"T{i}!" for i in range(5)]
    assert fn.calls[0] == ["first"]
    assert sorted(fn.calls[1]) == [f"t{i}" for i in range(5)]
    assert len(fn.calls) == 2


def test_a_batch_never_exceeds_max_batch_size():
    fn = GatedFn()
    with MicroBatcher(fn, max_batch_size=4, max_wait_ms=0) as batcher:
        first = batcher.submit_async(["first"])
        assert fn.entered.wait(5)
        queued = batcher.submit_async([f"t{i}" for i in range(10)])
        fn.release.set()
        assert [f.result(5) for f in first + queued] == ["FIRST!"] + [f"T{i}!" for i in range(10)]
    assert [len(c) for c in fn.calls] == [1, 4, 4, 2]


def test_texts_submitted_together_reach_an_idle_model_as_one_call():
    calls: list[list[str]] = []

    def record(texts: list[str]) -> list[str]:
        calls.append(list(texts))
        return shout(texts)

    with MicroBatcher(record, max_batch_size=32) as batcher:
        assert batcher.submit_many(["a", "b", "c"]) == ["A!", "B!", "C!"]
    assert calls == [["a", "b", "c"]]


def test_a_lone_client_never_waits_for_a_batch_to_fill():
    # With a huge max_wait_ms, any wait on an idle model would show as >= 0.5 s per request.
    with MicroBatcher(shout, max_batch_size=32, max_wait_ms=500) as batcher:
        started = time.monotonic()
        answers = [batcher.submit(f"r{i}") for i in range(20)]
        elapsed = time.monotonic() - started
    assert answers == [f"R{i}!" for i in range(20)]
    assert elapsed < 0.5, f"20 sequential requests took {elapsed:.3f} s: the idle worker waited for stragglers"


def test_an_exception_in_fn_reaches_every_caller_of_that_batch():
    fn = GatedFn()

    def fail_second(texts: list[str]) -> list[str]:
        out = fn(texts)
        if len(fn.calls) == 2:
            raise RuntimeError("model exploded")
        return out

    with MicroBatcher(fail_second, max_batch_size=32, max_wait_ms=0) as batcher:
        first = batcher.submit_async(["first"])
        assert fn.entered.wait(5)
        doomed = batcher.submit_async(["x", "y", "z"])
        fn.release.set()
        assert first[0].result(5) == "FIRST!"
        for f in doomed:
            with pytest.raises(RuntimeError, match="model exploded"):
                f.result(5)


def test_the_worker_keeps_serving_after_fn_raised():
    broken = {"on": True}

    def sometimes_broken(texts: list[str]) -> list[str]:
        if broken["on"]:
            raise ValueError("transient")
        return shout(texts)

    with MicroBatcher(sometimes_broken) as batcher:
        with pytest.raises(ValueError, match="transient"):
            batcher.submit("a")
        broken["on"] = False
        assert batcher.submit("b") == "B!"


def test_fn_returning_the_wrong_number_of_results_is_an_error_for_its_callers():
    with MicroBatcher(lambda texts: ["only one"]) as batcher:
        with pytest.raises(RuntimeError, match="1 results for 2 items"):
            batcher.submit_many(["a", "b"])


def test_close_answers_requests_already_queued():
    fn = GatedFn()
    batcher = MicroBatcher(fn, max_wait_ms=0)
    first = batcher.submit_async(["first"])
    assert fn.entered.wait(5)
    queued = batcher.submit_async(["q1", "q2"])
    closer = threading.Thread(target=batcher.close)
    closer.start()
    fn.release.set()
    closer.join(5)
    assert not closer.is_alive()
    assert [f.result(0) for f in first + queued] == ["FIRST!", "Q1!", "Q2!"]


def test_close_stops_the_worker_thread_and_is_idempotent():
    batcher = MicroBatcher(shout)
    assert batcher.submit("a") == "A!"
    batcher.close()
    batcher.close()
    assert batcher.closed
    assert not any(w.is_alive() for w in batcher._workers)  # noqa: SLF001


def test_submit_after_close_raises_batcher_closed():
    batcher = MicroBatcher(shout)
    batcher.close()
    with pytest.raises(BatcherClosed):
        batcher.submit("late")


def test_fn_is_only_ever_called_from_the_worker_thread():
    seen: set[str] = set()

    def record_thread(texts: list[str]) -> list[str]:
        seen.add(threading.current_thread().name)
        return shout(texts)

    with MicroBatcher(record_thread, name="the-worker") as batcher:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(batcher.submit, [str(i) for i in range(64)]))
    assert seen == {"the-worker"}


@pytest.mark.parametrize("kwargs", [{"max_batch_size": 0}, {"max_wait_ms": -1.0}], ids=["batch0", "wait-neg"])
def test_nonsense_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        MicroBatcher(shout, **kwargs)


# --------------------------------------------------------------------------- several workers
def test_two_workers_run_two_batches_at_once_and_every_caller_gets_its_answer():
    both_in = threading.Barrier(2, timeout=5)
    threads: set[str] = set()

    def meet(texts: list[str]) -> list[str]:
        threads.add(threading.current_thread().name)
        if texts[0] in ("a", "b"):
            both_in.wait()  # only returns once a second call runs at the same time
        return shout(texts)

    with MicroBatcher(meet, max_batch_size=1, workers=2) as batcher:
        futures = batcher.submit_async(["a", "b"])
        assert [f.result(5) for f in futures] == ["A!", "B!"]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(batcher.submit, [f"t{i}" for i in range(40)]))
    assert answers == [f"T{i}!" for i in range(40)]
    assert threads == {"ner-lit-batcher-1", "ner-lit-batcher-2"}


def test_close_joins_every_worker():
    batcher = MicroBatcher(shout, workers=3)
    assert batcher.submit_many(["x", "y"]) == ["X!", "Y!"]
    batcher.close()
    assert len(batcher._workers) == 3  # noqa: SLF001
    assert not any(w.is_alive() for w in batcher._workers)  # noqa: SLF001


def test_fewer_than_one_worker_is_refused():
    with pytest.raises(ValueError, match="workers must be at least 1, got 0"):
        MicroBatcher(shout, workers=0)


# --------------------------------------------------------------------------- fairness
def test_a_single_item_joins_the_next_batch_ahead_of_big_requests_queued_before_it():
    fn = GatedFn()
    with MicroBatcher(fn, max_batch_size=4, max_wait_ms=0) as batcher:
        batcher.submit_async(["first"])
        assert fn.entered.wait(5)
        big = [batcher.submit_async([f"b{r}-{i}" for i in range(8)]) for r in range(3)]
        single = batcher.submit_async(["single"])
        wait_until_queued(batcher, 25)
        fn.release.set()
        assert single[0].result(5) == "SINGLE!"
        assert [f.result(5) for fs in big for f in fs] == [f"B{r}-{i}!" for r in range(3) for i in range(8)]
    # The batch after the gate: the big request whose turn it was, then the single one.
    assert fn.calls[1][:2] == ["b0-0", "single"]


def test_every_request_gets_a_turn_in_each_round_of_batches():
    fn = GatedFn()
    with MicroBatcher(fn, max_batch_size=1, max_wait_ms=0) as batcher:
        first = batcher.submit_async(["first"])
        assert fn.entered.wait(5)
        for r in "abc":
            batcher.submit_async([f"{r}{i}" for i in range(3)])
        wait_until_queued(batcher, 9)
        fn.release.set()
        assert first[0].result(5) == "FIRST!"
    assert [c[0] for c in fn.calls[1:]] == ["a0", "b0", "c0", "a1", "b1", "c1", "a2", "b2", "c2"]


def test_a_batch_stops_at_max_batch_cost_but_always_takes_one_item():
    fn = GatedFn()
    with MicroBatcher(fn, max_batch_size=32, max_wait_ms=0, cost=len, max_batch_cost=6) as batcher:
        first = batcher.submit_async(["first"])
        assert fn.entered.wait(5)
        queued = batcher.submit_async(["aaaaaaaa", "bbb", "cc", "d", "eee"])
        fn.release.set()
        assert [f.result(5) for f in first + queued] == ["FIRST!", "AAAAAAAA!", "BBB!", "CC!", "D!", "EEE!"]
    assert fn.calls[1:] == [["aaaaaaaa"], ["bbb", "cc", "d"], ["eee"]]


def test_a_max_batch_cost_below_one_is_refused():
    with pytest.raises(ValueError, match="max_batch_cost must be at least 1, got 0"):
        MicroBatcher(shout, cost=len, max_batch_cost=0)


def test_a_worker_whose_wait_for_a_fuller_batch_finds_the_queue_emptied_by_another_keeps_serving():
    """Two workers both finish a batch with requests queued, so both wait for a fuller batch;
    the first to stop waiting takes everything, and the other must go back to waiting, not die."""
    release = {"a": threading.Event(), "b": threading.Event()}
    started = threading.Barrier(3, timeout=5)

    def held(texts: list[str]) -> list[str]:
        if texts[0] in release:
            started.wait()
            release[texts[0]].wait(5)
        return shout(texts)

    with MicroBatcher(held, max_batch_size=8, max_wait_ms=300, workers=2) as batcher:
        first = batcher.submit_async(["a"])
        while batcher.pending:  # the first worker took "a" alone
            time.sleep(0.001)
        first += batcher.submit_async(["b"])
        started.wait()  # both workers are inside a batch
        queued = batcher.submit_async(["c"])  # queued while both run: a backlog for each
        release["a"].set()
        release["b"].set()
        assert [f.result(5) for f in first + queued] == ["A!", "B!", "C!"]
        time.sleep(0.6)  # past both workers' deadlines
        assert all(w.is_alive() for w in batcher._workers)  # noqa: SLF001
        assert batcher.submit("d", timeout=5) == "D!"
