"""Async building blocks of the call scheduler: a semaphore that lets later stages jump the queue,
the call budget that runs share through it, and ordered consumption of results that finish in any
order."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from typing import TypeVar

T = TypeVar("T")
# Waiters are served smallest first; tuples compare item by item.
Priority = tuple[int, ...]


class PrioritySemaphore:
    """A semaphore whose waiters are served lowest ``priority`` first, then first come; a waiter
    with a ``ready`` future is passed over until it is done.

    Every map call of a long document is queued at the start; with a plain FIFO semaphore a
    collapse call that becomes possible early would wait behind all of them, and the run's tail
    would start only when the maps are done. Readiness lets a call queue in its place before it
    may go: a question's map call of a chunk waits in line for the chunk's first call to be
    answered, and then goes before the later chunks, even if a slot is freed at that very moment."""

    def __init__(self, slots: int) -> None:
        self._free = slots
        # Only waiters that may go are in the heap; one not ready joins it, in its place by
        # priority and arrival, once it is (a run of thousands of maps queues them all at the
        # start: passing over the ones not ready at every grant would cost each grant the queue).
        self._waiters: list[tuple[Priority, int, asyncio.Future[None]]] = []
        self._not_ready = 0
        self._order = itertools.count()

    async def acquire(self, priority: Priority = (), ready: asyncio.Future[None] | None = None) -> None:
        if self._free > 0 and not self._waiters and not self._not_ready and (ready is None or ready.done()):
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (priority, next(self._order), waiter)
        if ready is not None and not ready.done():
            self._not_ready += 1
            ready.add_done_callback(lambda _: self._ready(entry))
        else:
            self._queue(entry)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # granted, then cancelled: pass the slot on
                self.release()
            raise

    def release(self) -> None:
        """The slot goes to the best waiter on the loop's next turn, after the done-callbacks
        already scheduled: a waiter made ready just before the release (a call that the
        releasing one warmed) is in line for it."""
        self._free += 1
        asyncio.get_running_loop().call_soon(self._grant)

    def _ready(self, entry: tuple[Priority, int, asyncio.Future[None]]) -> None:
        self._not_ready -= 1
        self._queue(entry)

    def _queue(self, entry: tuple[Priority, int, asyncio.Future[None]]) -> None:
        heapq.heappush(self._waiters, entry)
        self._grant()  # a slot may be free

    def _grant(self) -> None:
        """Free slots to the best waiters."""
        while self._free > 0 and self._waiters:
            waiter = heapq.heappop(self._waiters)[2]
            if waiter.done():  # cancelled while waiting
                continue
            self._free -= 1
            waiter.set_result(None)  # the slot goes straight to the waiter

    def slot(self, priority: Priority = (), ready: asyncio.Future[None] | None = None) -> _Slot:
        return _Slot(self, priority, ready)


class _Slot:
    def __init__(self, semaphore: PrioritySemaphore, priority: Priority, ready: asyncio.Future[None] | None) -> None:
        self._semaphore = semaphore
        self._priority = priority
        self._ready = ready

    async def __aenter__(self) -> None:
        await self._semaphore.acquire(self._priority, self._ready)

    async def __aexit__(self, *exc_info: object) -> None:
        self._semaphore.release()


class CallBudget:
    """The LLM calls in flight that every run holding it shares: a batch of documents draws on one
    budget, not one per document. At the limit a waiting call goes first by its stage (a run's
    later stages before maps), then by when its run joined: earlier documents' maps before later
    ones', so documents finish one after another and are written as they finish, instead of all
    of them waiting for the last map of the batch."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._semaphore = PrioritySemaphore(slots)
        self._joined = itertools.count()

    def join(self) -> int:
        """A run's place in line."""
        return next(self._joined)

    def slot(
        self, stage: str, run: int, order: tuple[int, ...] = (), ready: asyncio.Future[None] | None = None
    ) -> _Slot:
        """A slot for one call; ``order`` ranks a run's calls of one stage among themselves (its
        maps go chunk by chunk, then question by question), and the call does not go before
        ``ready`` is done."""
        return self._semaphore.slot((_STAGE_RANK.get(stage, OTHER_CALLS_RANK), run, *order), ready)


# Lower goes first at the concurrency limit: a run's later stages before its remaining maps.
_STAGE_RANK: dict[str, int] = {"reduce": 0, "collapse": 1, "map": 2}
# A call of another label (a harness's single call per item, its grading) finishes a unit of work
# as a collapse does.
OTHER_CALLS_RANK = 1


async def in_order(futures: Sequence[asyncio.Future[T]]) -> AsyncIterator[list[T]]:
    """Yields the results in the order of ``futures``, in batches of those already finished, as
    soon as each batch's turn comes; raises as soon as any of them fails, even one further on.

    Linear in the number of futures: each gets one done-callback, and only the next one in line
    is awaited (waiting on all pending futures at every step would be quadratic)."""
    failed: asyncio.Future[asyncio.Future[T]] = asyncio.get_running_loop().create_future()

    def watch(future: asyncio.Future[T]) -> None:
        if not failed.done() and not future.cancelled() and future.exception() is not None:
            failed.set_result(future)

    for future in futures:
        future.add_done_callback(watch)
    try:
        position = 0
        while position < len(futures):
            if not futures[position].done():
                await asyncio.wait((futures[position], failed), return_when=asyncio.FIRST_COMPLETED)
            if failed.done():
                failed.result().result()  # raises the failure
            batch = []
            while position < len(futures) and futures[position].done():
                batch.append(futures[position].result())
                position += 1
            if batch:
                yield batch
    finally:
        for future in futures:
            future.remove_done_callback(watch)


async def gather_or_cancel(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """Run all, in order; if one raises, cancel the rest before re-raising (no orphan calls)."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
