"""An async client for OpenAI-compatible servers: SGLang first, vLLM, llama.cpp and OpenAI too.

The wire protocol is the ``openai`` package's, over its aiohttp transport (far less CPU per call
than its default httpx stack, which matters at thousands of calls in flight); its own retries are
off so that the retry policy (``llmxmr.retry``) is ours, tested, and counted in the trace. What differs between servers (how a
JSON schema is sent, where the context length and the tokenizer are, whether SGLang's request
``priority`` applies) is a ``ServerKind``, recognised from the ``owned_by`` field of ``/v1/models``.
A server of no known kind is asked for ``/workers``: the smg gateway lists its workers there, with
the context length each serves, since its own ``/v1/models`` has none.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import httpx
import openai
from openai.types.chat import ChatCompletion

from ..errors import LLMCallError, LlmxmrError, ServerRefusedError, ServerUnavailableError
from ..retry import backoff_delay, is_retryable_status, parse_retry_after
from ..schemas import capped_lengths
from ..tokens import ServerTokenCounter, TokenCounter
from .base import ChatReply, ChatRequest

CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ServerKind:
    name: str
    schema_wire: Literal["json_schema", "json_object"]
    tokenize_path: str | None = None  # relative to the server root, not to /v1
    tokenize_field: str = "prompt"
    # Count text as it sits inside a prompt: without the BOS token the endpoint adds by default.
    tokenize_extra: dict[str, Any] = field(default_factory=dict)
    tokenize_batches: bool = False  # the endpoint takes a list of texts
    props_path: str | None = None  # llama.cpp's llama-server reports n_ctx and total_slots there
    # Requests the server runs at once, when its kind fixes it (llama-cpp-python: one).
    parallel_requests: int | None = None
    # Takes SGLang's ``priority`` field (larger values run first with --enable-priority-scheduling).
    # Others are not sent it: vLLM rejects a non-zero priority unless started with
    # --scheduling-policy priority, and runs smaller values first; OpenAI rejects unknown fields.
    priority: bool = False

    def response_format(self, name: str, schema: dict[str, Any]) -> dict[str, Any]:
        if self.schema_wire == "json_object":  # llama-cpp-python's server takes only this form
            return {"type": "json_object", "schema": schema}
        return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


GENERIC = ServerKind("openai-compatible", "json_schema")
SERVER_KINDS = {
    "sglang": ServerKind(
        "sglang", "json_schema", "/v1/tokenize", "prompt", {"add_special_tokens": False}, tokenize_batches=True,
        priority=True,
    ),
    "vllm": ServerKind("vllm", "json_schema", "/tokenize", "prompt", {"add_special_tokens": False}),
    "llamacpp": ServerKind("llama.cpp", "json_schema", "/tokenize", "content", props_path="/props"),
    "me": ServerKind("llama-cpp-python", "json_object", "/extras/tokenize/count", "input", parallel_requests=1),
}
# smg forwards request bodies as they are; its /v1/tokenize uses tokenizers of its own, not the
# workers', so there is no tokenize endpoint to use through it.
GATEWAY = ServerKind("smg gateway", "json_schema")


@dataclass(frozen=True)
class ListedWorker:
    """One worker as the smg gateway lists it at ``GET /workers``."""

    url: str
    healthy: bool
    runtime: str  # the engine smg found behind the URL: sglang, vllm, ...
    models: dict[str, int | None]  # model id -> context length


def listed_workers(payload: Any) -> list[ListedWorker] | None:
    """smg's ``/workers`` answer as workers, or None if ``payload`` is not such an answer."""
    entries = payload.get("workers") if isinstance(payload, dict) else None
    if not isinstance(entries, list):
        return None
    workers = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
            return None
        models: dict[str, int | None] = {}
        for model in entry.get("models") or []:
            if isinstance(model, dict) and "id" in model:
                length = model.get("context_length")
                models[str(model["id"])] = length if isinstance(length, int) else None
        healthy = entry.get("is_healthy") is True
        workers.append(ListedWorker(entry["url"], healthy, str(entry.get("runtime_type")), models))
    return workers


def _cached_tokens(completion: Any, details: Any) -> int | None:
    """Prompt tokens the server took from its prefix cache: the OpenAI field (SGLang with
    --enable-cache-report, vLLM), else llama.cpp's ``timings.cache_n``."""
    cached = getattr(details, "cached_tokens", None) if details else None
    if cached is not None:
        return int(cached)
    timings = (completion.model_extra or {}).get("timings")
    if isinstance(timings, dict) and isinstance(timings.get("cache_n"), int):
        return timings["cache_n"]
    return None


