"""The streaming scheduler: the barrier version's groups and answers, started earlier; and its
building blocks (priority semaphore, ordered consumption)."""

from __future__ import annotations

import asyncio
import random
import re

import pytest

from llmxmr import MapReducePipeline, PipelineConfig
from llmxmr.clients.base import ChatReply, ChatRequest, ReplyWatch
from llmxmr.clients.fake import ScriptedClient
from llmxmr.errors import LLMCallError, ServerRefusedError
from llmxmr.scheduling import PrioritySemaphore, in_order

from ..conftest import WordCounter, final_reply, partial_reply

SECTIONS = [
    f"Section {i} says the letter is {chr(65 + i % 26)} and nothing else matters here. " * 12 for i in range(24)
]
DOCUMENT = "\n\n".join(SECTIONS)


def answers_in(request: ChatRequest) -> list[str]:
    return re.findall(r"^Answer: (.+)$", request.messages[-1].content, flags=re.M)


def distinct(word: str, count: int) -> str:
    """``count`` words, none repeated: a reply that repeats itself is cut where it starts to."""
    return " ".join(f"{word}{n}" for n in range(count))


def responder(keep=lambda n: n % 3 != 0, info_words: int = 20, collapse_informs: bool = True):
    """Deterministic in the request: map answers the letters of the sections it keeps, a collapse
    or reduce joins its partials' answers in order, so the final answer spells out the whole
    grouping. ``info_words`` sets how large partials are; a collapse may report no information."""

    def respond(request: ChatRequest) -> str:
        text = request.messages[-1].content
        if request.schema_name == "MapOutput":
            sections = [int(n) for n in re.findall(r"Section (\d+) says", text.rsplit("<document_part>", 1)[1])]
            kept = sorted({n for n in sections if keep(n)})
            if not kept:
                return partial_reply(None, 0.0, info="", rationale="")
            return partial_reply("".join(chr(65 + n % 26) for n in kept), 4.0, info=distinct("letters", info_words))
        joined = "(" + "+".join(answers_in(request)) + ")"
        if request.schema_name == "CollapseOutput":
            if not collapse_informs:
                return partial_reply(None, 0.0, info="", rationale="")
            return partial_reply(joined, 3.0, info=distinct("merged", 12 * len(answers_in(request))))  # grows: rounds
        return final_reply(joined)

    return respond


respond = responder()


class JitteryClient(ScriptedClient):
    """Replies after a random delay, so calls finish in a shuffled order."""

    def __init__(self, seed: int, events: list[tuple[str, str]] | None = None, respond=respond) -> None:
        super().__init__(responder=respond, counter=WordCounter())
        self._rng = random.Random(seed)
        self.events = events if events is not None else []

    async def chat(self, request: ChatRequest, watch: ReplyWatch | None = None) -> ChatReply:
        self.events.append(("start", request.schema_name or ""))
        await asyncio.sleep(self._rng.uniform(0, 0.01))
        reply = await super().chat(request, watch)
        self.events.append(("end", request.schema_name or ""))
        return reply


def run(scheduler: str, client: ScriptedClient, **overrides):
    # The scripted answers are letters, not quotes: grounding (tested elsewhere) would set them aside.
    values = {"scheduler": scheduler, "chunking.chunk_tokens": 120, "llm.concurrency": 4, "llm.context_window": 700}
    values["grounding.mode"] = "off"
    values.update(
        {"generation.map_max_tokens": 64, "generation.collapse_max_tokens": 64, "generation.reduce_max_tokens": 64}
    )
    values.update(overrides)
    return MapReducePipeline(PipelineConfig.load(**values), client=client).run(DOCUMENT, "Which letters?")


def collapse_groups(client: ScriptedClient) -> list[tuple[str, ...]]:
    return sorted(tuple(answers_in(r)) for r in client.requests if r.schema_name == "CollapseOutput")


@pytest.mark.parametrize(("seed", "window", "rounds"), [(0, 700, 2), (1, 700, 2), (2, 700, 2), (3, 4000, 0)])
def test_streaming_gives_the_barrier_versions_groups_and_answer(seed, window, rounds):
    barrier_client, streaming_client = JitteryClient(seed), JitteryClient(seed + 100)
    barrier = run("barrier", barrier_client, **{"llm.context_window": window})
    streaming = run("streaming", streaming_client, **{"llm.context_window": window})
    assert barrier.answer.startswith("(" * (rounds + 1) + "B")
    assert streaming.answer == barrier.answer
    assert collapse_groups(streaming_client) == collapse_groups(barrier_client)


