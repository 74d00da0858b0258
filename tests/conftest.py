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
