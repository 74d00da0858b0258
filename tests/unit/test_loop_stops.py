"""Loops stopped as they start (issue 27): a reply streams in under a watch (``structured.LoopStop``)
that stops the call once a string begins to repeat itself, closes the JSON at its last complete
value and reads it with the loop rule that cuts finished replies; what does not loop streams to its
end and reads as it did unstreamed. The clients, the reply cache and the replay server carry it."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from llmxmr.clients.base import WATCH_STOP, ChatReply, ChatRequest, ReplyWatch
from llmxmr.clients.cache import CachedClient
from llmxmr.clients.fake import ScriptedClient
from llmxmr.clients.openai_compat import OpenAICompatibleClient
from llmxmr.loops import cut_loop
from llmxmr.prompts import ChatMessage
from llmxmr.schemas import FinalAnswer, MapOutput
from llmxmr.structured import (
    LOOP_GRACE_CHARS,
    PARSE_EVERY_CHARS,
    PartialReply,
    call_structured,
    rescue_string_chars,
)
from llmxmr.trace import CallRecord

from ..conftest import partial_reply
from ..fake_server import Answer, FakeServer, completion, fake_server, models, sdk_waits
from ..replay import ReplyStore, replay_server

MESSAGES = [ChatMessage(role="user", content="What is the pass key?")]
# The bundled SmolLM2-135M's loop (issue 26), long enough to run a reply to its cap.
KEY_LOOP = "The pass key is 58213. " * 60
FIRST_SENTENCE = "The pass key is 58213."
# A reduce reply whose last field loops: closed where it is stopped, it lacks nothing.
LOOPING_LAST = json.dumps({"answer": "58213", "confidence": 4.5, "supporting_chunks": [0], "rationale": KEY_LOOP})
# A map reply whose first field loops: every field it needs is still to come.
LOOPING_FIRST = json.dumps(
    {"extracted_information": KEY_LOOP, "evidence": [], "rationale": "stated", "answer": "58213", "confidence": 5}
)
GOOD_MAP = partial_reply("58213", 5.0, info=FIRST_SENTENCE, rationale="stated")


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch):
    sdk_waits(monkeypatch)


def structured(client, output_type=FinalAnswer, **kwargs) -> tuple[Any, CallRecord]:
    """One ``call_structured`` call, the client closed after it."""

    async def go():
        try:
            return await call_structured(
                client,
                MESSAGES,
                output_type,
                stage="reduce" if output_type is FinalAnswer else "map",
                chunk_indices=[0],
                max_tokens=256,
                temperature=0.0,
                attempts=kwargs.pop("attempts", 3),
                **kwargs,
            )
        finally:
            await client.aclose()

    return asyncio.run(go())


def streamed_slowly(content: str, finish: str = "stop") -> Answer:
    answer = completion(content, prompt_tokens=40, completion_tokens=len(content) // 4)
    answer.body["choices"][0]["finish_reason"] = finish
    answer.piece_delay_s = 0.005
    return answer


def hung_up(server: FakeServer, timeout_s: float = 3.0) -> bool:
    """Whether the server saw its (first) stream's client go away, waiting for it to notice."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.streams and server.streams[0].hung_up:
            return True
        time.sleep(0.01)
    return False


# Over HTTP: the server streams, and is hung up on.


def test_a_looping_stream_is_hung_up_on_early_and_its_closed_json_validates():
    scripts = {"/v1/models": [models("sglang")], "/v1/chat/completions": [streamed_slowly(LOOPING_LAST, "length")]}
    with fake_server(scripts) as server:
        output, record = structured(OpenAICompatibleClient(server.base_url))
        assert hung_up(server)
        (stream,) = server.streams
    assert stream.sent < stream.pieces // 4  # stopped in the loop's first copies, not at the cap
    (_, body) = server.requests[-1]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    # Closed at the last complete value, the looping field cut at its first repetition.
    assert output == FinalAnswer(answer="58213", confidence=4.5, supporting_chunks=[0], rationale=FIRST_SENTENCE)
    assert cut_loop(KEY_LOOP) == FIRST_SENTENCE
    assert record.attempts == 1 and record.rescue_max_chars is None and record.error is None
    assert record.loop_stops == ["rationale"] and record.loops_cut == ["rationale"]
    (decoded,) = record.loop_stop_tokens
    assert 0 < decoded <= stream.sent and record.completion_tokens == decoded
    # Hung up on, the server sent no usage: the prompt's tokens are the client's estimate.
    assert record.prompt_tokens > 0 and record.prompt_tokens_estimated == 1


