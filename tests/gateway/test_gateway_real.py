"""Runs through the real smg gateway in front of fake SGLang workers: answers, fair shares of the
map calls, a worker killed mid-run, an unreachable gateway, and clean stops."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from llmxmr import MapReducePipeline, PipelineConfig
from llmxmr.clients.openai_compat import OpenAICompatibleClient

from ..conftest import final_reply, partial_reply
from ..fake_server import Answer, FakeServer, completion
from ..unit.test_cli import assert_one_line_error, invoke
from .conftest import (
    STOP_TIMEOUT_S,
    WORKER_CONTEXT,
    Gateway,
    alive,
    running_gateway,
    sglang_workers,
)

pytestmark = pytest.mark.gateway

NEEDLE = "The magic number is 4242."
# Numbered, so that no two chunks are alike: identical chunks would be read once (llmxmr.reuse),
# and these tests count the calls each worker serves.
FILLER = "Line {n}: the grass is green and the sky is blue today. "
QUESTION = "What is the magic number?"
CHUNK_TOKENS = 120


def document(sentences: int = 800, first_line: int = 0) -> str:
    """About 60 chunks of filler with the needle in the middle."""
    parts = [FILLER.format(n=n) for n in range(first_line, first_line + sentences)]
    parts.insert(sentences // 2, NEEDLE + " ")
    return "".join(parts)


def schema_of(body: dict[str, Any]) -> str:
    return body["response_format"]["json_schema"]["name"]


def reply(body: dict[str, Any], delay_s: float = 0.02) -> Answer:
    """A worker's answer: the needle from the chunk that holds it, nothing from the others."""
    text = " ".join(message["content"] for message in body["messages"])
    if schema_of(body) == "FinalAnswer":
        content = final_reply("4242")
    elif NEEDLE in text:
        content = partial_reply("4242", 5, info=NEEDLE)
    else:
        content = partial_reply(None, 0, info="")
    answer = completion(content, cached=7)
    answer.delay_s = delay_s
    return answer


@pytest.fixture(scope="module")
def three_workers_gateway(tmp_path_factory) -> Iterator[tuple[Gateway, list[FakeServer]]]:
    """One gateway (the default policy) over three workers, for the tests that neither stop nor
    kill it: each start and stop costs seconds (smg drains for 5 s)."""
    log = tmp_path_factory.mktemp("shared-gateway") / "gateway.log"
    with sglang_workers(3, reply) as workers, running_gateway(workers, log) as gateway:
        yield gateway, workers


@pytest.fixture
def shared_gateway(three_workers_gateway) -> tuple[Gateway, list[FakeServer]]:
    """The module's gateway, its workers' records of earlier tests cleared."""
    gateway, workers = three_workers_gateway
    for worker in workers:
        worker.requests.clear()
        worker.max_in_flight = 0
    return gateway, workers


def maps_served(worker: FakeServer) -> int:
    return sum(
        1 for path, body in list(worker.requests) if path == "/v1/chat/completions" and schema_of(body) == "MapOutput"
    )


def run_through(base_url: str):
    # No context window is given: the client finds it through the gateway's /workers.
    config = PipelineConfig.load(
        **{"llm.base_url": base_url, "chunking.chunk_tokens": CHUNK_TOKENS, "llm.tokenizer": "tiktoken"}
    )
    return MapReducePipeline(config).run(document(), QUESTION)


def assert_every_chunk_read(result) -> None:
    assert result.unread_chunks == [] and result.failed_calls == []
    mapped = sorted(i for call in result.trace.calls if call.stage == "map" and call.output for i in call.chunk_indices)
    assert mapped == list(range(len(result.chunks)))


def run_on_three_workers(tmp_path, *options: str) -> tuple[Any, list[FakeServer], float]:
    with sglang_workers(3, reply) as workers, running_gateway(workers, tmp_path / "gateway.log", *options) as gateway:
        return timed_run(gateway, workers)


def timed_run(gateway: Gateway, workers: list[FakeServer]) -> tuple[Any, list[FakeServer], float]:
    started = time.perf_counter()
    result = run_through(gateway.base_url)
    elapsed = time.perf_counter() - started
    assert result.found and result.answer == "4242", result.rationale
    assert_every_chunk_read(result)
    assert result.model.startswith("smg gateway at ")
    return result, workers, elapsed


