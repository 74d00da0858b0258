"""The simulated server's prefix cache (benchmarks/simserver.py): longest prefix, LRU eviction of
leaves, SGLang's cache report in ``usage``."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SIMSERVER = Path(__file__).resolve().parents[2] / "benchmarks" / "simserver.py"


@pytest.fixture(scope="module")
def sim() -> ModuleType:
    spec = importlib.util.spec_from_file_location("simserver_under_test", SIMSERVER)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _consistent(cache) -> bool:
    """Every cached page's parent is cached too: eviction never orphans a page."""
    alive = {0, *cache.nodes.values()}
    return all(parent in alive for parent, _ in cache.nodes)


def test_longest_prefix_and_last_token(sim):
    cache = sim.PrefixCache(100)
    assert cache.match([1, 2, 3, 4]) == 0
    cache.insert([1, 2, 3, 4])
    assert cache.tokens == 4
    assert cache.match([1, 2, 3, 9, 9]) == 3
    assert cache.match([1, 2, 3, 4, 5]) == 4
    assert cache.match([1, 2, 3, 4]) == 3  # the last token is always computed
    assert cache.match([2, 3]) == 0  # a prefix, not any substring
    cache.insert([1, 2, 7])
    assert cache.tokens == 5  # the shared [1, 2] is stored once
    assert cache.match([1, 2, 7, 8]) == 3


def test_lru_evicts_leaves_of_the_least_recent_path(sim):
    cache = sim.PrefixCache(10)
    cache.insert([0, 1, 2, 3, 4, 5])  # a shared head [0, 1, 2] and two tails
    cache.insert([0, 1, 2, 7, 8, 9])
    assert cache.tokens == 9
    cache.match([0, 1, 2, 3, 4, 5, 6])  # the first tail is now the more recent
    cache.insert([0, 1, 2, 3, 4, 5, 6])  # one token more: 10, at capacity
    assert cache.tokens == 10 and cache.evicted_tokens == 0
    cache.insert([5, 5])  # 12 tokens: the two oldest pages go, the end of the second tail
    assert cache.tokens == 10 and cache.evicted_tokens == 2
    assert _consistent(cache)
    assert cache.match([0, 1, 2, 7, 8, 9, 0]) == 4
    assert cache.match([0, 1, 2, 3, 4, 5, 6, 0]) == 7


def test_eviction_keeps_the_tree_whole_under_pressure(sim):
    import random

    rng = random.Random(0)
    cache = sim.PrefixCache(200, page=4)
    for _ in range(300):
        head = rng.randrange(5)
        prompt = [head] * 8 + [rng.randrange(3) for _ in range(rng.randrange(40))]
        hit = cache.match(prompt)
        assert hit % 4 == 0 and hit < max(len(prompt), 1)
        cache.insert(prompt)
        assert cache.tokens <= 200
        assert _consistent(cache)


def test_pages_round_down(sim):
    cache = sim.PrefixCache(64, page=4)
    cache.insert(list(range(10)))
    assert cache.tokens == 8  # two whole pages; the last two tokens are not cached
    assert cache.match(list(range(20))) == 8
    assert cache.match(list(range(6)) + [99]) == 4


def test_usage_reports_cached_tokens_like_sglang(sim):
    server = sim.SimServer(sim.Latency.parse("fixed:0"), 4, 0, 0.2, 50, 32768, None, prefix_cache_tokens=10_000)
    chunk = "Call me Ishmael. Some years ago, never mind how long precisely. " * 40
    system = {"role": "system", "content": "Read the part."}

    def request(question: str) -> dict:
        user = f"<document_part>\n{chunk}\n</document_part>\nQuestion: {question}"
        return {"messages": [system, {"role": "user", "content": user}]}

    async def ask(question: str) -> dict:
        _, body, _ = await server.complete(request(question))
        return body["usage"]

    first = asyncio.run(ask("Who is the narrator?"))
    second = asyncio.run(ask("Where does the voyage start?"))
    assert first["prompt_tokens_details"]["cached_tokens"] == 0
    cached = second["prompt_tokens_details"]["cached_tokens"]
    # Everything up to the question is shared: only the question's few tokens and the end differ.
    assert second["prompt_tokens"] - 15 < cached < second["prompt_tokens"]
    assert server.stats()["cached_tokens"] == cached


def test_without_cache_usage_is_unchanged(sim):
    server = sim.SimServer(sim.Latency.parse("fixed:0"), 4, 0, 0.2, 50, 32768, None)
    _, body, _ = asyncio.run(server.complete({"messages": [{"role": "user", "content": "x" * 400}]}))
    assert body["usage"]["prompt_tokens"] == 100  # characters / 4
    assert "prompt_tokens_details" not in body["usage"]
    assert "cached_tokens" not in server.stats()


def test_line_by_line_encoding_is_cl100k(sim):
    tokenizer = sim.ChatTokenizer()
    text = (
        "CHAPTER 1. Loomings.\n\nCall me Ishmael.  \n  Some years ago\u2014never mind how long precisely\u2014\r\n"
        'having little or no money in my purse,\n\n\n   and nothing particular\t\n"to interest me on shore,"\n'
        "I thought I would sail about a little.\n123 4567 'tis\n\n<document_part>\nx\n</document_part>\n"
    )
    for piece in (text, text * 3, text.replace("\n", " \n"), "\n" + text, text + " "):
        assert tokenizer.encode(piece) == tokenizer.encoding.encode_ordinary(piece)
        assert tokenizer.encode(piece) == tokenizer.encoding.encode_ordinary(piece)  # from the memo
