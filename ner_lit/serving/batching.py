"""Micro-batching: many request threads, one model call per batch.

A token-classification forward pass over 16 padded sentences costs little more than one
over a single sentence, so a server that answers each request with its own forward pass
wastes the model while requests queue behind it. The :class:`MicroBatcher` lets request
threads hand in one item each (the server hands in tokenized texts) and block; a single
worker thread runs the model on whatever has piled up and gives every caller its own
answer.

The worker never delays a request it could run at once: when it is idle, the first
request that arrives is run immediately (with whatever arrived alongside it), so a lone
client pays no batching latency. Only when the worker comes back from a batch and finds
requests waiting, which means the model is the bottleneck, does it wait up to
``max_wait_ms`` for stragglers to fill the batch. Requests that arrive while the model is
busy are thus padded together, and nothing waits while the model is idle.

Requests are served fairly, so a short one is never stuck behind long ones: each caller's
items form a queue of their own, and a batch takes one item from the queue whose turn it is
(the turns go round, so every request progresses), then fills up from the queues with the
fewest items left, one item each per round. Given a ``cost`` per item and a
``max_batch_cost``, a batch also stops at that cost (the server: tokens, about one model
batch), so a batch request of many long texts is run over many model calls, with other
requests' items joining each.

With one worker (the default) only the worker thread ever calls ``fn``, so ``fn`` need not
be thread-safe. With ``workers=N`` (N > 1), N workers take batches from the same queue and
may call ``fn`` at the same time: worth it where ``fn`` releases the GIL for its work (a
TorchScript model does) and the machine has cores to spare, and only for a thread-safe ``fn``.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Callable, Generic, Sequence, TypeVar

T = TypeVar("T")  # what callers hand in (the server: tokenized texts)
R = TypeVar("R")  # what fn gives back for each

__all__ = ["BatcherClosed", "MicroBatcher"]


class BatcherClosed(RuntimeError):
    """Raised to callers that submit after :meth:`MicroBatcher.close`."""


class MicroBatcher(Generic[T, R]):
    """Run ``fn`` over batches of items submitted one at a time from many threads.

    Args:
        fn: called by a worker thread with up to ``max_batch_size`` items; must return
            one result per item, in order. An exception it raises is re-raised in every
            caller of that batch; the worker carries on with the next batch.
        max_batch_size: the most items ``fn`` is given at once.
        max_wait_ms: how long the worker, having found requests queued when it finished a
            batch, waits for more to fill the next one. It never waits when it was idle.
        name: the worker thread's name (shows in thread dumps and logs); with several
            workers, suffixed ``-1``, ``-2``, ...
        workers: how many worker threads take batches from the queue (see the module doc).
        cost: what one item costs the model (the server: its tokens); by default 1.
        max_batch_cost: the most cost one batch may have, though a batch always takes at
            least one item however costly; by default no limit beyond ``max_batch_size``.
    """

    def __init__(
        self,
        fn: Callable[[list[T]], Sequence[R]],
        max_batch_size: int = 32,
        max_wait_ms: float = 2.0,
        *,
        name: str = "ner-lit-batcher",
        workers: int = 1,
        cost: Callable[[T], int] | None = None,
        max_batch_cost: int | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must not be negative, got {max_wait_ms}")
        if max_batch_cost is not None and max_batch_cost < 1:
            raise ValueError(f"max_batch_cost must be at least 1, got {max_batch_cost}")
        self.fn = fn
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.cost = cost
        self.max_batch_cost = max_batch_cost
        # One queue of (item, future, cost) per submission, in turn order.
        self._requests: deque[deque[tuple[T, Future[R], int]]] = deque()
        self._pending = 0  # items queued, over all requests
        self._pending_cost = 0
        self._cond = threading.Condition()
        self._closed = False
        # Daemons, so a batcher nobody closed can not keep the interpreter alive.
        names = [name] if workers == 1 else [f"{name}-{k}" for k in range(1, workers + 1)]
        self._workers = [threading.Thread(target=self._run, name=n, daemon=True) for n in names]
        for worker in self._workers:
            worker.start()

    # ------------------------------------------------------------------ callers
    def submit(self, item: T, timeout: float | None = None) -> R:
        """Queue one item and block until its result is ready (or re-raise fn's error)."""
        return self.submit_many([item], timeout=timeout)[0]

    def submit_many(self, items: Sequence[T], timeout: float | None = None) -> list[R]:
        """Queue several items together and block until all their results are ready.

        The items are queued in one step, so an idle worker takes them as one batch (split
        only at ``max_batch_size``) rather than racing the caller and running the first
        item alone.
        """
        futures = self.submit_async(items)
        return [f.result(timeout=timeout) for f in futures]

    def submit_async(self, items: Sequence[T]) -> list[Future[R]]:
        """Queue items and return one future per item without blocking."""
        futures: list[Future[R]] = [Future() for _ in items]
        if not futures:
            return futures
        costs = [1 if self.cost is None else int(self.cost(item)) for item in items]
        with self._cond:
            if self._closed:
                raise BatcherClosed("the batcher is closed")
            self._requests.append(deque(zip(items, futures, costs)))
            self._pending += len(futures)
            self._pending_cost += sum(costs)
            self._cond.notify()
        return futures

    @property
    def pending(self) -> int:
        """How many items are queued (not yet taken into a batch)."""
        with self._cond:
            return self._pending

    # ------------------------------------------------------------------ lifecycle
    @property
    def closed(self) -> bool:
        return self._closed

    def close(self, timeout: float | None = None) -> None:
        """Stop taking requests, finish the ones already queued, and join the worker.

        Queued requests are answered rather than dropped, so a server shutting down does
        not turn requests it already accepted into errors. Idempotent.
        """
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for worker in self._workers:
            if threading.current_thread() is not worker:
                worker.join(timeout)

    def __enter__(self) -> "MicroBatcher[T, R]":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ worker
    def _take_batch(self, backlog: bool) -> list[tuple[T, Future[R]]] | None:
        """Block for the next batch; None once closed and drained.

        ``backlog`` says requests queued while the model ran the previous batch: only then
        is the model the bottleneck and worth waiting ``max_wait_s`` for a fuller batch.
        """
        with self._cond:
            while True:
                if not self._pending:
                    backlog = False
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return None
                if backlog and not self._closed and not self._enough_queued():
                    deadline = time.monotonic() + self.max_wait_s
                    while not self._enough_queued() and not self._closed:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self._cond.wait(remaining)
                if self._pending:  # another worker may have taken everything while this one waited
                    break
            batch = self._pick()
            if self._pending:  # more than one batch was waiting: an idle worker can take the next
                self._cond.notify()
            return batch

    def _enough_queued(self) -> bool:
        """Whether the queue holds a full batch already (called with the lock held)."""
        if self._pending >= self.max_batch_size:
            return True
        return self.max_batch_cost is not None and self._pending_cost >= self.max_batch_cost

    def _pick(self) -> list[tuple[T, Future[R]]]:
        """Take the next batch out of the queues (called with the lock held, items queued).

        First the next item of the request whose turn it is, so that every request
        progresses however many others there are; then, round by round, one item from each
        request with the fewest items left first, so a short request joins the very next
        batch; items that would pass ``max_batch_cost`` wait for a later batch.
        """
        taken: list[tuple[T, Future[R]]] = []
        total = 0

        def take(queue: deque[tuple[T, Future[R], int]]) -> None:
            nonlocal total
            item, future, cost = queue.popleft()
            taken.append((item, future))
            total += cost
            self._pending -= 1
            self._pending_cost -= cost

        take(self._requests[0])  # no queue is left empty between batches
        self._requests.rotate(-1)  # its next turn comes after every other request's
        limit = self.max_batch_cost
        progressed = True
        while progressed and len(taken) < self.max_batch_size:
            progressed = False
            for queue in sorted(self._requests, key=len):  # stable: equals keep their turn order
                if len(taken) >= self.max_batch_size:
                    break
                if queue and (limit is None or total + queue[0][2] <= limit):
                    take(queue)
                    progressed = True
        for queue in [q for q in self._requests if not q]:
            self._requests.remove(queue)
        return taken

    def _run(self) -> None:
        backlog = False
        while True:
            batch = self._take_batch(backlog)
            if batch is None:
                return
            # A caller that gave up (cancelled future) is dropped before the model sees it.
            batch = [(t, f) for t, f in batch if f.set_running_or_notify_cancel()]
            backlog = self._run_batch(batch) if batch else False

    def _run_batch(self, batch: list[tuple[T, Future[R]]]) -> bool:
        """Run one batch and resolve its futures; True if requests queued up meanwhile.

        The backlog is read before the callers are woken: a lone client's next request,
        sent as soon as it has its answer, must not count as having waited on the model.
        """
        items = [t for t, _ in batch]
        try:
            results = list(self.fn(items))
            if len(results) != len(items):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(items)} items")
        except BaseException as exc:  # noqa: BLE001 - every caller must be told, whatever it is
            backlog = self._has_backlog()
            for _, fut in batch:
                fut.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return backlog
        backlog = self._has_backlog()
        for (_, fut), result in zip(batch, results):
            fut.set_result(result)
        return backlog

    def _has_backlog(self) -> bool:
        with self._cond:
            return bool(self._pending)