@pytest.mark.parametrize(
    ("owner", "extra"),
    [("sglang", {}), ("llamacpp", {"timings": {"cache_n": 30}}), ("me", {})],
    ids=["sglang-usage", "llama-server-timings", "llama-cpp-python-no-usage"],
)
def test_a_stream_that_does_not_loop_reads_as_the_reply_unstreamed(owner, extra):
    """The same validated output and the same record; the same reply where the server streams its
    usage. llama-cpp-python's server streams none: its prompt tokens are then estimated."""
    answer = completion(GOOD_MAP, prompt_tokens=40, completion_tokens=30, cached=12 if owner == "sglang" else None)
    answer.body.update(extra)
    scripts = {"/v1/models": [models(owner)], "/v1/chat/completions": [answer]}

    class Unwatched(OpenAICompatibleClient):
        async def chat(self, request: ChatRequest, watch: ReplyWatch | None = None) -> ChatReply:
            return await super().chat(request)

    with fake_server(scripts) as server:
        streamed, streamed_record = structured(OpenAICompatibleClient(server.base_url), MapOutput)
        whole, whole_record = structured(Unwatched(server.base_url), MapOutput)
        request = ChatRequest(messages=MESSAGES, max_tokens=64)
        replies = asyncio.run(_both_ways(server.base_url, request))
    streamed_or_not = [body.get("stream") for path, body in server.requests if path == "/v1/chat/completions"]
    assert streamed_or_not == [True, None, None, True]
    assert streamed == whole and streamed.answer == "58213"
    unstreamed, watched = replies
    usage = ("prompt_tokens", "completion_tokens", "prompt_tokens_estimated")
    if owner == "me":  # no usage streamed: the chunks of text counted, the prompt estimated
        assert watched.completion_tokens == server.streams[-1].pieces and watched.prompt_tokens_estimated
        assert streamed_record.completion_tokens == server.streams[0].pieces
        assert streamed_record.prompt_tokens_estimated == 1 and streamed_record.prompt_tokens > 0
        watched = watched.model_copy(update={key: getattr(unstreamed, key) for key in usage})
        streamed_record = streamed_record.model_copy(update={key: getattr(whole_record, key) for key in usage})
    assert watched == unstreamed
    assert streamed_record.model_dump(exclude={"latency_s"}) == whole_record.model_dump(exclude={"latency_s"})


async def _both_ways(base_url: str, request: ChatRequest) -> list[ChatReply]:
    client = OpenAICompatibleClient(base_url)
    try:
        return [await client.chat(request), await client.chat(request, lambda text: False)]
    finally:
        await client.aclose()


def test_a_stream_that_breaks_off_is_asked_again():
    """A connection cut mid-stream, or a stream ended before its reply (llama-cpp-python's server
    ends one so when another request waits), is asked again, within the retries."""
    unfinished = completion(GOOD_MAP)
    unfinished.body["choices"][0]["finish_reason"] = None
    faults = [Answer(200, completion(GOOD_MAP).body, reset=True), unfinished]
    for fault in faults:
        scripts = {"/v1/models": [models("vllm")], "/v1/chat/completions": [fault, completion(GOOD_MAP)]}
        with fake_server(scripts) as server:
            request = ChatRequest(messages=MESSAGES, max_tokens=64)
            reply = asyncio.run(_watched(server.base_url, request, max_retries=2))
        assert (reply.text, reply.finish_reason, reply.transport_retries) == (GOOD_MAP, "stop", 1)
        assert len(server.streams) == 2


def test_a_stream_that_keeps_breaking_off_fails_alone():
    scripts = {"/v1/models": [models("vllm")], "/v1/chat/completions": [Answer(200, completion("x").body, reset=True)]}
    with fake_server(scripts) as server:
        output, record = structured(OpenAICompatibleClient(server.base_url, max_retries=2), attempts=1)
    assert output is None and record.error_kind == "transport" and "dropped the connection" in (record.error or "")
    assert len(server.streams) == 3 and record.transport_retries == 2


