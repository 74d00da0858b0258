"""The embedded llama.cpp client, against a fake llama_cpp module: it holds output to the request's
schema, caps included, and adds no constraint of its own."""

from __future__ import annotations

import asyncio
import sys
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from llmxmr.clients.embedded import EmbeddedLlamaClient
from llmxmr.prompts import ChatMessage
from llmxmr.schemas import MapOutput
from llmxmr.structured import call_structured

from ..conftest import partial_reply


class _FakeLlama:
    """What the client uses of ``llama_cpp.Llama``; records the completions asked for."""

    def __init__(self, **settings: Any) -> None:
        self.ctx = object()
        self.completions: list[dict[str, Any]] = []

    def create_chat_completion(self, **kwargs: Any) -> dict[str, Any]:
        self.completions.append(kwargs)
        message = {"role": "assistant", "content": partial_reply("42", info="The answer is 42.")}
        return {
            "choices": [{"message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5},
        }

    def close(self) -> None:
        pass


@pytest.fixture
def embedded(monkeypatch, tmp_path) -> EmbeddedLlamaClient:
    llama_cpp = ModuleType("llama_cpp")
    llama_cpp.Llama = _FakeLlama
    llama_cpp.llama_perf_context_reset = lambda ctx: None
    llama_cpp.llama_perf_context = lambda ctx: SimpleNamespace(n_p_eval=10)
    monkeypatch.setitem(sys.modules, "llama_cpp", llama_cpp)
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    return EmbeddedLlamaClient(model, extra_buffers="on")


def _string_caps_sent(client: EmbeddedLlamaClient, max_string_chars: int | None) -> set[int | None]:
    """The maxLength of each string field in the schema llama.cpp was given for one map call."""
    messages = [ChatMessage(role="user", content="read this")]
    asyncio.run(
        call_structured(
            client,
            messages,
            MapOutput,
            stage="map",
            chunk_indices=[0],
            max_tokens=256,
            temperature=0.0,
            attempts=1,
            max_string_chars=max_string_chars,
        )
    )
    (completion,) = client._llama.completions
    client._llama.completions.clear()
    properties = completion["response_format"]["schema"]["properties"]
    return {spec.get("maxLength") for spec in properties.values() if spec.get("type") == "string"}


def test_the_embedded_model_is_held_to_the_caps_the_request_carries_and_no_other(embedded):
    """The string cap lives in the request's schema (``call_structured``), the same for servers
    and the embedded model."""
    assert _string_caps_sent(embedded, 120) == {120}
    assert _string_caps_sent(embedded, None) == {None}
