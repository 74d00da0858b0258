"""The OpenAI-compatible client against a local fake server: server kinds, retries, errors."""

from __future__ import annotations

import asyncio

import pytest

from llmxmr.clients.base import ChatRequest
from llmxmr.clients.openai_compat import OpenAICompatibleClient
from llmxmr.errors import LLMCallError, ServerRefusedError
from llmxmr.prompts import ChatMessage
from llmxmr.schemas import MapOutput, capped_lengths, json_schema

from ..fake_server import Answer, completion, fake_server, models, sdk_waits

REQUEST = ChatRequest(
    messages=[ChatMessage(role="user", content="hi")],
    max_tokens=32,
    schema_name="MapOutput",
    json_schema=json_schema(MapOutput),
)


def use(base_url: str, coroutine_factory, **kwargs):
    async def go():
        client = OpenAICompatibleClient(base_url, **kwargs)
        try:
            return await coroutine_factory(client)
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_llama_cpp_reports_cached_tokens_in_its_timings():
    answer = completion('{"answer": null}')
    answer.body["timings"] = {"cache_n": 812, "prompt_n": 40}
    scripts = {"/v1/models": [models("llamacpp")], "/v1/chat/completions": [answer]}
    with fake_server(scripts) as server:
        reply = use(server.base_url, lambda client: client.chat(REQUEST))
    assert reply.cached_tokens == 812


def test_sglang_schema_window_usage_and_cached_tokens():
    scripts = {
        "/v1/models": [models("sglang", max_model_len=32768)],
        "/v1/chat/completions": [completion('{"answer": null}', cached=7)],
    }
    with fake_server(scripts) as server:
        reply, window = use(server.base_url, lambda c: asyncio.gather(c.chat(REQUEST), c.context_window()))
    assert window == 32768
    assert reply.text == '{"answer": null}' and reply.cached_tokens == 7 and reply.prompt_tokens == 10
    body = next(body for path, body in server.requests if path == "/v1/chat/completions")
    assert body["model"] == "test-model" and body["max_tokens"] == 32
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == json_schema(MapOutput)


def test_llama_cpp_python_gets_json_object_with_schema():
    scripts = {"/v1/models": [models("me")], "/v1/chat/completions": [completion("{}")]}
    with fake_server(scripts) as server:
        window = use(server.base_url, lambda c: c.context_window())
        use(server.base_url, lambda c: c.chat(REQUEST))
    body = [body for path, body in server.requests if path == "/v1/chat/completions"][-1]
    assert body["response_format"] == {"type": "json_object", "schema": json_schema(MapOutput)}
    assert window is None  # llama-cpp-python does not publish n_ctx


@pytest.mark.parametrize(
    ("owner", "penalty"), [("me", 1.0), ("sglang", None), ("vllm", None), ("llamacpp", None), ("openai", None)]
)
def test_only_llama_cpp_python_is_told_not_to_penalise_repeats(owner, penalty):
    """Its server's default repeat_penalty (1.1) pushes a reply off the tokens it copies from the
    text; the other servers sample from the model's own distribution unless told otherwise, and
    OpenAI rejects fields it does not know."""
    scripts = {"/v1/models": [models(owner)], "/v1/chat/completions": [completion("{}")], "/workers": [Answer(404, {})]}
    with fake_server(scripts) as server:
        use(server.base_url, lambda c: c.chat(REQUEST))
    body = next(body for path, body in server.requests if path == "/v1/chat/completions")
    assert body.get("repeat_penalty") == penalty


def test_llama_server_window_from_props():
    scripts = {
        "/v1/models": [models("llamacpp")],
        "/props": [Answer(body={"default_generation_settings": {"n_ctx": 4096}})],
    }
    with fake_server(scripts) as server:
        assert use(server.base_url, lambda c: c.context_window()) == 4096


def test_retries_5xx_and_429_honouring_retry_after(monkeypatch):
    waits = sdk_waits(monkeypatch)
    scripts = {
        "/v1/models": [models("vllm")],
        "/v1/chat/completions": [
            Answer(503, {"error": {"message": "busy"}}),
            Answer(429, {"error": {"message": "slow down"}}, {"Retry-After": "7"}),
            completion("ok"),
        ],
    }
    with fake_server(scripts) as server:
        reply = use(server.base_url, lambda c: c.chat(REQUEST))
    assert reply.text == "ok" and reply.transport_retries == 2
    assert 0.375 <= waits[0] <= 0.5 and waits[1] == 7.0  # backoff, then the server's Retry-After


