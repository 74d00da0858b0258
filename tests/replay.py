"""Recorded replies of the real model, replayed over HTTP: the integration lane's stand-in server.

Each integration scenario (a test) has a store, ``tests/integration/replies/<scenario>.json``, of
the HTTP exchanges that the real ``llmxmr serve --local`` (llama-cpp-python's server with the
bundled SmolLM2) had with llmxmr: model listing, token counts and chat completions. By default a
scenario's test talks to a local server that answers from its store, so the real pipeline, the
real server client and the real grounding run end to end, with no model and in seconds. A request
that is not in the store (a prompt, a setting or the document changed) is answered with an error
and fails the test, naming the scenario and how to record it again: never a silent live call.

``LLMXMR_RECORD=1`` records instead: the same server passes every request on to a real
``llmxmr serve --local`` and the store is written anew from what this run exchanged. See
CONTRIBUTING.md.

Streamed requests (llmxmr streams its calls to stop a reply that loops as it is written) are kept
as the same request not streamed: the key and the recording leave out ``stream`` and
``stream_options``, the upstream is asked without them, and the fake server streams the recorded
completion back (``fake_server.stream_events``) as llama-cpp-python's server does, without usage.
A store recorded before llmxmr streamed still answers, and a client that hangs up on a loop is
hung up on a replayed stream, where the model's reply would have been stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .fake_server import Answer, fake_server

STORE_DIR = Path(__file__).parent / "integration" / "replies"
RECORD_ENV = "LLMXMR_RECORD"
# What a llama-cpp-python server is asked: the routes a store holds.
ROUTES = ("/v1/models", "/v1/chat/completions", "/extras/tokenize/count")
# Long enough to find a request in a store by eye (its prompt's last words), short enough to diff.
_ABOUT_CHARS = 160
_UPSTREAM_TIMEOUT_S = 900.0


class ReplayMiss(AssertionError):
    """A scenario asked for what its store does not hold."""


def recording() -> bool:
    return os.environ.get(RECORD_ENV, "") not in ("", "0")


# How a reply is sent, not what it says: left out of a request's key and of what is recorded.
STREAM_FIELDS = ("stream", "stream_options")


def exchange_key(route: str, body: Any) -> str:
    """The key of a request: its route and body, canonical JSON. The body holds everything that
    decides the reply (messages, schema, length, temperature, sampling fields)."""
    canonical = json.dumps({"route": route, "body": unstreamed(body)}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def unstreamed(body: Any) -> Any:
    """A request body as it would be sent without streaming."""
    if not isinstance(body, dict):
        return body
    return {key: value for key, value in body.items() if key not in STREAM_FIELDS}


def _about(body: Any) -> str:
    """A reader's handle on a request: the end of its last message, or the text counted."""
    if not isinstance(body, dict):
        return ""
    text = body["messages"][-1]["content"] if body.get("messages") else str(body.get("input", ""))
    return text[-_ABOUT_CHARS:]


@dataclass
class ReplyStore:
    """One scenario's exchanges, keyed by ``exchange_key``."""

    scenario: str
    exchanges: dict[str, dict[str, Any]] = field(default_factory=dict)
    misses: list[str] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return STORE_DIR / f"{self.scenario}.json"

    @classmethod
    def load(cls, scenario: str) -> ReplyStore:
        store = cls(scenario)
        if store.path.exists():
            recorded = json.loads(store.path.read_text(encoding="utf-8"))
            store.exchanges = {entry["key"]: entry for entry in recorded["exchanges"]}
        return store

    def replayed(self, route: str, body: Any) -> Answer:
        entry = self.exchanges.get(exchange_key(route, body))
        if entry is None:
            self.misses.append(f"{route}: ...{_about(body)[-80:]!r}")
            return Answer(400, {"error": {"message": self.miss_message(), "type": "replay_miss"}})
        return Answer(entry["status"], entry["response"])

    def recorded(self, upstream: httpx.Client, route: str, body: Any) -> Answer:
        body = unstreamed(body)
        reply = upstream.get(route) if body is None else upstream.post(route, json=body)
        response = reply.json()
        key = exchange_key(route, body)
        self.exchanges[key] = {
            "key": key,
            "route": route,
            "about": _about(body),
            "status": reply.status_code,
            "response": response,
        }
        return Answer(reply.status_code, response)

    def miss_message(self) -> str:
        where = self.path.relative_to(STORE_DIR.parents[1])
        state = "holds no recording" if not self.exchanges else "does not hold this request"
        return (
            f"integration scenario {self.scenario!r}: {where} {state} (a prompt, setting or document "
            f"changed?); record it again with {RECORD_ENV}=1 (see CONTRIBUTING.md)"
        )

    def check(self) -> None:
        """Fails the scenario if any request missed the store."""
        if self.misses:
            raise ReplayMiss(f"{self.miss_message()}; {len(self.misses)} request(s) missed, first: {self.misses[0]}")

    def save(self) -> None:
        STORE_DIR.mkdir(parents=True, exist_ok=True)
        # In key order: a store recorded again diffs by what changed, not by the order replies came.
        payload = {"scenario": self.scenario, "exchanges": [self.exchanges[key] for key in sorted(self.exchanges)]}
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        temporary.replace(self.path)


@contextmanager
def replay_server(store: ReplyStore, upstream_base_url: str | None = None) -> Iterator[str]:
    """A local server answering from ``store`` (or, given an upstream, passing requests on to it
    and recording them); yields its /v1 base URL."""
    upstream = None
    if upstream_base_url is not None:
        root = upstream_base_url.rstrip("/").removesuffix("/v1")
        upstream = httpx.Client(base_url=root, timeout=_UPSTREAM_TIMEOUT_S)

    def answer_for(route: str):
        if upstream is None:
            return lambda body: store.replayed(route, body)
        return lambda body: store.recorded(upstream, route, body)

    try:
        with fake_server({route: answer_for(route) for route in ROUTES}) as server:
            yield server.base_url
    finally:
        if upstream is not None:
            upstream.close()