def map_shares(result, workers: list[FakeServer], label: str, elapsed: float) -> list[float]:
    served = [maps_served(worker) for worker in workers]
    assert sum(served) == len(result.chunks)  # no call was answered twice
    print(f"\n{label}: {len(result.chunks)} chunks, map calls per worker {served}, {elapsed:.2f} s")
    return [count / sum(served) for count in served]


@pytest.mark.xdist_group("shared-gateway")
def test_a_run_through_the_gateway_answers_and_every_worker_gets_a_fair_share(shared_gateway):
    result, workers, elapsed = timed_run(*shared_gateway)
    assert_fair_shares(result, workers, "power_of_two", elapsed)


def test_round_robin_answers_and_gives_every_worker_a_fair_share(tmp_path):
    result, workers, elapsed = run_on_three_workers(tmp_path, "--policy", "round_robin")
    assert_fair_shares(result, workers, "round_robin", elapsed)


def assert_fair_shares(result, workers: list[FakeServer], label: str, elapsed: float) -> None:
    shares = map_shares(result, workers, label, elapsed)
    # A fair share: no worker below half of an even split (1/3), none above twice that.
    assert min(shares) >= 0.5 / 3 and max(shares) <= 2 / 3, shares
    # What the gateway passed on: SGLang's priority (maps 0, reduce 2) and the cached-token counts.
    chats = [body for worker in workers for path, body in worker.requests if path == "/v1/chat/completions"]
    assert {schema_of(body): body["priority"] for body in chats} == {"MapOutput": 0, "FinalAnswer": 2}
    assert {call.cached_tokens for call in result.trace.calls} == {7}


def test_cache_aware_answers_through_the_gateway(tmp_path):
    """The other policy `llmxmr gateway --policy` offers answers, reads every chunk once and
    answers no call twice. How evenly it spreads the calls depends on load and timing (here it
    left a worker nearly idle on a quiet machine and spread them evenly under a full test run), so
    that is measured by benchmarks/scaling.py, not asserted."""
    result, workers, elapsed = run_on_three_workers(tmp_path, "--policy", "cache_aware")
    map_shares(result, workers, "cache_aware", elapsed)


def test_the_window_and_the_workers_are_found_through_the_gateway(tmp_path):
    async def probe(base_url: str) -> tuple[int | None, int]:
        client = OpenAICompatibleClient(base_url)
        try:
            return await client.context_window(), await client.worker_count()
        finally:
            await client.aclose()

    with (
        sglang_workers(1, reply) as small,
        sglang_workers(2, reply, context_length=2 * WORKER_CONTEXT) as large,
        running_gateway([*small, *large], tmp_path / "gateway.log") as gateway,
    ):
        assert asyncio.run(probe(gateway.base_url)) == (WORKER_CONTEXT, 3)  # the smallest window


def test_a_worker_killed_mid_run_loses_no_chunk(tmp_path, record_property):
    victim: list[FakeServer] = []
    answered = itertools.count(1)
    killed = threading.Event()

    def kill() -> None:
        victim[0].kill()
        killed.set()

    def dying_reply(body: dict[str, Any]) -> Answer:
        # The victim dies at its fifth call, with that call and others in flight (0.3 s each).
        if next(answered) == 5:
            threading.Thread(target=kill).start()
        return reply(body, delay_s=0.3)

    with sglang_workers(2, reply) as survivors, sglang_workers(1, dying_reply) as doomed:
        victim.extend(doomed)
        with running_gateway([*survivors, *doomed], tmp_path / "gateway.log") as gateway:
            result = run_through(gateway.base_url)
    assert result.found and result.answer == "4242"
    assert_every_chunk_read(result)
    served = [maps_served(worker) for worker in (*survivors, *doomed)]
    retries = sum(call.transport_retries for call in result.trace.calls)
    record_property("maps_per_worker_victim_last", served)
    record_property("client_retries", retries)
    print(f"\nkilled worker: map calls per worker {served} (victim last), client retries {retries}")
    assert killed.is_set() and served[-1] >= 5  # it took part, then died mid-run
    assert sum(served) > len(result.chunks)  # the calls it died with were sent again, and answered


