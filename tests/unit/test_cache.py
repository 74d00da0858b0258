"""The reply cache: hits make no call, misses are stored at once, keys separate what differs."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from llmxmr.clients import make_client
from llmxmr.clients.base import ChatReply, ChatRequest
from llmxmr.clients.cache import CachedClient, model_identity
from llmxmr.clients.fake import ScriptedClient
from llmxmr.config import PipelineConfig
from llmxmr.errors import ConfigError
from llmxmr.pipeline import MapReducePipeline
from llmxmr.prompts import ChatMessage
from tests.conftest import WordCounter, final_reply, partial_reply


def request(text: str = "hello", temperature: float = 0.0) -> ChatRequest:
    return ChatRequest(messages=[ChatMessage(role="user", content=text)], max_tokens=16, temperature=temperature)


def ask(client, *requests):
    async def go():
        return [await client.chat(r) for r in requests]

    return asyncio.run(go())


def counting_client(model: str = "m") -> ScriptedClient:
    return ScriptedClient(
        responder=lambda r: ChatReply(text=f"reply {len(r.messages[0].content)}", prompt_tokens=7, completion_tokens=3),
        model=model,
    )


def test_a_repeated_request_is_answered_from_disk(tmp_path):
    inner = counting_client()
    client = CachedClient(inner, tmp_path / "cache.sqlite")
    first, second, other = ask(client, request(), request(), request("hello there"))
    assert len(inner.requests) == 2
    assert (first.text, first.from_cache, first.prompt_tokens) == ("reply 5", False, 7)
    assert (second.text, second.from_cache, second.prompt_tokens, second.completion_tokens) == ("reply 5", True, 0, 0)
    assert other.from_cache is False


def test_entries_survive_a_new_process_and_stay_per_model(tmp_path):
    path = tmp_path / "cache.sqlite"
    ask(CachedClient(counting_client("model-a"), path), request())
    again = counting_client("model-a")
    (reply,) = ask(CachedClient(again, path), request())
    assert reply.from_cache and again.requests == []
    other_model = counting_client("model-b")
    (reply,) = ask(CachedClient(other_model, path), request())
    assert not reply.from_cache and len(other_model.requests) == 1


def gguf(folder, content: bytes):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "Tiny-Model.Q4_1.gguf"
    path.write_bytes(content)
    return str(path)


def test_a_gguf_is_the_same_model_wherever_it_lies(tmp_path):
    """A venv at another path, or another machine, finds the replies of the same file; another
    quantisation or fine-tune (other bytes, at either end) does not."""
    weights = b"GGUF" + bytes(range(256)) * 20_000  # past two MiB: head and tail are both read
    here, there = gguf(tmp_path / "venv-a", weights), gguf(tmp_path / "venv-b", weights)
    assert model_identity(here) == model_identity(there) and here not in model_identity(here)
    assert model_identity(gguf(tmp_path / "tail", weights[:-1] + b"x")) != model_identity(here)
    assert model_identity(gguf(tmp_path / "head", b"GGUF!" + weights[5:])) != model_identity(here)
    path = tmp_path / "cache.sqlite"
    ask(CachedClient(counting_client(here), path), request())
    moved = counting_client(there)
    (reply,) = ask(CachedClient(moved, path), request())
    assert reply.from_cache and moved.requests == []


def test_names_that_are_no_local_gguf_are_kept_as_given():
    assert model_identity("/models/elsewhere/Tiny.Q8_0.gguf") == "gguf:Tiny.Q8_0.gguf"
    assert model_identity("openbmb/MiniCPM3-4B") == "openbmb/MiniCPM3-4B"


def test_sampled_requests_bypass_the_cache_unless_asked(tmp_path):
    inner = counting_client()
    ask(CachedClient(inner, tmp_path / "c.sqlite"), request(temperature=0.7), request(temperature=0.7))
    assert len(inner.requests) == 2
    inner = counting_client()
    ask(CachedClient(inner, tmp_path / "d.sqlite", sampled=True), request(temperature=0.7), request(temperature=0.7))
    assert len(inner.requests) == 1


def test_a_failed_call_is_not_cached(tmp_path):
    inner = ScriptedClient([RuntimeError("boom")], responder=lambda r: "fine")
    client = CachedClient(inner, tmp_path / "c.sqlite")
    with pytest.raises(RuntimeError):
        ask(client, request())
    (reply,) = ask(client, request())
    assert reply.text == "fine" and not reply.from_cache


def test_a_rerun_with_the_cache_makes_no_calls(tmp_path):
    def reader(r: ChatRequest) -> str:
        if r.schema_name == "MapOutput":
            found = "71432" in r.messages[-1].content.rsplit("<document_part>", 1)[1]
            return partial_reply(
                "71432" if found else None, 5.0 if found else 0.0, info="The pass key is 71432." if found else ""
            )
        return final_reply("71432")

    filler = [f"Filler sentence number {i}." for i in range(600)]  # every chunk differs
    document = " ".join(filler[:300] + ["The pass key is 71432."] + filler[300:])
    config = PipelineConfig.load(
        task_type="retrieval", **{"chunking.chunk_tokens": 300, "llm.cache": str(tmp_path / "c.sqlite")}
    )
    results = []
    for _ in range(2):
        inner = ScriptedClient(responder=reader, counter=WordCounter())
        client = CachedClient(inner, config.llm.cache)
        results.append((MapReducePipeline(config, client=client).run(document, "What is the pass key?"), inner))
        asyncio.run(client.aclose())
    (first, first_inner), (second, second_inner) = results
    assert len(first_inner.requests) == first.trace.totals.calls > 3
    assert second_inner.requests == [] and second.answer == first.answer == "71432"
    assert second.trace.totals.cache_hits == second.trace.totals.calls
    assert second.trace.totals.prompt_tokens == 0


def test_make_client_wraps_when_configured(tmp_path):
    config = PipelineConfig.load(**{"llm.base_url": "http://127.0.0.1:9/v1", "llm.cache": str(tmp_path / "c.sqlite")})
    assert isinstance(make_client(config), CachedClient)
    assert not isinstance(make_client(PipelineConfig.load(**{"llm.base_url": "http://127.0.0.1:9/v1"})), CachedClient)


def test_an_unusable_cache_path_is_a_config_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="cannot open the reply cache"):
        CachedClient(counting_client(), tmp_path / "file" / "cache.sqlite")
    (tmp_path / "junk.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(ConfigError, match="junk.sqlite"):
        CachedClient(counting_client(), tmp_path / "junk.sqlite")


def test_everything_that_shapes_the_reply_is_in_the_key():
    from llmxmr.clients.cache import request_key
    from llmxmr.schemas import MapOutput, json_schema

    base = request()
    variants = [
        base.model_copy(update={"max_tokens": 17}),
        base.model_copy(update={"temperature": 0.5}),
        base.model_copy(update={"schema_name": "MapOutput", "json_schema": json_schema(MapOutput)}),
        base.model_copy(update={"messages": [ChatMessage(role="system", content="hello")]}),
    ]
    keys = {request_key("m", r) for r in [base, *variants]} | {request_key("n", base)}
    assert len(keys) == len(variants) + 2


def test_a_server_that_swaps_its_model_misses_the_cache(tmp_path):
    from llmxmr.clients.openai_compat import OpenAICompatibleClient
    from tests.fake_server import completion, fake_server, models

    async def ask_once(base_url):
        client = CachedClient(OpenAICompatibleClient(base_url), tmp_path / "c.sqlite")
        try:
            return (await client.chat(request())).from_cache
        finally:
            await client.aclose()

    swapped = models("vllm")
    swapped.body["data"][0]["id"] = "another-model"
    scripts = {"/v1/models": [models("vllm")], "/v1/chat/completions": [completion("fresh")]}
    with fake_server(scripts) as server:
        seen = [asyncio.run(ask_once(server.base_url)) for _ in range(2)]
        scripts["/v1/models"] = [swapped]  # the same URL now serves another model
        seen.append(asyncio.run(ask_once(server.base_url)))
    assert seen == [False, True, False]


def test_an_unusable_cache_file_costs_calls_not_the_run(tmp_path, capsys):
    inner = counting_client()
    client = CachedClient(inner, tmp_path / "c.sqlite")

    class Broken:
        def execute(self, *args):
            raise sqlite3.OperationalError("database is locked")

        def close(self):
            pass

    client._db = Broken()
    replies = ask(client, request(), request())
    assert [r.text for r in replies] == ["reply 5", "reply 5"] and len(inner.requests) == 2
    assert capsys.readouterr().err.count("the reply cache is not usable (database is locked)") == 1
