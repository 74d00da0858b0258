"""Async building blocks of the call scheduler: a semaphore that lets later stages jump the queue,
the call budget that runs share through it, and ordered consumption of results that finish in any
order."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from typing import TypeVar

from .trace import CallStage

T = TypeVar("T")
# Waiters are served smallest first; tuples compare item by item.
Priority = tuple[int, ...]


class PrioritySemaphore:
    """A semaphore whose waiters are served lowest ``priority`` first, then first come.

    Every map call of a long document is queued at the start; with a plain FIFO semaphore a
    collapse call that becomes possible early would wait behind all of them, and the run's tail
    would start only when the maps are done."""

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._waiters: list[tuple[Priority, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    async def acquire(self, priority: Priority = ()) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._order), waiter))
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # granted, then cancelled: pass the slot on
                self.release()
            raise

    def release(self) -> None:
        while self._waiters:
            _, _, waiter = heapq.heappop(self._waiters)
            if not waiter.done():
                waiter.set_result(None)  # the slot goes straight to the waiter
                return
        self._free += 1

    def slot(self, priority: Priority = ()) -> _Slot:
        return _Slot(self, priority)


class _Slot:
    def __init__(self, semaphore: PrioritySemaphore, priority: Priority) -> None:
        self._semaphore = semaphore
        self._priority = priority

    async def __aenter__(self) -> None:
        await self._semaphore.acquire(self._priority)

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

    def slot(self, stage: CallStage, run: int) -> _Slot:
        return self._semaphore.slot((_STAGE_RANK[stage], run))


# Lower goes first at the concurrency limit: a run's later stages before its remaining maps.
_STAGE_RANK: dict[CallStage, int] = {"reduce": 0, "collapse": 1, "direct": 1, "judge": 1, "map": 2}


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
