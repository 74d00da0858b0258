"""The retry rule llmxmr leaves to the openai SDK (see ``llmxmr.transport``), stated against the
local fake server so that an SDK release that changes it is noticed: which answers are tried again,
and how long the SDK waits before it tries."""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate

import pytest

from llmxmr.clients.base import ChatReply, ChatRequest
from llmxmr.clients.openai_compat import OpenAICompatibleClient
from llmxmr.errors import LLMCallError, LlmxmrError
from llmxmr.prompts import ChatMessage

from ..fake_server import Answer, completion, fake_server, models, sdk_waits

REQUEST = ChatRequest(messages=[ChatMessage(role="user", content="hi")], max_tokens=8)


def chat(base_url: str) -> ChatReply:
    async def go() -> ChatReply:
        client = OpenAICompatibleClient(base_url, max_retries=8)
        try:
            return await client.chat(REQUEST)
        finally:
            await client.aclose()

    return asyncio.run(go())


def waits_before_success(monkeypatch: pytest.MonkeyPatch, failures: list[Answer]) -> list[float]:
    """The waits the SDK chose before each retry of a call answered with ``failures``, then a reply."""
    waits = sdk_waits(monkeypatch)
    with fake_server({"/v1/models": [models("vllm")], "/v1/chat/completions": [*failures, completion("ok")]}) as server:
        assert chat(server.base_url).transport_retries == len(failures)
    return waits


def requests_before_failure(monkeypatch: pytest.MonkeyPatch, failure: Answer) -> tuple[int, LlmxmrError]:
    """The requests sent for a call always answered with ``failure``, and the error it ended with."""
    sdk_waits(monkeypatch)
    with fake_server({"/v1/models": [models("vllm")], "/v1/chat/completions": [failure]}) as server:
        with pytest.raises(LlmxmrError) as error:
            chat(server.base_url)
    return sum(path == "/v1/chat/completions" for path, _ in server.requests), error.value


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 599])
def test_timeouts_conflicts_rate_limits_and_server_errors_are_retried(monkeypatch, status):
    assert len(waits_before_success(monkeypatch, [Answer(status, {})])) == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_other_client_errors_are_not(monkeypatch, status):
    assert requests_before_failure(monkeypatch, Answer(status, {}))[0] == 1


def test_backoff_doubles_from_half_a_second_to_eight_less_up_to_a_quarter_at_random(monkeypatch):
    waits = waits_before_success(monkeypatch, [Answer(503, {})] * 7)
    for retry, wait in enumerate(waits):
        base = min(8.0, 0.5 * 2**retry)
        assert 0.75 * base <= wait <= base


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"Retry-After": " 1.5 "}, 1.5),
        ({"Retry-After": "120"}, 120.0),
        ({"Retry-After-Ms": "250"}, 0.25),
    ],
)
def test_the_servers_retry_after_is_waited_for_up_to_two_minutes(monkeypatch, headers, wait):
    assert waits_before_success(monkeypatch, [Answer(429, {}, headers)]) == [wait]


def test_retry_after_as_an_http_date(monkeypatch):
    (wait,) = waits_before_success(
        monkeypatch, [Answer(503, {}, {"Retry-After": formatdate(time.time() + 30, usegmt=True)})]
    )
    assert 28.0 <= wait <= 30.0


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_an_unusable_retry_after_gets_the_backoff(monkeypatch, value):
    (wait,) = waits_before_success(monkeypatch, [Answer(429, {}, {"Retry-After": value})])
    assert 0.375 <= wait <= 0.5


def test_a_retry_after_beyond_two_minutes_is_not_waited_for(monkeypatch):
    requests, error = requests_before_failure(monkeypatch, Answer(429, {}, {"Retry-After": "86400"}))
    assert requests == 1 and isinstance(error, LLMCallError) and "HTTP 429" in str(error)
