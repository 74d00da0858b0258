"""A scripted in-process client for tests: replies are queued, requests are recorded, and with
``stream_chars`` a watched call is streamed to its watch in pieces."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..tokens import TokenCounter
from .base import WATCH_STOP, ChatReply, ChatRequest, ReplyWatch

Script = str | ChatReply | Exception | Callable[[ChatRequest], str | ChatReply]


class ScriptedClient:
    """Answers each request with the next scripted item, or with ``responder`` once the queue is
    empty. An item may be a reply text, a full ``ChatReply``, an exception to raise, or a function
    of the request.

    Without ``stream_chars`` it cannot stream and ignores a call's watch. With it, a call with a
    watch gets its reply's text in growing prefixes, ``stream_chars`` characters more each (a
    "piece", counted as one token), until the watch stops it: the reply is then the text so far,
    finished by ``WATCH_STOP``, with the pieces sent as its completion tokens and its prompt
    tokens (as scripted) an estimate, as from a server that was hung up on. ``streams`` holds, per
    streamed call, the pieces sent and the pieces the reply had."""

    def __init__(
        self,
        replies: list[Script] | None = None,
        *,
        responder: Callable[[ChatRequest], str | ChatReply] | None = None,
        window: int | None = 8192,
        counter: TokenCounter | None = None,
        delay_s: float = 0.0,
        parallel: int | None = None,
        model: str = "scripted",
        stream_chars: int | None = None,
    ) -> None:
        self._queue: list[Script] = list(replies or [])
        self._responder = responder
        self._window = window
        self._counter = counter
        self._delay_s = delay_s
        self.parallel = parallel
        self.model = model
        self.requests: list[ChatRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.closed = False
        self.stream_chars = stream_chars
        self.streams: list[tuple[int, int]] = []

    def enqueue(self, *items: Script) -> None:
        self._queue.extend(items)

    async def chat(self, request: ChatRequest, watch: ReplyWatch | None = None) -> ChatReply:
        self.requests.append(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self._delay_s)
            item: Script | None = self._queue.pop(0) if self._queue else self._responder
            if item is None:
                raise AssertionError(f"ScriptedClient has no reply for request {len(self.requests)}")
            if isinstance(item, Exception):
                raise item
            if callable(item):
                item = item(request)
            reply = item if isinstance(item, ChatReply) else ChatReply(text=item)
            if watch is None or self.stream_chars is None:
                return reply
            return self._streamed(reply, watch, self.stream_chars)
        finally:
            self.in_flight -= 1

    def _streamed(self, reply: ChatReply, watch: ReplyWatch, step: int) -> ChatReply:
        ends = range(step, len(reply.text) + step, step)
        for sent, end in enumerate(ends, start=1):
            if watch(reply.text[:end]) and end < len(reply.text):
                self.streams.append((sent, len(ends)))
                update = {"text": reply.text[:end], "finish_reason": WATCH_STOP, "completion_tokens": sent}
                return reply.model_copy(update={**update, "prompt_tokens_estimated": True})
        self.streams.append((len(ends), len(ends)))
        return reply

    async def context_window(self) -> int | None:
        return self._window

    async def token_counter(self) -> TokenCounter | None:
        return self._counter

    async def worker_count(self) -> int:
        return 1

    async def parallel_requests(self) -> int | None:
        return self.parallel

    async def model_name(self) -> str:
        return self.model

    def describe(self) -> str:
        return "scripted fake client"

    async def aclose(self) -> None:
        self.closed = True
