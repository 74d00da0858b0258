"""Shared fixtures: a deterministic token counter, replies for the scripted fake client, and a
helper for child processes that a test stops with Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Sequence
from pathlib import Path

import pytest

_CJK = re.compile("[\u4e00-\u9fff]")
SHARED = Path(__file__).resolve().parents[2] / "shared"


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
    from llmxmr import pipeline

    counted: list[int] = []
    original = pipeline.chunk_text

    def counting(*args, **kwargs):
        counted.append(len(chunks := original(*args, **kwargs)))
        return chunks

    monkeypatch.setattr(pipeline, "chunk_text", counting)
    return counted


def map_parts(request) -> tuple[str, str]:
    """The chunk of a map request and what follows it (the question)."""
    after = request.messages[-1].content.rsplit("<document_part>", 1)[1]
    chunk, question = after.split("</document_part>", 1)
    return chunk, question


def map_requests(client) -> list:
    """The map requests a scripted client received, in order."""
    return [request for request in client.requests if request.schema_name == "MapOutput"]


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
        {"extracted_information": info, "evidence": evidence, "rationale": rationale, "answer": answer, "confidence": confidence}
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
