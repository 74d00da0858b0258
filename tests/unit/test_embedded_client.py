"""The embedded llama.cpp client, against a fake llama_cpp module: it holds output to the request's
schema, caps included, and adds no constraint of its own; streamed under a watch, it closes the
generation where the watch stops it, and counts its tokens as the reply unstreamed counts them."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from llmxmr.clients.base import ChatReply, ChatRequest, ReplyWatch
from llmxmr.clients.embedded import EmbeddedLlamaClient
from llmxmr.prompts import ChatMessage
from llmxmr.schemas import FinalAnswer, MapOutput
from llmxmr.structured import call_structured

from ..conftest import partial_reply

PROMPT_TOKENS = 12  # of every prompt; llama.cpp computes COMPUTED_TOKENS of them (the rest is reused)
COMPUTED_TOKENS = 10
END = -1  # the end-of-generation token


class _FakeLlama:
    """What the client uses of ``llama_cpp.Llama``, as llama-cpp-python does it: a completion hands
    its prompt to ``generate``, which samples ``reply`` a character a token and feeds each token
    back into the context (``n_tokens``) only when asked for the next; the completion ends at the
    end-of-generation token, which is no part of it. Streamed, each token is a chunk. Records the
    completions asked for and the tokens sampled."""

    reply = partial_reply("42", info="The answer is 42.")
    token_delay_s = 0.0

    def __init__(self, **settings: Any) -> None:
        self.ctx = object()
        self.completions: list[dict[str, Any]] = []
        self.n_tokens = 0
        self.sampled = 0
        self.generation_closed = False

    def generate(self, tokens: list[int], **settings: Any) -> Iterator[Any]:
        self.n_tokens, self.sampled, self.generation_closed = len(tokens), 0, False
        try:
            for token in [*self.reply, END]:
                time.sleep(self.token_delay_s)
                self.sampled += 1
                yield token
                self.n_tokens += 1
        finally:
            self.generation_closed = True

    def create_chat_completion(self, stream: bool = False, **kwargs: Any) -> Any:
        self.completions.append(kwargs)
        tokens = self._completion()
        if stream:
            return self._chunks(tokens)
        text = "".join(tokens)
        message = {"role": "assistant", "content": text}
        return {
            "choices": [{"message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": len(text)},
        }

    def _completion(self) -> Iterator[str]:
        for token in self.generate([0] * PROMPT_TOKENS):
            if token == END:
                return
            yield token

    def _chunks(self, tokens: Iterator[str]) -> Iterator[dict[str, Any]]:
        yield {"choices": [{"delta": {"role": "assistant"}, "finish_reason": None}]}
        for token in tokens:
            yield {"choices": [{"delta": {"content": token}, "finish_reason": None}]}
        yield {"choices": [{"delta": {}, "finish_reason": "stop"}]}

    def close(self) -> None:
        pass


@pytest.fixture
def embedded(monkeypatch, tmp_path) -> EmbeddedLlamaClient:
    llama_cpp = ModuleType("llama_cpp")
    llama_cpp.Llama = _FakeLlama
    llama_cpp.llama_perf_context_reset = lambda ctx: None
    llama_cpp.llama_perf_context = lambda ctx: SimpleNamespace(n_p_eval=COMPUTED_TOKENS)
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


def _chat(client: EmbeddedLlamaClient, watch: ReplyWatch | None = None) -> ChatReply:
    request = ChatRequest(messages=[ChatMessage(role="user", content="read this")], max_tokens=512)
    return asyncio.run(client.chat(request, watch))


def test_a_streamed_reply_that_does_not_loop_is_the_reply_unstreamed(embedded):
    seen: list[str] = []
    whole = _chat(embedded)
    streamed = _chat(embedded, lambda text: seen.append(text) is not None)
    assert streamed == whole and whole.text == _FakeLlama.reply
    assert whole.prompt_tokens == PROMPT_TOKENS and whole.cached_tokens == PROMPT_TOKENS - COMPUTED_TOKENS
    assert seen[-1] == whole.text and len(seen) == len(whole.text)  # the watch saw every token


def test_a_loop_stops_the_embedded_model_where_it_starts(embedded, monkeypatch):
    """The generation is closed, the slot of the one model free again; the tokens it decoded are
    counted, and the stop recorded."""
    rationale = "The pass key is 58213. " * 40
    reply = json.dumps({"answer": "58213", "confidence": 4.5, "supporting_chunks": [0], "rationale": rationale})
    monkeypatch.setattr(_FakeLlama, "reply", reply)
    output, record = asyncio.run(
        call_structured(
            embedded,
            [ChatMessage(role="user", content="What is the pass key?")],
            FinalAnswer,
            stage="reduce",
            chunk_indices=[0],
            max_tokens=512,
            temperature=0.0,
            attempts=1,
        )
    )
    llama = embedded._llama
    assert llama.generation_closed and llama.sampled < len(reply) // 4
    assert output is not None and output.rationale == "The pass key is 58213."
    assert record.loop_stops == ["rationale"] and record.loop_stop_tokens == [llama.sampled]
    assert (record.prompt_tokens, record.completion_tokens) == (PROMPT_TOKENS, llama.sampled)
    assert record.cached_tokens == PROMPT_TOKENS - COMPUTED_TOKENS and record.prompt_tokens_estimated == 0


def test_a_streamed_call_cancelled_stops_the_generation(embedded, monkeypatch):
    """Ctrl-C, or a run that stops, frees the one model at the next token, not at the reply's end."""
    monkeypatch.setattr(_FakeLlama, "token_delay_s", 0.01)

    async def cancelled() -> None:
        call = asyncio.ensure_future(embedded.chat(ChatRequest(messages=[], max_tokens=512), lambda text: False))
        await asyncio.sleep(0.1)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    asyncio.run(cancelled())  # asyncio.run waits for the worker thread as it closes its executor
    llama = embedded._llama
    assert llama.generation_closed and llama.sampled < len(_FakeLlama.reply) // 2
