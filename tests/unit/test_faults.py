"""What the client and the pipeline do when the server misbehaves: each fault injected by the local
test server, request by request."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from llmxmr import MapReducePipeline, PipelineConfig
from llmxmr.clients.base import ChatRequest
from llmxmr.clients.openai_compat import OpenAICompatibleClient
from llmxmr.errors import LLMCallError, ServerUnavailableError
from llmxmr.prompts import ChatMessage
from llmxmr.schemas import MapOutput
from llmxmr.structured import call_structured

from ..conftest import final_reply, partial_reply
from ..fake_server import Answer, completion, fake_server, models, sdk_waits

REQUEST = ChatRequest(messages=[ChatMessage(role="user", content="hi")], max_tokens=64)
MODELS = [models("sglang", max_model_len=8192)]
GOOD = completion("ok")


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch):
    """Retries at once: the tests are about which faults are retried, not how long they wait."""
    sdk_waits(monkeypatch)


def chat(base_url: str, request: ChatRequest = REQUEST, **kwargs):
    async def go():
        client = OpenAICompatibleClient(base_url, max_retries=2, **kwargs)
        try:
            return await client.chat(request)
        finally:
            await client.aclose()

    return asyncio.run(go())


def chat_requests(server) -> int:
    return sum(path == "/v1/chat/completions" for path, _ in server.requests)


@pytest.mark.parametrize(
    "fault",
    [
        Answer(500, {"error": {"message": "boom"}}),
        Answer(502, {"error": {"message": "bad gateway"}}),
        Answer(503, {"error": {"message": "overloaded"}}),
        Answer(429, {"error": {"message": "slow down"}}),
        Answer(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"}),
        Answer(200, None, reset=True),
    ],
    ids=["500", "502", "503", "429", "429-retry-after", "reset-mid-response"],
)
def test_transient_faults_are_retried_then_succeed(fault):
    with fake_server({"/v1/models": MODELS, "/v1/chat/completions": [fault, GOOD]}) as server:
        reply = chat(server.base_url)
    assert reply.text == "ok" and reply.transport_retries == 1
    assert chat_requests(server) == 2  # and nothing after the success


def test_a_hang_past_the_timeout_is_retried_then_reported():
    hang = completion("late", prompt_tokens=1)
    hang.delay_s = 2.0
    with fake_server({"/v1/models": MODELS, "/v1/chat/completions": [hang, GOOD]}) as server:
        assert chat(server.base_url, timeout_s=0.5).text == "ok"
    with fake_server({"/v1/models": MODELS, "/v1/chat/completions": [hang]}) as server:
        with pytest.raises(LLMCallError, match=re.escape(f"at {server.base_url}") + ".*timed out"):
            chat(server.base_url, timeout_s=0.3)
        assert chat_requests(server) == 3  # the first try and two retries


def test_a_request_that_keeps_being_dropped_fails_alone():
    """The server was reached: this call failed, not the run (unlike a refused connection)."""
    with fake_server({"/v1/models": MODELS, "/v1/chat/completions": [Answer(200, None, reset=True)]}) as server:
        with pytest.raises(LLMCallError, match=re.escape(server.base_url) + ".*dropped the connection") as failure:
            chat(server.base_url)
        assert chat_requests(server) == 3 and failure.value.transport_retries == 2


def test_a_refused_connection_is_reported_as_unreachable():
    with pytest.raises(ServerUnavailableError, match=r"cannot reach the LLM server at http://127\.0\.0\.1:9/v1"):
        chat("http://127.0.0.1:9/v1")


@pytest.mark.parametrize(
    ("fault", "cause"),
    [
        (Answer(200, raw=b"<html>Bad Gateway</html>"), "unreadable reply"),
        (Answer(200, raw=json.dumps(completion("x").body).encode()[:60]), "unreadable reply"),
        (
            Answer(200, {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": []}),
            "no choices",
        ),
    ],
    ids=["not-json", "truncated-json", "empty-choices"],
)
def test_unreadable_replies_are_reported_without_retry(fault, cause):
    with fake_server({"/v1/models": MODELS, "/v1/chat/completions": [fault]}) as server:
        with pytest.raises(LLMCallError, match=re.escape(server.base_url) + f".*{cause}"):
            chat(server.base_url)
        assert chat_requests(server) == 1


def test_a_reply_under_another_model_name_is_accepted():
    other = completion("ok")
    other.body["model"] = "some-other-model"  # gateways rename models; the content is what counts
    with fake_server({"/v1/models": MODELS, "/v1/chat/completions": [other]}) as server:
        assert chat(server.base_url).text == "ok"


def structured(replies: list[Answer]):
    """One ``call_structured`` map call against a server that gives ``replies`` in turn."""

    async def go(base_url: str):
        client = OpenAICompatibleClient(base_url, max_retries=1)
        try:
            messages = [ChatMessage(role="user", content="read this")]
            return await call_structured(
                client, messages, MapOutput, stage="map", chunk_indices=[0], max_tokens=64, temperature=0.0, attempts=3
            )
        finally:
            await client.aclose()

    with fake_server({"/v1/models": MODELS, "/v1/chat/completions": replies}) as server:
        output, record = asyncio.run(go(server.base_url))
    return output, record, server


def test_length_and_schema_faults_are_asked_again_with_the_reason():
    cut = completion('{"extracted_information": "a very long')
    cut.body["choices"][0]["finish_reason"] = "length"
    wrong = completion(json.dumps({"answer": 42, "confidence": "high"}))
    output, record, server = structured([cut, wrong, completion(partial_reply("x", 4.0))])
    assert output is not None and output.answer == "x" and record.attempts == 3
    asked = [body["messages"][-1]["content"] for path, body in server.requests if path == "/v1/chat/completions"]
    assert "cut off at the length limit" in asked[1] and "did not match the required fields" in asked[2]


def test_a_pipeline_under_faults_never_repeats_a_call_that_succeeded_nor_exceeds_its_concurrency():
    """Every third chat request fails (500 or a reset), the rest are slow: each map prompt is
    answered once, the server never sees more requests at once than the limit."""
    import threading

    answered: dict[str, int] = {}
    count = {"n": 0}
    lock = threading.Lock()

    def respond(body: dict) -> Answer:
        text = body["messages"][-1]["content"]
        with lock:
            count["n"] += 1
            if count["n"] % 3 == 0:
                return [Answer(500, {"error": {"message": "boom"}}), Answer(200, None, reset=True)][count["n"] % 2]
            answered[text] = answered.get(text, 0) + 1
        if body["response_format"]["json_schema"]["name"] == "MapOutput":
            answer = completion(partial_reply(None, 0.0, info="", rationale=""))
        else:
            answer = completion(final_reply("none"))
        answer.delay_s = 0.02
        return answer

    document = " ".join(f"Sentence {i} of the document." for i in range(1500))
    with fake_server({"/v1/models": [models("vllm", max_model_len=4096)], "/v1/chat/completions": respond}) as server:
        config = PipelineConfig.load(
            **{
                "llm.base_url": server.base_url,
                "llm.concurrency": 3,
                "llm.tokenizer": "tiktoken",
                "chunking.chunk_tokens": 200,
            }
        )
        result = MapReducePipeline(config).run(document, "What is it about?")
    assert len(result.chunks) > 10 and not result.failed_calls
    assert all(times == 1 for times in answered.values())
    assert len(answered) == len(result.chunks)  # every map prompt answered exactly once
    # A connection cut by a reset may still be counted by the server for a moment after the
    # client has opened its replacement: one over the limit, never more.
    assert server.max_in_flight <= 3 and server.max_open_connections <= 3 + 1


def test_a_chunk_that_keeps_failing_is_skipped_or_stops_the_run_from_the_command_line(tmp_path):
    from click.testing import CliRunner

    from llmxmr.cli import main

    def respond(body: dict) -> Answer:
        part = body["messages"][-1]["content"].rsplit("<document_part>", 1)[-1]
        if "POISON" in part:
            return Answer(503, {"error": {"message": "overloaded"}})
        if body["response_format"]["json_schema"]["name"] == "MapOutput":
            found = "12345" in part
            return completion(
                partial_reply(
                    "12345" if found else None, 5.0 if found else 0.0, info="The pass key is 12345." if found else ""
                )
            )
        return completion(final_reply("12345"))

    document = tmp_path / "doc.txt"
    filler = [f"Filler sentence {i}." for i in range(400)]
    document.write_text(
        " ".join([*filler[:300], "The pass key is 12345.", *filler[300:]]) + "\n\n" + "POISON here. " * 20
    )
    with fake_server({"/v1/models": [models("vllm", max_model_len=4096)], "/v1/chat/completions": respond}) as server:
        args = ["run", "--input", str(document), "--question", "What is the pass key?", "--task-type", "retrieval"]
        args += ["--base-url", server.base_url, "--tokenizer", "tiktoken", "--chunk-tokens", "200", "--no-progress"]
        skipped = CliRunner().invoke(main, [*args, "--json"], catch_exceptions=False)
        assert skipped.exit_code == 0, skipped.output
        result = json.loads(skipped.stdout)
        assert result["answer"] == "12345" and result["unread_chunks"] == [len(result["chunks"]) - 1]
        # The answer's confidence (its cited map reply's 5, above the reduce's 4.5), scaled by the share read.
        read = (len(result["chunks"]) - 1) / len(result["chunks"])
        assert (
            result["confidence"] == round(5.0 * read, 3)
            and "HTTP 503: overloaded" in result["failed_calls"][0]["error"]
        )
        stopped = CliRunner().invoke(main, [*args, "--on-chunk-error", "fail"], catch_exceptions=False)
    assert stopped.exit_code == 1
    assert re.search(
        rf"error: map call for chunk\(s\) \[\d+\] failed: .*{re.escape(server.base_url)}.*HTTP 503: overloaded",
        stopped.output,
    )