def test_a_collapse_starts_before_waiting_maps():
    events: list[tuple[str, str]] = []
    run("streaming", JitteryClient(5, events), **{"llm.concurrency": 2})
    first_collapse = events.index(("start", "CollapseOutput"))
    # Every map was queued from the start; the collapse jumped that queue.
    assert ("start", "MapOutput") in events[first_collapse:]
    barrier_events: list[tuple[str, str]] = []
    run("barrier", JitteryClient(5, barrier_events), **{"llm.concurrency": 2})
    assert barrier_events.index(("start", "CollapseOutput")) > max(
        i for i, event in enumerate(barrier_events) if event == ("end", "MapOutput")
    )


@pytest.mark.parametrize(
    ("case", "respond", "window"),
    [
        ("pairs: every partial too big to share a group", responder(info_words=600), 1200),
        ("one informative partial", responder(keep=lambda n: n == 7), 700),
        ("no informative partial", responder(keep=lambda n: False), 700),
        ("collapses that find nothing", responder(collapse_informs=False), 700),
    ],
)
def test_streaming_matches_the_barrier_in_edge_cases(case, respond, window):
    barrier_client, streaming_client = JitteryClient(7, respond=respond), JitteryClient(8, respond=respond)
    barrier = run("barrier", barrier_client, **{"llm.context_window": window})
    streaming = run("streaming", streaming_client, **{"llm.context_window": window})
    assert (streaming.answer, streaming.found) == (barrier.answer, barrier.found)
    assert collapse_groups(streaming_client) == collapse_groups(barrier_client)
    if case.startswith("pairs"):  # each partial alone is over half the budget: only the pair rule merges
        informative = sum(1 for r in barrier_client.requests if r.schema_name == "MapOutput") * 2 // 3
        assert sum(len(group) == 2 for group in collapse_groups(barrier_client)) >= informative // 2


class FailingClient(JitteryClient):
    def __init__(self, seed: int, fail_at: int, error: Exception) -> None:
        super().__init__(seed)
        self._fail_at, self._error = fail_at, error
        self.started = 0
        self.active = 0  # calls begun and neither finished nor cancelled

    async def chat(self, request: ChatRequest, watch: ReplyWatch | None = None) -> ChatReply:
        self.started += 1
        if self.started == self._fail_at:
            raise self._error
        self.active += 1
        try:
            return await super().chat(request, watch)
        finally:
            self.active -= 1


def test_a_failure_cancels_every_call_of_the_run():
    client = FailingClient(3, fail_at=6, error=LLMCallError("boom"))  # a later map, others in flight
    values = {"chunking.chunk_tokens": 120, "llm.concurrency": 4, "llm.context_window": 700}
    values.update(
        {"generation.map_max_tokens": 64, "generation.collapse_max_tokens": 64, "generation.reduce_max_tokens": 64}
    )
    config = PipelineConfig.load(on_chunk_error="fail", **values)

    async def scenario() -> int:
        with pytest.raises(LLMCallError):
            await MapReducePipeline(config, client=client).arun(DOCUMENT, "Which letters?")
        return client.active  # before the event loop could clean anything up itself

    assert asyncio.run(scenario()) == 0
    assert client.started < 12 and not any(r.schema_name == "CollapseOutput" for r in client.requests)


def test_a_fatal_first_call_sends_nothing_more():
    client = FailingClient(3, fail_at=1, error=ServerRefusedError("http://x/v1", 401, "bad key"))
    with pytest.raises(ServerRefusedError):
        run("streaming", client)
    assert client.started == 1


def test_priority_semaphore_serves_lower_priority_first_then_in_order():
    async def scenario() -> list[str]:
        semaphore = PrioritySemaphore(1)
        order: list[str] = []
        await semaphore.acquire()

        async def take(name: str, priority: int) -> None:
            async with semaphore.slot((priority,)):
                order.append(name)

        tasks = [
            asyncio.ensure_future(take(n, p)) for n, p in [("map1", 2), ("map2", 2), ("collapse", 1), ("reduce", 0)]
        ]
        await asyncio.sleep(0)
        semaphore.release()
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(scenario()) == ["reduce", "collapse", "map1", "map2"]


