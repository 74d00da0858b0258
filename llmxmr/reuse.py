"""Identical calls made once: a map call whose request (its chunk's text, its question, the family's
prompts and the call's settings) equals an earlier call's gets that call's reply.

InfiniteBench's pass-key haystack repeats one block of lines, so many chunks of its documents are
byte-identical; real documents repeat too (page headers and footers, boilerplate clauses, logs,
templated reports). The first call of a key (``call_key``) is made; every identical one awaits the
same future, in flight or done, without taking a slot of the call budget or reaching the client
(nor the reply cache behind it). Its chunk then grounds the shared reply in its own text, so that
its citations name its own offsets, line and page.

A failed call's failure is shared by the calls that wait for it, but not remembered: the next
identical call (a later document of a batch, a rerun) is made again. A call given up by its maker
(its run was cancelled, or is failing and sends nothing more) is made by the first identical call
still waiting for it. A sampled reply (temperature above 0) is a draw, not the answer: as in the
reply cache, such calls are shared only when ``llm.cache_sampled`` says so.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from .prompts import ChatMessage
from .trace import CallRecord

Output = TypeVar("Output", bound=BaseModel)
# A call as ``structured.call_structured`` returns it, or (None, None) when it was not sent (its
# run is failing): the output, if valid, and the record of the call.
Made = tuple[Output | None, CallRecord | None]

# The settled calls a ``SharedCalls`` remembers, the least recently used forgotten first: a batch
# shares one, and its memory must not grow with the batch. A map reply is a few kilobytes.
REMEMBERED_CALLS = 4096


class Reuse(BaseModel):
    """A map call not made: its request was identical to an earlier call's, whose reply its chunk
    was given (and grounded in its own text). Its record in the trace has no attempts and no
    tokens."""

    chunk: int  # the chunk whose call was not made
    source_chunk: int  # the chunk whose call's reply it got
    same_document: bool  # False: the call of another document's reading (a batch's)


@dataclass(frozen=True)
class Origin:
    """Where a call comes from: its reading (``SharedCalls.join``) and its chunk."""

    reading: int
    chunk: int


def call_key(messages: list[ChatMessage], settings: tuple[Any, ...]) -> str:
    """The key of a call: a digest of its messages and of ``settings``, JSON values that hold
    everything else that decides its reply (the family, the reply's shape and length, its string
    cap, the temperature, the attempts)."""
    payload = {"messages": [m.model_dump(mode="json") for m in messages], "settings": list(settings)}
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class SharedCalls(Generic[Output]):
    """The calls of the readings that hold it, by key: one per reading by default, one for a whole
    batch (``batch.run_batch``). Every reading holding it must use one client."""

    def __init__(self, remembered: int = REMEMBERED_CALLS) -> None:
        self._remembered = remembered
        self._calls: OrderedDict[str, asyncio.Future[tuple[Output | None, CallRecord, Origin]]] = OrderedDict()
        self._readings = itertools.count()

    def join(self) -> int:
        """A reading's number, which tells its calls from those of other readings."""
        return next(self._readings)

    async def call(
        self,
        key: str | None,
        origin: Origin,
        make: Callable[[], Awaitable[Made[Output]]],
        waiting: Callable[[], None] | None = None,
    ) -> tuple[Made[Output], Origin | None]:
        """The call of ``key``: made by ``make``, unless an identical call is in flight or done
        (``waiting`` is told when this call starts to wait for one). Returns what ``make``
        returned and None when this call was made (always, without a key); else the earlier
        call's output, a record of the reuse (``reused_record``) and where the earlier call came
        from."""
        while key is not None:
            earlier = self._calls.get(key)
            if earlier is None:
                break
            self._calls.move_to_end(key)
            if waiting is not None and not earlier.done():
                waiting()
            try:
                output, record, source = await asyncio.shield(earlier)  # this call's end is not the other's
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if earlier.cancelled() and not (task is not None and task.cancelling()):
                    continue  # given up by its maker, not this call's own cancellation: make it here
                raise
            return (output, reused_record(record, origin.chunk)), source
        return await self._make(key, origin, make), None

    async def _make(self, key: str | None, origin: Origin, make: Callable[[], Awaitable[Made[Output]]]) -> Made[Output]:
        if key is None:
            return await make()
        future: asyncio.Future[tuple[Output | None, CallRecord, Origin]] = asyncio.get_running_loop().create_future()
        self._calls[key] = future
        while len(self._calls) > self._remembered:
            self._calls.popitem(last=False)  # its waiters hold it still
        try:
            output, record = await make()
        except asyncio.CancelledError:
            self._forget(key, future)
            future.cancel()
            raise
        except BaseException as exc:
            self._forget(key, future)
            future.set_exception(exc)
            future.exception()  # retrieved: no warning when no call waited for it
            raise
        if record is None:  # not sent: the calls waiting for it make it themselves
            self._forget(key, future)
            future.cancel()
            return output, record
        future.set_result((output, record, origin))
        if record.error:  # shared with the calls waiting, not kept for later ones
            self._forget(key, future)
        return output, record

    def _forget(self, key: str, future: asyncio.Future[Any]) -> None:
        if self._calls.get(key) is future:
            del self._calls[key]


def reused_record(record: CallRecord, chunk: int) -> CallRecord:
    """The record of a call not made for ``chunk``: the earlier call's output (or failure), with no
    attempts, no tokens and no time, for its chunk's grounding to check."""
    return CallRecord(
        stage=record.stage,
        chunk_indices=[chunk],
        output=record.output,
        error=record.error,
        error_kind=record.error_kind,
    )
