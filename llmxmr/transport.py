"""Transport policy in one place: the timeouts of every HTTP request llmxmr sends, and one client
for a server's own JSON endpoints beside its OpenAI API.

The OpenAI API itself (chat completions, ``/v1/models``) goes through the ``openai`` SDK, with the
request timeout and the retry count of the config (``llm.timeout_s``, ``llm.max_retries``) and
``CONNECT_TIMEOUT_S``. The SDK decides what is retried and how long it waits between tries (its
``_constants.py``): connection errors, timeouts, 408, 409, 429 and 5xx are; it waits 0.5 s, doubling
up to 8 s, less up to a quarter at random, or the server's Retry-After up to 120 s (a longer one is
not retried). tests/unit/test_retry.py pins that rule.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import httpx

from .errors import LlmxmrError

# Opening a connection: a server that is up accepts at once, so waiting longer only delays the
# report that it is down.
CONNECT_TIMEOUT_S = 5.0
# ``/props`` and ``/workers``, asked once per client when a run starts.
PROBE_TIMEOUT_S = 30.0
# One tokenize request; short, so that counting falls back to an estimate rather than waiting for a
# busy server (see ``clients.tokenize.ServerTokenCounter``).
COUNT_TIMEOUT_S = 10.0
# One readiness poll of a server that is starting: the next poll follows within a second.
POLL_TIMEOUT_S = 2.0


class EndpointError(LlmxmrError):
    """A server endpoint gave no JSON: unreachable, too slow, an error status or another body."""


class ServerEndpoints:
    """JSON requests to one server's endpoints outside the OpenAI API (llama.cpp's ``/props``,
    smg's ``/workers``, the tokenize endpoints, the readiness polls), over one pooled httpx client.

    Synchronous: the chunker counts tokens from worker threads, and the readiness polls run before
    any event loop; async callers send through ``asyncio.to_thread`` (httpx's client is thread-safe).
    """

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout_s: float = PROBE_TIMEOUT_S) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # A connection never gets longer than the whole request.
        timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, CONNECT_TIMEOUT_S))
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)

    def get_json(self, path: str) -> Any | None:
        """The JSON at ``path``, or None if the server gives none: what a probe cannot learn."""
        try:
            return self._send("GET", path)
        except EndpointError:
            return None

    def post_json(self, path: str, body: Any) -> Any:
        """The JSON the server answers ``body`` with at ``path``; ``EndpointError`` if none."""
        return self._send("POST", path, body)

    def _send(self, method: str, path: str, body: Any = None) -> Any:
        try:
            response = self._client.request(method, path, json=body)
            response.raise_for_status()
            return response.json()
        except (httpx.HTTPError, ValueError) as exc:  # ValueError: a body that is not JSON
            raise EndpointError(f"{method} {self.base_url}{path} failed: {exc}") from exc

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ServerEndpoints:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