def test_a_waiter_not_ready_waits_in_its_place_and_costs_the_grants_nothing(monkeypatch):
    # A long run queues every map at the start, most of them waiting for their chunk's first call:
    # granting a slot must not pass over them one by one (that made a 1,000-chunk run's event loop
    # spend seconds in the semaphore while the server waited).
    import heapq

    pops = 0
    real_pop = heapq.heappop

    def counted_pop(heap):
        nonlocal pops
        pops += 1
        return real_pop(heap)

    monkeypatch.setattr(heapq, "heappop", counted_pop)

    async def scenario() -> list[str]:
        semaphore = PrioritySemaphore(1)
        order: list[str] = []
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def take(name: str, priority: int, ready: asyncio.Future[None] | None = None) -> None:
            async with semaphore.slot((priority,), ready):
                order.append(name)
                await asyncio.sleep(0)

        parked = [asyncio.ensure_future(take(f"parked{n}", 0, gate)) for n in range(500)]
        going = [asyncio.ensure_future(take(f"go{n}", 1)) for n in range(50)]
        await asyncio.gather(*going)
        gate.set_result(None)
        await asyncio.gather(*parked)
        return order

    order = asyncio.run(scenario())
    assert order == [f"go{n}" for n in range(50)] + [f"parked{n}" for n in range(500)]
    assert pops <= 2 * 550  # each waiter leaves the queue once


def test_a_cancelled_waiter_does_not_lose_a_slot():
    async def scenario() -> int:
        semaphore = PrioritySemaphore(1)
        await semaphore.acquire()
        waiter = asyncio.ensure_future(semaphore.acquire())
        await asyncio.sleep(0)
        semaphore.release()  # granted to the waiter...
        waiter.cancel()  # ...which is cancelled before it runs
        await asyncio.gather(waiter, return_exceptions=True)
        await asyncio.wait_for(semaphore.acquire(), 1)  # the slot came back
        return semaphore._free

    assert asyncio.run(scenario()) == 0


def test_in_order_yields_in_order_and_fails_early():
    async def scenario() -> tuple[list[list[int]], bool]:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(3)]
        seen: list[list[int]] = []

        async def consume() -> None:
            async for batch in in_order(futures):
                seen.append(batch)

        consumer = asyncio.ensure_future(consume())
        futures[2].set_result(2)
        futures[1].set_result(1)
        await asyncio.sleep(0)
        assert seen == []  # the first is not done: nothing may be yielded yet
        futures[0].set_result(0)
        await consumer

        failing = [loop.create_future() for _ in range(2)]
        failing[1].set_exception(ValueError("late one failed"))
        try:
            async for _ in in_order(failing):
                pass
        except ValueError:
            return seen, not failing[0].done()
        return seen, False

    seen, raised_before_the_first_finished = asyncio.run(scenario())
    assert seen == [[0, 1, 2]]
    assert raised_before_the_first_finished


def test_the_trace_places_each_call_on_the_runs_clock_with_its_wait_for_a_slot():
    """One slot: the calls go one after another, each sent once the one before it ended, and each
    map waited for a slot from the moment the maps were started. ``sent_s`` counts from the run's
    start, the clock whose end is the wall time."""
    delay = 0.02
    client = ScriptedClient(responder=respond, counter=WordCounter(), delay_s=delay)
    config = PipelineConfig.load(**{"chunking.chunk_tokens": 400, "llm.concurrency": 1})
    result = MapReducePipeline(config, client=client).run(DOCUMENT, "Which letters?")
    calls = sorted(result.trace.calls, key=lambda r: r.sent_s if r.sent_s is not None else -1.0)
    maps = [r for r in calls if r.stage == "map"]
    assert len(maps) >= 4 and calls[-1].stage == "reduce" and len(calls) == len(client.requests)
    slack = 2e-4  # the figures are rounded to 0.1 ms
    for before, after in zip(calls, calls[1:], strict=False):
        assert after.sent_s is not None and before.sent_s is not None and after.queued_s is not None
        assert after.sent_s >= before.sent_s + before.latency_s - slack  # one slot: no overlap
    assert calls[0].sent_s is not None and calls[0].sent_s >= 0
    assert calls[-1].sent_s + calls[-1].latency_s <= result.trace.wall_time_s + slack  # type: ignore[operator]
    # Every map was asked for at about the same time, so the n-th waited for the n calls before it.
    asked = [r.sent_s - r.queued_s for r in maps]  # type: ignore[operator]
    assert max(asked) - min(asked) < delay
    for n, record in enumerate(maps):
        assert record.queued_s >= n * delay - slack  # type: ignore[operator]