def test_the_requests_schema_goes_to_the_server_as_it_is():
    capped = REQUEST.model_copy(update={"json_schema": capped_lengths(json_schema(MapOutput), 200)})
    scripts = {"/v1/models": [models("me")], "/v1/chat/completions": lambda body: completion("{}")}
    with fake_server(scripts) as server:
        use(server.base_url, lambda c: c.chat(capped))
        use(server.base_url, lambda c: c.chat(REQUEST))
    sent = [body["response_format"]["schema"] for path, body in server.requests if path == "/v1/chat/completions"]
    assert sent == [capped.json_schema, REQUEST.json_schema]
    assert (
        sent[0]["properties"]["rationale"]["maxLength"] == 200 and "maxLength" not in sent[1]["properties"]["rationale"]
    )


def test_a_client_kept_across_event_loops_keeps_working():
    """``MapReducePipeline.run`` starts a new event loop per run; a client the caller keeps
    must not be tied to the first one."""
    scripts = {"/v1/models": [models("sglang")], "/v1/chat/completions": lambda body: completion("ok")}
    with fake_server(scripts) as server:
        client = OpenAICompatibleClient(server.base_url)
        assert asyncio.run(client.chat(REQUEST)).text == "ok"
        assert asyncio.run(client.chat(REQUEST)).text == "ok"
        asyncio.run(client.aclose())


@pytest.mark.parametrize("status", [400, 404])
def test_no_retry_on_client_errors(status):
    scripts = {
        "/v1/models": [models("sglang")],
        "/v1/chat/completions": [Answer(status, {"error": {"message": "nope"}})],
    }
    with fake_server(scripts) as server:
        with pytest.raises(
            LLMCallError, match=f"sglang at {server.base_url} \\(test-model\\) answered HTTP {status}: nope"
        ):
            use(server.base_url, lambda c: c.chat(REQUEST))
    assert sum(1 for path, _ in server.requests if path == "/v1/chat/completions") == 1


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_stops_the_run_without_retry(status):
    scripts = {
        "/v1/models": [models("sglang")],
        "/v1/chat/completions": [Answer(status, {"error": {"message": "bad key"}})],
    }
    with fake_server(scripts) as server:
        with pytest.raises(
            ServerRefusedError, match=f"refused the request \\(HTTP {status}: bad key\\); check --api-key"
        ):
            use(server.base_url, lambda c: c.chat(REQUEST))
    assert sum(1 for path, _ in server.requests if path == "/v1/chat/completions") == 1


def test_gives_up_after_max_retries(monkeypatch):
    sdk_waits(monkeypatch)
    scripts = {"/v1/models": [models("sglang")], "/v1/chat/completions": [Answer(500, {"error": {"message": "boom"}})]}
    with fake_server(scripts) as server:
        with pytest.raises(LLMCallError, match="HTTP 500: boom") as failure:
            use(server.base_url, lambda c: c.chat(REQUEST), max_retries=2)
    assert sum(1 for path, _ in server.requests if path == "/v1/chat/completions") == 3
    assert failure.value.transport_retries == 2


def test_named_model_is_used_and_api_key_sent():
    scripts = {"/v1/models": [models("sglang")], "/v1/chat/completions": [completion("x")]}
    with fake_server(scripts) as server:
        use(server.base_url, lambda c: c.chat(REQUEST), model="other", api_key="k")
    body = next(body for path, body in server.requests if path == "/v1/chat/completions")
    assert body["model"] == "other"
    assert set(server.authorizations) == {"Bearer k"}


def test_llama_cpp_python_window_from_serve_local_props_else_unknown():
    served = {"/v1/models": [models("me")], "/props": [Answer(body={"default_generation_settings": {"n_ctx": 8192}})]}
    with fake_server(served) as server:
        assert use(server.base_url, lambda c: c.context_window()) == 8192
    with fake_server({"/v1/models": [models("me")]}) as server:  # a plain llama-cpp-python server
        assert use(server.base_url, lambda c: c.context_window()) is None