def test_an_unreachable_gateway_is_one_line_naming_it(tmp_path):
    with sglang_workers(1, reply) as workers, running_gateway(workers, tmp_path / "gateway.log") as gateway:
        base_url = gateway.base_url
    (tmp_path / "doc.txt").write_text(document(50))
    result = invoke(
        "run", "--input", str(tmp_path / "doc.txt"), "--question", QUESTION, "--base-url", base_url, "--no-progress"
    )
    assert_one_line_error(result, 1, f"cannot reach the LLM server at {base_url}")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_the_gateway_stops_with_llmxmr_and_leaves_no_smg(signum, tmp_path):
    with sglang_workers(1, reply) as workers, running_gateway(workers, tmp_path / "gateway.log") as gateway:
        smg = gateway.smg_pid()
        assert alive(smg)
        gateway.process.send_signal(signum)
        assert gateway.process.wait(STOP_TIMEOUT_S) == 0
    assert not alive(smg)
    assert "gateway stopped" in gateway.log.read_text()


def test_smg_exits_when_llmxmr_is_killed(tmp_path):
    """SIGKILL cannot be caught: the kernel tells smg instead (PR_SET_PDEATHSIG on Linux)."""
    with sglang_workers(1, reply) as workers, running_gateway(workers, tmp_path / "gateway.log") as gateway:
        smg = gateway.smg_pid()
        os.kill(gateway.process.pid, signal.SIGKILL)
        gateway.process.wait(STOP_TIMEOUT_S)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while alive(smg) and time.monotonic() < deadline:
            time.sleep(0.2)
    assert not alive(smg)


@pytest.mark.xdist_group("shared-gateway")
def test_two_gateways_share_a_host(shared_gateway, tmp_path):
    """Each gets its own metrics port (smg's default, 29000 on every interface, would collide)."""
    one, workers = shared_gateway
    with running_gateway(workers, tmp_path / "two.log") as two:
        assert one.process.poll() is None and two.process.poll() is None
        assert one.base_url != two.base_url


@pytest.mark.xdist_group("shared-gateway")
def test_the_gateway_prints_only_its_url_on_stdout(shared_gateway):
    gateway, _ = shared_gateway
    # The first line is the URL, not smg's start-up banner: smg's output goes to stderr.
    assert gateway.base_url.startswith("http://127.0.0.1:") and gateway.base_url.endswith("/v1")
    log = gateway.log.read_text()  # the gateway announced itself there before printing the URL
    assert f"listening  127.0.0.1:{gateway.base_url.split(':')[-1].split('/')[0]}" in log  # smg's banner
    assert "gateway ready; then: llmxmr run --base-url " + gateway.base_url in log


@pytest.mark.xdist_group("shared-gateway")
def test_a_batch_through_the_gateway_shares_one_budget_over_every_worker(shared_gateway, tmp_path):
    """``llmxmr batch`` as a user runs it against ``llmxmr gateway``: every document answered and
    written, every worker given map calls, the budget set by --concurrency."""
    source = tmp_path / "batch.jsonl"
    lines = [{"id": i, "question": QUESTION, "document": document(200, first_line=200 * i)} for i in range(6)]
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    gateway, workers = shared_gateway
    result = invoke(
        "batch", "--input", str(source), "--out", str(tmp_path / "out"), "--base-url", gateway.base_url,
        "--chunk-tokens", str(CHUNK_TOKENS), "--tokenizer", "tiktoken", "--concurrency", "4", "--no-progress", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["documents"], report["found"], report["failures"], report["concurrency"]) == (6, 6, 0, 4)
    answers = [json.loads(line)["answer"] for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert answers == ["4242"] * 6
    served = [maps_served(worker) for worker in workers]
    assert min(served) > 0 and sum(served) == report["calls"] - 6  # six reduces, the rest maps
    assert max(worker.max_in_flight for worker in workers) <= 4  # the budget's bound, seen per worker
