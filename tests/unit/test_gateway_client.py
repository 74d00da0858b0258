"""The client behind the smg gateway, against a local fake that answers as smg 1.13 does: the
context window and the worker count from /workers, SGLang's priority field only where it applies,
and the default concurrency derived from the workers."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import pytest

from llmxmr.budget import concurrency_of
from llmxmr.clients.base import SERVER_PRIORITY, ChatRequest
from llmxmr.clients.cache import _KEY_VERSION, request_key
from llmxmr.clients.fake import ScriptedClient
from llmxmr.clients.openai_compat import OpenAICompatibleClient, listed_workers
from llmxmr.config import PipelineConfig
from llmxmr.prompts import ChatMessage
from llmxmr.schemas import MapOutput
from llmxmr.structured import call_structured

from ..conftest import partial_reply
from ..fake_server import Answer, completion, fake_server, models

REQUEST = ChatRequest(messages=[ChatMessage(role="user", content="hi")], max_tokens=32, priority=2)


def worker(
    url: str, context_length: int | None, *, healthy: bool = True, runtime: str = "sglang", model: str = "test-model"
) -> dict[str, Any]:
    """One entry of smg 1.13's GET /workers, as it lists a worker (fields llmxmr does not read trimmed)."""
    return {
        "id": url,
        "model_id": model,
        "url": url,
        "models": [{"id": model, "model_type": ["chat"], "context_length": context_length}],
        "worker_type": "regular",
        "connection_mode": "http",
        "runtime_type": runtime,
        "is_healthy": healthy,
        "status": "ready" if healthy else "unhealthy",
        "load": 0,
    }


def gateway_scripts(*workers: dict[str, Any]) -> dict[str, Any]:
    """smg's own /v1/models has no max_model_len; /workers has each worker's context length."""
    return {
        "/v1/models": [models("self_hosted")],
        "/workers": [Answer(body={"workers": list(workers), "total": len(workers)})],
        "/v1/chat/completions": [completion("ok")],
    }


def use(base_url: str, call):
    async def go():
        client = OpenAICompatibleClient(base_url)
        try:
            return await call(client)
        finally:
            await client.aclose()

    return asyncio.run(go())


def chat_bodies(server) -> list[dict[str, Any]]:
    return [body for path, body in server.requests if path == "/v1/chat/completions"]


def test_the_window_behind_a_gateway_is_the_smallest_worker_context():
    scripts = gateway_scripts(
        worker("http://a:1", 8192), worker("http://b:1", 4096, healthy=False), worker("http://c:1", 16384)
    )

    async def probe(client: OpenAICompatibleClient) -> tuple[int | None, int, str]:
        return await client.context_window(), await client.worker_count(), client.describe()

    with fake_server(scripts) as server:
        window, workers, name = use(server.base_url, probe)
    assert window == 4096  # a worker back from the dead may get any request
    assert workers == 2  # only healthy workers take calls now
    assert name.startswith("smg gateway at ")


def test_workers_of_other_models_do_not_count():
    scripts = gateway_scripts(worker("http://a:1", 8192), worker("http://b:1", 2048, model="other-model"))
    with fake_server(scripts) as server:
        assert use(server.base_url, lambda c: asyncio.gather(c.context_window(), c.worker_count())) == [8192, 1]


def test_a_gateway_with_no_worker_yet_is_still_named_a_gateway():
    async def probe(client: OpenAICompatibleClient) -> tuple[int | None, int, str]:
        return await client.context_window(), await client.worker_count(), client.describe()

    with fake_server(gateway_scripts()) as server:
        window, workers, name = use(server.base_url, probe)
    assert (window, workers) == (None, 1) and name.startswith("smg gateway at ")


def test_a_server_without_workers_is_one_server_of_unknown_window():
    with fake_server({"/v1/models": [models("self_hosted")], "/v1/chat/completions": [completion("ok")]}) as server:
        window, workers = use(server.base_url, lambda c: asyncio.gather(c.context_window(), c.worker_count()))
        use(server.base_url, lambda c: c.chat(REQUEST))
    assert (window, workers) == (None, 1)
    assert "priority" not in chat_bodies(server)[0]  # OpenAI itself rejects unknown fields