def test_a_server_that_answers_a_stream_with_one_body_is_read_whole():
    whole = completion(GOOD_MAP)
    whole.raw = json.dumps(whole.body).encode()  # sent as it is: JSON, not events
    seen: list[str] = []
    with fake_server({"/v1/models": [models("vllm")], "/v1/chat/completions": [whole]}) as server:
        reply = asyncio.run(_watched(server.base_url, ChatRequest(messages=MESSAGES, max_tokens=64), seen.append))
    assert reply.text == GOOD_MAP and reply.finish_reason == "stop" and not reply.prompt_tokens_estimated
    assert seen == []  # a reply that did not stream is no reply to watch


async def _watched(base_url: str, request: ChatRequest, seen=None, **settings: Any) -> ChatReply:
    client = OpenAICompatibleClient(base_url, **settings)

    def watch(text: str) -> bool:
        if seen is not None:
            seen(text)
        return False

    try:
        return await client.chat(request, watch)
    finally:
        await client.aclose()


# The stop, its rescue and its record, with the scripted client streaming.


def test_a_loop_the_model_leaves_within_the_grace_is_not_stopped_and_its_answer_stands():
    # SmolLM2 copies a pass key two or three times over, then closes the string and answers; a
    # stop there would cost a rescue, which it answers worse.
    brief = "The pass key is 58213. Remember it. 58213 is the pass key. " + "The pass key is 58213. " * 4
    reply = json.dumps(
        {
            "extracted_information": brief,
            "evidence": [FIRST_SENTENCE],
            "rationale": "x",
            "answer": "58213",
            "confidence": 5,
        }
    )
    client = ScriptedClient([reply], stream_chars=4)
    output, record = structured(client, MapOutput)
    assert output is not None and output.answer == "58213"
    assert output.extracted_information == "The pass key is 58213. Remember it. 58213 is the pass key."
    assert record.loop_stops == [] and record.rescued_from is None and len(client.requests) == 1


def test_a_stop_that_leaves_a_required_field_missing_is_rescued_as_a_reply_cut_at_the_cap():
    client = ScriptedClient([LOOPING_FIRST, GOOD_MAP], stream_chars=4)
    output, record = structured(client, MapOutput)
    assert output is not None and output.answer == "58213"
    (sent, pieces), _ = client.streams
    # Stopped once the loop ran its grace past its first copy, long before the reply's end.
    assert sent * 4 <= len(FIRST_SENTENCE) + LOOP_GRACE_CHARS + PARSE_EVERY_CHARS + 40 < pieces * 4 // 2
    assert record.loop_stops == ["extracted_information"] and record.loop_stop_tokens == [sent]
    assert record.rescued_from == "loop" and record.rescue_max_chars == rescue_string_chars(256)
    first, rescue = client.requests
    # Asked again from the start, under the tighter schema: the looping reply is not sent back.
    assert rescue.messages[:-1] == first.messages and "every text field under" in rescue.messages[-1].content
    caps = {spec.get("maxLength") for spec in rescue.json_schema["properties"].values() if spec.get("type") == "string"}
    assert caps == {rescue_string_chars(256)}


@pytest.mark.parametrize(("cap", "stopped"), [(200, False), (2000, True)])
def test_a_loop_its_schema_soon_ends_runs_on_where_a_stop_would_cost_a_rescue(cap, stopped):
    """A capped string's loop ends at its cap, and the reply goes on to the fields it needs: let
    run when what the cap still allows is within ``LOOP_ALLOWANCE_CHARS``, stopped otherwise."""
    reply = json.dumps(
        {"extracted_information": KEY_LOOP[:cap], "evidence": [], "rationale": "stated", "answer": "1", "confidence": 5}
    )
    client = ScriptedClient([reply, GOOD_MAP], stream_chars=4)
    output, record = structured(client, MapOutput, max_string_chars=cap)
    assert output is not None
    if stopped:
        assert record.loop_stops == ["extracted_information"] and record.rescued_from == "loop"
    else:
        assert client.streams == [(client.streams[0][1],) * 2] and record.loop_stops == []
        assert output.extracted_information == FIRST_SENTENCE and record.loops_cut == ["extracted_information"]