def server_root(base_url: str) -> str:
    """The server's root URL: the base URL without its trailing ``/v1``."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


class OpenAICompatibleClient:
    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        model: str | None = None,
        timeout_s: float = 300.0,
        max_retries: int = 4,
        max_string_chars: int | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._model = model
        self._max_retries = max_retries
        self._timeout_s = timeout_s
        self._max_string_chars = max_string_chars
        # The SDK client and the event loop its aiohttp session belongs to (see ``_sdk``).
        self._openai: openai.AsyncOpenAI | None = None
        self._openai_loop: asyncio.AbstractEventLoop | None = None
        self._kind: ServerKind | None = None
        self._model_card: dict[str, Any] = {}
        self._workers: list[ListedWorker] = []  # behind a gateway
        self._discovery = asyncio.Lock()
        self._counter: ServerTokenCounter | None = None

    def _sdk(self) -> openai.AsyncOpenAI:
        """The SDK client of the running event loop. An aiohttp session cannot outlive its loop,
        and a client kept across ``MapReducePipeline.run`` calls (each one ``asyncio.run``) meets
        a new loop each time: it then gets a new session (the old loop's is gone with it)."""
        loop = asyncio.get_running_loop()
        if self._openai is None or self._openai_loop is not loop:
            self._openai = openai.AsyncOpenAI(
                base_url=self.base_url,
                api_key=self._api_key or "EMPTY",
                max_retries=0,
                timeout=openai.Timeout(self._timeout_s, connect=CONNECT_TIMEOUT_S),
                http_client=openai.DefaultAioHttpClient(),
            )
            self._openai_loop = loop
        return self._openai

    def describe(self) -> str:
        kind = self._kind.name if self._kind else "server"
        model = f" ({self._model})" if self._model else ""
        return f"{kind} at {self.base_url}{model}"

    async def _discover(self) -> None:
        """Learn the model name and server kind from /v1/models, once."""
        async with self._discovery:
            if self._kind is not None:
                return
            try:
                page = await self._with_retries(self._sdk().models.list)
                cards = [card.model_dump() for card in page.data]
            except LLMCallError:
                if not self._model:  # without a listing, only a named model can be used
                    raise
                cards = []
            if not self._model:
                if not cards:
                    raise LLMCallError(f"{self.base_url} serves no model (/v1/models is empty)")
                self._model = cards[0]["id"]
            # The card of the model in use, if listed: its context length is the one that applies.
            self._model_card = next((c for c in cards if c.get("id") == self._model), {})
            owner = self._model_card.get("owned_by") or (cards[0].get("owned_by") if cards else "")
            kind = SERVER_KINDS.get(str(owner), GENERIC)
            if kind is GENERIC:
                kind = await self._find_gateway() or kind
            self._kind = kind

    async def _find_gateway(self) -> ServerKind | None:
        """The gateway kind if the server lists workers as smg does; priorities go through when
        every worker is SGLang."""
        workers = listed_workers(await asyncio.to_thread(self._get_json, "/workers"))
        if workers is None:
            return None
        self._workers = [worker for worker in workers if self._model in worker.models]
        only_sglang = bool(self._workers) and all(worker.runtime == "sglang" for worker in self._workers)
        return replace(GATEWAY, priority=only_sglang)

    async def worker_count(self) -> int:
        """Healthy workers serving the model behind a gateway, else 1."""
        await self._discover()
        return max(1, sum(worker.healthy for worker in self._workers))

    async def chat(self, request: ChatRequest) -> ChatReply:
        await self._discover()
        assert self._kind is not None and self._model is not None
        body: dict[str, Any] = {
            "model": self._model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        }
        if request.json_schema is not None:
            schema = request.json_schema
            if self._max_string_chars:
                schema = capped_lengths(schema, self._max_string_chars)
            body["response_format"] = self._kind.response_format(request.schema_name or "output", schema)
        if request.priority is not None and self._kind.priority:
            body["priority"] = request.priority
        retries = 0

        async def create() -> Any:
            nonlocal retries
            retries += 1
            # The SDK's generic POST, with the body as built here: ``chat.completions.create``
            # would re-walk every request (the JSON schema included) against its typed parameters,
            # which cost more CPU per call than the rest of the pipeline together (benchmarks/overhead.py).
            return await self._sdk().post("/chat/completions", body=body, cast_to=ChatCompletion)

        completion = await self._with_retries(create)
        if not completion.choices:
            raise LLMCallError(f"{self.describe()} returned no choices")
        choice = completion.choices[0]
        usage = completion.usage
        details = getattr(usage, "prompt_tokens_details", None) if usage else None
        return ChatReply(
            text=choice.message.content or "",
            finish_reason=choice.finish_reason,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            cached_tokens=_cached_tokens(completion, details),
            transport_retries=retries - 1,
        )

    async def _with_retries(self, call: Any) -> Any:
        for retry in range(self._max_retries + 1):
            last_try = retry == self._max_retries
            try:
                return await call()
            except openai.APIStatusError as exc:
                if exc.status_code in (401, 403):
                    raise ServerRefusedError(self.base_url, exc.status_code, _message(exc)) from exc
                if last_try or not is_retryable_status(exc.status_code):
                    raise LLMCallError(
                        f"{self.describe()} answered HTTP {exc.status_code}: {_message(exc)}", retry
                    ) from exc
                delay = backoff_delay(retry, parse_retry_after(exc.response.headers.get("retry-after")))
            except openai.APIConnectionError as exc:  # timeouts included
                if last_try and _timed_out(exc):
                    raise LLMCallError(f"{self.describe()} timed out", retry) from exc
                if last_try and _never_connected(exc):
                    raise ServerUnavailableError(self.base_url, _cause(exc)) from exc
                if last_try:  # it was reached, but dropped this request: this call's failure
                    raise LLMCallError(f"{self.describe()} dropped the connection: {_cause(exc)}", retry) from exc
                delay = backoff_delay(retry)
            except (openai.APIError, ValueError) as exc:  # a body that is not the JSON it should be
                # (an HTML error page, a cut-off reply): not worth repeating
                raise LLMCallError(f"{self.describe()} sent an unreadable reply: {exc}", retry) from exc
            await asyncio.sleep(delay)
        raise AssertionError("unreachable: the last try raises or returns")

    async def parallel_requests(self) -> int | None:
        """llama-cpp-python's one; llama.cpp's slots (``/props`` ``total_slots``); else unknown."""
        await self._discover()
        assert self._kind is not None
        if self._kind.parallel_requests is not None or not self._kind.props_path:
            return self._kind.parallel_requests
        slots = (await asyncio.to_thread(self._get_json, self._kind.props_path) or {}).get("total_slots")
        return slots if isinstance(slots, int) and slots > 0 else None

    async def context_window(self) -> int | None:
        await self._discover()
        assert self._kind is not None and self._model is not None
        if isinstance(self._model_card.get("max_model_len"), int):
            return self._model_card["max_model_len"]
        if self._kind.props_path:
            props = await asyncio.to_thread(self._get_json, self._kind.props_path)
            n_ctx = (props or {}).get("default_generation_settings", {}).get("n_ctx")
            return int(n_ctx) if n_ctx else None
        # Behind a gateway, a prompt must fit whichever worker it is sent to.
        lengths = [length for worker in self._workers if (length := worker.models[self._model]) is not None]
        return min(lengths) if lengths else None

    async def token_counter(self) -> TokenCounter | None:
        """The server's tokenizer, if its endpoint answers (older SGLang builds have none)."""
        await self._discover()
        assert self._kind is not None
        if not self._kind.tokenize_path:
            return None
        if self._counter is None:
            counter = ServerTokenCounter(
                server_root(self.base_url),
                self._kind.tokenize_path,
                self._kind.tokenize_field,
                self._api_key,
                extra=self._kind.tokenize_extra,
                batches=self._kind.tokenize_batches,
            )
            try:
                await asyncio.to_thread(counter.count_exactly, ["probe"])
            except LlmxmrError:  # no usable endpoint: the caller falls back to tiktoken
                counter.close()
                return None
            self._counter = counter
        return self._counter

    def _get_json(self, path: str) -> dict[str, Any] | None:
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        try:
            response = httpx.get(server_root(self.base_url) + path, headers=headers, timeout=30.0)
            response.raise_for_status()
            return response.json()
        except (httpx.HTTPError, ValueError):
            return None

    async def aclose(self) -> None:
        if self._counter is not None:
            self._counter.close()
        if self._openai is not None and self._openai_loop is asyncio.get_running_loop():
            await self._openai.close()
        self._openai = None


def _message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:300]
    return str(exc.message)[:300]