def test_a_listed_window_is_not_looked_up_again():
    with fake_server({"/v1/models": [models("sglang", max_model_len=32768)]}) as server:
        assert use(server.base_url, lambda c: asyncio.gather(c.context_window(), c.worker_count())) == [32768, 1]
    assert [path for path, _ in server.requests] == ["/v1/models"]  # a known server kind: no /workers probe


@pytest.mark.parametrize(
    ("scripts", "sent"),
    [
        ({"/v1/models": [models("sglang")], "/v1/chat/completions": [completion("ok")]}, True),
        (gateway_scripts(worker("http://a:1", 8192), worker("http://b:1", 8192)), True),
        ({"/v1/models": [models("vllm")], "/v1/chat/completions": [completion("ok")]}, False),
        ({"/v1/models": [models("me")], "/v1/chat/completions": [completion("ok")]}, False),
        ({"/v1/models": [models("llamacpp")], "/v1/chat/completions": [completion("ok")]}, False),
        (gateway_scripts(worker("http://a:1", 8192), worker("http://b:1", 8192, runtime="vllm")), False),
    ],
    ids=["sglang", "gateway-to-sglang", "vllm", "llama-cpp-python", "llama-server", "gateway-to-vllm"],
)
def test_priority_goes_on_the_wire_only_to_sglang(scripts, sent):
    with fake_server(scripts) as server:
        use(server.base_url, lambda c: c.chat(REQUEST))
    (body,) = chat_bodies(server)
    assert body.get("priority") == (2 if sent else None)
    assert ("priority" in body) is sent


def test_no_priority_field_when_the_request_has_none():
    with fake_server({"/v1/models": [models("sglang")], "/v1/chat/completions": [completion("ok")]}) as server:
        use(server.base_url, lambda c: c.chat(REQUEST.model_copy(update={"priority": None})))
    assert "priority" not in chat_bodies(server)[0]


def test_later_stages_ask_for_a_higher_priority():
    """SGLang runs larger values first: reduce above collapse above map, under its preemption
    threshold of 10 so that no running map is evicted."""

    async def priority_of(stage: str) -> int | None:
        client = ScriptedClient(responder=lambda request: partial_reply(None, 0))
        await call_structured(
            client,
            REQUEST.messages,
            MapOutput,
            stage=stage,
            chunk_indices=[0],
            max_tokens=32,
            temperature=0.0,
            attempts=1,
        )
        return client.requests[0].priority

    priorities = {stage: asyncio.run(priority_of(stage)) for stage in ("map", "collapse", "reduce")}
    assert priorities["map"] < priorities["collapse"] < priorities["reduce"]
    assert max(SERVER_PRIORITY.values()) - min(SERVER_PRIORITY.values()) <= 10


def test_the_priority_does_not_change_the_cache_key():
    low, high = REQUEST.model_copy(update={"priority": 0}), REQUEST.model_copy(update={"priority": 2})
    assert request_key("m", low) == request_key("m", high)
    # The key is the one written before the field existed, so existing cache files still hit.
    before = {"v": _KEY_VERSION, "model": "m", **REQUEST.model_dump(mode="json")}
    del before["priority"]
    assert request_key("m", REQUEST) == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()


def test_listed_workers_rejects_what_smg_does_not_send():
    assert listed_workers({"detail": "Not Found"}) is None
    assert listed_workers({"workers": [{"no_url": 1}]}) is None
    assert listed_workers([1, 2]) is None
    (only,) = listed_workers({"workers": [worker("http://a:1", None)]})
    assert only.models == {"test-model": None} and only.healthy and only.runtime == "sglang"


class _Cluster(ScriptedClient):
    async def worker_count(self) -> int:
        return 3


def _config(tmp_path, yaml_text: str, **overrides: Any) -> PipelineConfig:
    path = tmp_path / "settings.yaml"
    path.write_text(yaml_text)
    return PipelineConfig.load(path, **overrides)


def test_concurrency_defaults_to_a_share_per_worker(tmp_path):
    config = _config(tmp_path, "llm:\n  concurrency: null\n  concurrency_per_worker: 16\n")
    assert asyncio.run(concurrency_of(config, _Cluster())) == 48
    assert asyncio.run(concurrency_of(config, ScriptedClient())) == 16  # one server


def test_a_concurrency_the_user_sets_wins(tmp_path):
    config = _config(tmp_path, "llm:\n  concurrency: null\n", **{"llm.concurrency": 5})
    assert asyncio.run(concurrency_of(config, _Cluster())) == 5
