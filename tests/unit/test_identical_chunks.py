"""Identical text read once: a map call whose chunk text and question (and prompts and settings)
equal an earlier call's is not made; its chunk gets that call's reply and grounds it in its own
text. Within a run, across the questions of one reading, across the documents of a batch, with
the reply cache, and in flight at once; a failure is shared but not remembered."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from llmxmr import Document, MapReducePipeline, PipelineConfig
from llmxmr.batch import BatchItem, format_report, read_results, run_batch
from llmxmr.clients.base import ChatReply, ChatRequest
from llmxmr.clients.cache import CachedClient
from llmxmr.clients.fake import ScriptedClient
from llmxmr.errors import LLMCallError
from llmxmr.estimate import estimate_cost, format_estimate
from llmxmr.reuse import Origin, SharedCalls
from llmxmr.schemas import MapOutput
from llmxmr.trace import CallRecord

from ..conftest import WordCounter, final_reply, map_parts, map_requests, partial_reply

# InfiniteBench's pass-key layout (``bench.infinitebench.generate``): one line of five sentences
# (19 words), repeated, with the key's line among them. Chunks of 95 words (five lines) end at a
# sentence, so after the first chunk (the task's instruction and some lines) they start at one
# place of the line until the key's line moves them to another: most chunks are byte-identical.
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.\n"
TASK = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
    "I will quiz you about the important information there.\n"
)
QUOTE = "The sun is yellow."
SUN = "What colour is the sun?"
KEY = "What is the pass key?"


def haystack(key: str = "71432", lines: int = 60, depth: int = 30) -> str:
    noise = [NOISE] * lines
    noise.insert(depth, f"The pass key is {key}. Remember it. {key} is the pass key.\n")
    return TASK + "".join(noise)


def config(**overrides) -> PipelineConfig:
    values = {"chunking.chunk_tokens": 95, "llm.concurrency": 4, "llm.base_url": "http://unused/v1"}
    return PipelineConfig.load(**{**values, **overrides})


def reader(request: ChatRequest) -> ChatReply:
    """Every chunk says what colour the sun is, quoting the line; the one with the key gives it.
    Every reply costs tokens, so that a reply given without a call shows as one that cost none."""
    if request.schema_name == "MapOutput":
        chunk, question = map_parts(request)
        key = re.search(r"The pass key is (\d+)\.", chunk)
        if "pass key" in question:
            text = partial_reply(key.group(1), 5, info=key.group(0)) if key else partial_reply(None, 0, info="")
        else:
            text = partial_reply("yellow", 4, info=QUOTE)
    else:
        answers = re.findall(r"^Answer: (.+)$", request.messages[-1].content, flags=re.M)
        text = final_reply(answers[0] if answers else "none", 4.5)
    return ChatReply(text=text, prompt_tokens=100, completion_tokens=20)


def new_client(**kwargs) -> ScriptedClient:
    kwargs.setdefault("responder", reader)
    return ScriptedClient(counter=WordCounter(), **kwargs)


def sent_chunks(client: ScriptedClient) -> list[str]:
    return [map_parts(request)[0] for request in map_requests(client)]


def texts(document: str, result) -> list[str]:
    return [document[c.start : c.end] for c in result.chunks]


def test_a_repeated_haystack_makes_one_map_call_per_distinct_chunk():
    document = haystack()
    client = new_client()
    result = MapReducePipeline(config(), client=client).run(document, SUN)
    chunks = texts(document, result)
    assert len(chunks) >= 12 and len(set(chunks)) <= 5  # most chunks are identical
    sent = sent_chunks(client)
    assert len(sent) == len(set(sent)) == len(set(chunks))  # each distinct text once, none twice
    assert result.answer == "yellow"


def test_every_chunk_cites_where_it_sits():
    """The shared reply's quote is looked up in each chunk's own text: one citation per chunk, at
    its own offsets and line, each partial answer verified."""
    document = haystack()
    client = new_client()
    result = MapReducePipeline(config(), client=client).run(document, SUN)
    by_chunk = {citation.chunk: citation for citation in result.citations}
    assert sorted(by_chunk) == [c.index for c in result.chunks]
    for chunk in result.chunks:
        citation = by_chunk[chunk.index]
        assert chunk.start <= citation.start < citation.end <= chunk.end
        assert document[citation.start : citation.end] == citation.quote == QUOTE
        assert citation.line == document.count("\n", 0, citation.start) + 1
    assert len({c.start for c in result.citations}) == len(result.chunks)
    (reduce,) = [r for r in client.requests if r.schema_name == "FinalAnswer"]
    for chunk in result.chunks:
        assert f"### Chunk {chunk.index} (confidence 4; quoted from the text)" in reduce.messages[-1].content


def test_a_paged_document_cites_each_identical_chunk_on_its_own_page():
    text = haystack()
    line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
    pages = tuple(line_starts[::10])  # a page every ten lines
    document = Document(text=text, name="haystack.pdf", format="pdf", page_starts=pages)
    client = new_client()
    result = MapReducePipeline(config(), client=client).run(document, SUN)
    assert len(map_requests(client)) < len(result.chunks)
    for citation in result.citations:
        assert citation.page == document.locate(citation.start).page
        assert citation.location == f"p. {citation.page}"
    repeated = {reuse.chunk for reuse in result.reused}
    assert len({c.page for c in result.citations if c.chunk in repeated}) > 2


def test_the_trace_shows_each_chunk_served_by_an_identical_call():
    document = haystack()
    client = new_client()
    result = MapReducePipeline(config(), client=client).run(document, SUN)
    chunks = texts(document, result)
    first_of = {text: chunks.index(text) for text in reversed(chunks)}
    expected = [(i, first_of[text]) for i, text in enumerate(chunks) if first_of[text] != i]
    assert [(r.chunk, r.source_chunk) for r in result.reused] == expected
    assert all(r.same_document for r in result.reused)
    maps = {record.chunk_indices[0]: record for record in result.trace.calls if record.stage == "map"}
    assert sorted(maps) == list(range(len(chunks)))  # every chunk has its record
    for chunk, _ in expected:
        record = maps[chunk]
        assert (record.attempts, record.prompt_tokens, record.completion_tokens, record.cache_hits) == (0, 0, 0, 0)
        assert record.output is not None and record.check  # grounded in its own chunk
        assert (record.sent_s, record.queued_s) == (None, None)  # never sent: no place on the run's clock
    made = [record for chunk, record in maps.items() if chunk not in dict(expected)]
    assert made and all(record.sent_s is not None and record.queued_s is not None for record in made)
    totals = result.trace.totals
    assert totals.requests == len(client.requests) == len(set(chunks)) + 1
    assert totals.prompt_tokens == 100 * len(client.requests)


def test_identical_chunks_in_flight_at_once_share_one_call():
    client = new_client(delay_s=0.05)
    document = haystack()
    result = MapReducePipeline(config(**{"llm.concurrency": 8}), client=client).run(document, SUN)
    assert set(Counter(sent_chunks(client)).values()) == {1}
    assert client.max_in_flight <= len(set(texts(document, result)))
    assert not result.unread_chunks


def test_shared_calls_run_once_and_hand_over_a_call_given_up():
    async def scenario() -> None:
        shared: SharedCalls[MapOutput] = SharedCalls()
        gate = asyncio.Event()
        made: list[int] = []

        def make(chunk: int, sent: bool = True):
            async def call():
                made.append(chunk)
                await gate.wait()
                record = CallRecord(stage="map", chunk_indices=[chunk], attempts=1, prompt_tokens=9)
                return None, record if sent else None

            return call

        first = asyncio.ensure_future(shared.call("k", Origin(0, 1), make(1)))
        second = asyncio.ensure_future(shared.call("k", Origin(0, 4), make(4)))
        await asyncio.sleep(0.01)
        assert made == [1]  # the identical call waits for the first, in flight
        gate.set()
        (_, mine), source = await first
        (_, theirs), reused_from = await second
        assert source is None and mine is not None and mine.attempts == 1
        assert reused_from == Origin(0, 1) and theirs is not None
        assert (theirs.chunk_indices, theirs.attempts, theirs.prompt_tokens) == ([4], 0, 0)

        # A maker cancelled (its run failed) or that sent nothing hands the call over.
        gate.clear()
        for giving_up in ("cancelled", "not sent"):
            made.clear()
            maker = asyncio.ensure_future(shared.call(giving_up, Origin(1, 0), make(0, sent=giving_up != "not sent")))
            waiter = asyncio.ensure_future(shared.call(giving_up, Origin(2, 7), make(7)))
            await asyncio.sleep(0.01)
            if giving_up == "cancelled":
                maker.cancel()
            else:
                gate.set()
            await asyncio.sleep(0.01)
            gate.set()
            (_, record), source = await waiter
            assert made == [0, 7] and source is None and record is not None and record.chunk_indices == [7]
            await asyncio.gather(maker, return_exceptions=True)
            gate.clear()

    asyncio.run(scenario())


def test_a_failure_is_shared_but_not_remembered():
    """The chunks waiting for a call that the transport lost are unread with it; the next reading
    with the same calls (a later document of the batch, a retry) makes the call again."""
    document = haystack()
    repeated = Counter(texts(document, MapReducePipeline(config(), client=new_client()).run(document, SUN)))
    lost_text = max(repeated, key=lambda text: repeated[text])

    def losing(request: ChatRequest) -> ChatReply:
        if request.schema_name == "MapOutput" and map_parts(request)[0].strip() == lost_text.strip():
            raise LLMCallError("connection reset")
        return reader(request)

    shared: SharedCalls[MapOutput] = SharedCalls()
    client = new_client(responder=losing)
    result = MapReducePipeline(config(), client=client, shared_calls=shared).run(document, SUN)
    lost = [i for i, text in enumerate(texts(document, result)) if text == lost_text]
    assert result.unread_chunks == lost and len(lost) == repeated[lost_text] > 1
    assert [text.strip() for text in sent_chunks(client)].count(lost_text.strip()) == 1
    assert all(record.error_kind == "transport" for record in result.failed_calls)

    again = new_client()
    retried = MapReducePipeline(config(), client=again, shared_calls=shared).run(document, SUN)
    assert not retried.unread_chunks
    assert len(map_requests(again)) == 1  # the lost text only: the others were remembered
    assert [r.chunk for r in retried.reused] == [c.index for c in retried.chunks if c.index != lost[0]]
    assert [r.chunk for r in retried.reused if r.same_document] == lost[1:]  # made again, then shared


def test_the_questions_of_one_reading_share_identical_calls():
    document = haystack()
    client = new_client()
    sun, key = MapReducePipeline(config(), client=client).run_many(document, [SUN, KEY])
    distinct = len(set(texts(document, sun)))
    assert len(map_requests(client)) == 2 * distinct
    assert sun.answer == "yellow" and key.answer == "71432"
    assert len(sun.reused) == len(key.reused) == len(sun.chunks) - distinct

    client = new_client()
    once, twice = MapReducePipeline(config(), client=client).run_many(document, [SUN, SUN])
    assert len(map_requests(client)) == distinct  # the same question again: no map call
    assert [r.chunk for r in twice.reused] == [c.index for c in twice.chunks]
    assert once.citations == twice.citations


def test_a_batch_reads_text_its_documents_share_once(tmp_path: Path):
    first, second = haystack("11111"), haystack("22222")
    batch = [
        BatchItem(id="a", question=KEY, document=first),
        BatchItem(id="b", question=KEY, document=second),
    ]
    client = new_client()
    report = asyncio.run(run_batch(batch, tmp_path / "out", config(), client=client, documents_in_flight=1))
    sent = sent_chunks(client)
    a, b = sorted(read_results(tmp_path / "out" / "results.jsonl"), key=lambda r: str(r.id))
    assert (a.answer, b.answer) == ("11111", "22222")
    assert len(sent) == len(set(sent)) == len({*first_chunks(first), *first_chunks(second)})
    assert b.reused_calls == b.chunks - 1  # all but its key's chunk read for the first document
    assert report.reused_calls == a.reused_calls + b.reused_calls == a.chunks + b.chunks - len(sent)
    assert report.calls == a.calls + b.calls
    assert "not made: identical to an earlier call" in format_report(report)
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["reused_calls"] == report.reused_calls


def first_chunks(document: str) -> list[str]:
    return texts(document, MapReducePipeline(config(), client=new_client()).run(document, SUN))


class _CountedCache(CachedClient):
    lookups = 0

    async def chat(self, request: ChatRequest, *args: Any, **kwargs: Any) -> ChatReply:
        self.lookups += 1
        return await super().chat(request, *args, **kwargs)


def test_with_the_reply_cache_an_identical_chunk_is_no_lookup(tmp_path: Path):
    document = haystack()
    inner = new_client()
    cached = _CountedCache(inner, tmp_path / "cache.sqlite")
    result = MapReducePipeline(config(), client=cached).run(document, SUN)
    distinct = len(set(texts(document, result)))
    assert cached.lookups == len(inner.requests) == distinct + 1
    assert result.trace.totals.cache_hits == 0

    inner = new_client()
    cached = _CountedCache(inner, tmp_path / "cache.sqlite")
    again = MapReducePipeline(config(), client=cached).run(document, SUN)
    assert not inner.requests and cached.lookups == distinct + 1
    assert again.trace.totals.cache_hits == distinct + 1  # the reused chunks are no cache hits
    assert again.citations == result.citations and again.reused == result.reused


@pytest.mark.parametrize(("cache_sampled", "shared"), [(False, False), (True, True)])
def test_sampled_calls_are_draws_of_their_own_unless_the_cache_keeps_them(cache_sampled: bool, shared: bool):
    document = haystack()
    client = new_client()
    cfg = config(**{"llm.temperature": 0.7, "llm.cache_sampled": cache_sampled})
    result = MapReducePipeline(cfg, client=client).run(document, SUN)
    distinct = len(set(texts(document, result)))
    assert len(map_requests(client)) == (distinct if shared else len(result.chunks))
    assert bool(result.reused) == shared


def test_the_estimate_counts_identical_calls_once():
    document = haystack()
    result = MapReducePipeline(config(), client=new_client()).run(document, SUN)
    distinct = len(set(texts(document, result)))
    chunks = len(result.chunks)

    estimate = asyncio.run(estimate_cost(config(), new_client(), [(document, [SUN, KEY])]))
    assert estimate.chunks == chunks
    assert estimate.map.calls == 2 * distinct and estimate.reused_calls == 2 * (chunks - distinct)
    assert f"{estimate.reused_calls} map calls not made" in format_estimate(estimate)

    two = [(haystack("11111"), [KEY]), (haystack("22222"), [KEY])]
    apart = asyncio.run(estimate_cost(config(), new_client(), two))
    together = asyncio.run(estimate_cost(config(), new_client(), two, across_documents=True))
    assert apart.map.calls == 2 * distinct
    assert together.map.calls == distinct + 1  # the second document's key chunk only
    assert together.map.prompt_tokens < apart.map.prompt_tokens