def _causes(exc: BaseException) -> list[BaseException]:
    chain = [exc]
    while chain[-1].__cause__ is not None and len(chain) < 16:
        chain.append(chain[-1].__cause__)
    return chain


def _timed_out(exc: openai.APIConnectionError) -> bool:
    """Whether the request ran out of time. The SDK's class is not enough: the aiohttp transport's
    adapter reports every aiohttp connection error (a refused connection, a server that hung up)
    as a connect timeout. A ``TimeoutError`` among the causes settles it (aiohttp's and asyncio's
    timeouts are ones); an aiohttp connection error without one is not a timeout."""
    causes = _causes(exc)[1:]
    if any(isinstance(cause, TimeoutError) for cause in causes):
        return True
    if any(cls.__name__ == "ClientConnectionError" for cause in causes for cls in type(cause).__mro__):
        return False
    return isinstance(exc, openai.APITimeoutError)


def _never_connected(exc: openai.APIConnectionError) -> bool:
    """Whether no connection could be opened at all (the server is down or the URL wrong), as
    opposed to one that was dropped mid-request. Checked by class name along the chain of causes:
    the SDK wraps the ``ConnectError`` of the httpx it bundles, or aiohttp's own error."""
    refusals = {"ConnectError", "ClientConnectorError", "ConnectionRefusedError"}
    return any(cls.__name__ in refusals for cause in _causes(exc)[1:] for cls in type(cause).__mro__)


def _cause(exc: openai.APIConnectionError) -> str:
    cause = exc.__cause__ or exc
    return f"{type(cause).__name__}: {cause}".strip(": ")[:200]