def test_a_loop_in_one_quote_runs_to_its_cap_and_the_answer_after_it_is_kept():
    """SmolLM2's common reply: a quote repeated inside its cap, then the answer (the recorded
    replies of the integration lane hold many)."""
    reply = json.dumps(
        {
            "extracted_information": FIRST_SENTENCE,
            "evidence": [FIRST_SENTENCE, KEY_LOOP[:280]],
            "rationale": "stated",
            "answer": "58213",
            "confidence": 5,
        }
    )
    client = ScriptedClient([reply], stream_chars=4)
    output, record = structured(client, MapOutput, max_string_chars=200)
    assert client.streams[0][0] == client.streams[0][1] and record.loop_stops == []
    assert output.answer == "58213" and output.evidence == [FIRST_SENTENCE, FIRST_SENTENCE]


def test_the_answer_is_shown_as_it_is_written():
    """``on_partial``: the reply's fields as they grow (issue 28 prints the reduce's answer so)."""
    answer = "The pass key is 58213, stated in the second chunk of the document, in a sentence of its own."
    reply = json.dumps({"rationale": "stated", "answer": answer, "confidence": 5, "supporting_chunks": [1]})
    shown: list[PartialReply] = []
    output, _ = structured(ScriptedClient([reply], stream_chars=4), on_partial=shown.append)
    answers = [partial.fields["answer"] for partial in shown if "answer" in partial.fields]
    assert len(set(answers)) >= 3 and all(partial.attempt == 1 for partial in shown)
    assert all(answer.startswith(seen) for seen in answers) and answers == sorted(answers, key=len)
    assert output.answer == answer
    assert structured(ScriptedClient([reply]), on_partial=shown.append)[0] == output  # no stream: nothing shown


# The reply cache.


def test_the_cache_keeps_a_stopped_reply_and_stops_a_hit_where_its_watch_does(tmp_path):
    from llmxmr.structured import LoopStop

    inner = ScriptedClient(responder=lambda request: ChatReply(text=LOOPING_LAST), stream_chars=4)
    cached = CachedClient(inner, tmp_path / "cache.sqlite")
    request = ChatRequest(messages=MESSAGES, max_tokens=256)

    async def go():
        stopped = await cached.chat(request, LoopStop(FinalAnswer))
        again = await cached.chat(request, LoopStop(FinalAnswer))
        whole = await cached.chat(request)  # unwatched: a stopped reply is no answer to it
        replayed = await cached.chat(request, LoopStop(FinalAnswer))  # the whole reply, replayed
        return stopped, again, whole, replayed

    stopped, again, whole, replayed = asyncio.run(go())
    assert stopped.finish_reason == WATCH_STOP and not stopped.from_cache and len(stopped.text) < len(LOOPING_LAST)
    assert (again.text, again.finish_reason, again.from_cache) == (stopped.text, WATCH_STOP, True)
    assert whole.text == LOOPING_LAST and not whole.from_cache
    assert (replayed.text, replayed.finish_reason, replayed.from_cache) == (stopped.text, WATCH_STOP, True)
    assert len(inner.requests) == 2  # the first watched call, and the unwatched one


# The replay server of the integration lane.


def test_a_recorded_reply_answers_a_streamed_request_as_a_stream(tmp_path, monkeypatch):
    """Stores hold requests as sent unstreamed: a streamed request finds its recording, and gets it
    streamed as llama-cpp-python's server streams (no usage), so a loop in it is hung up on."""
    monkeypatch.setattr("tests.replay.STORE_DIR", tmp_path)
    looping = streamed_slowly(LOOPING_LAST, "length")
    upstream_scripts = {"/v1/models": [models("me")], "/v1/chat/completions": [looping]}
    store = ReplyStore("unit")
    with fake_server(upstream_scripts) as upstream, replay_server(store, upstream.base_url) as base_url:
        recorded, _ = structured(OpenAICompatibleClient(base_url))
    (asked,) = [body for path, body in upstream.requests if path == "/v1/chat/completions"]
    assert "stream" not in asked and "stream_options" not in asked  # recorded as a plain request
    with replay_server(store) as base_url:
        replayed, record = structured(OpenAICompatibleClient(base_url))
    store.check()  # no miss
    assert replayed == recorded and replayed.rationale == FIRST_SENTENCE
    assert record.loop_stops == ["rationale"] and record.prompt_tokens_estimated == 1
