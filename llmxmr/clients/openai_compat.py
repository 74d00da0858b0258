"""An async client for OpenAI-compatible servers: SGLang first, vLLM, llama.cpp and OpenAI too.

The wire protocol is the ``openai`` package's, over its aiohttp transport (far less CPU per call
than its default httpx stack, which matters at thousands of calls in flight). The SDK retries, as
configured (``max_retries``; its rule is in ``llmxmr.transport``), and reports the retries it took;
this module only turns what it raises into llmxmr's errors. What differs between servers (how a
JSON schema is sent, where the context length and the tokenizer are, whether SGLang's request
``priority`` applies) is a ``ServerKind``, recognised from the ``owned_by`` field of ``/v1/models``.
A server of no known kind is asked for ``/workers``: the smg gateway lists its workers there, with
the context length each serves, since its own ``/v1/models`` has none.

A call with a watch (``base.ReplyWatch``) is streamed (``"stream": true``, OpenAI's server-sent
events, which SGLang, vLLM, llama.cpp's server and llama-cpp-python's all send) and hung up on once
the watch says so: the server stops decoding when its client goes away. A stream that breaks off
(the connection dropped, or it ended before the reply did: llama-cpp-python's server, unless started
with ``interrupt_requests`` off as ``serve --local`` starts it, ends a stream as soon as another
request waits) is asked again, within the same ``max_retries``. A server that answers a streamed
request with one JSON body is read as without a watch. Where a stream brings no usage (llama-cpp-
python's never does, and no server's does once hung up on), the chunks that brought text are counted
as its completion tokens, and its prompt tokens are estimated: tiktoken's count of the messages
(``ChatReply.prompt_tokens_estimated``). The chat template's tokens are left out: on the integration
lane's prompts, 2 % under llama-cpp-python's count for a 2,000-token map prompt, 13 % under for a
reduce prompt of 370.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

import aiohttp
import openai
from openai.types.chat import ChatCompletion
from pydantic_core import from_json

from ..errors import LLMCallError, LlmxmrError, ServerRefusedError, ServerUnavailableError
from ..tokens import TiktokenCounter, TokenCounter
from ..transport import CONNECT_TIMEOUT_S, ServerEndpoints
from .base import WATCH_STOP, ChatReply, ChatRequest, ReplyWatch
from .tokenize import ServerTokenCounter

T = TypeVar("T")


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
    # Sampling fields sent with every request where the server's defaults are not the model's own
    # distribution. llama-cpp-python's server penalises repeats (repeat_penalty 1.1, where its
    # in-process API, llama-server, SGLang and vLLM use 1.0): a reply that must copy the text (a
    # quote, the value asked for) is pushed off the very tokens it copies.
    sampling: dict[str, Any] = field(default_factory=dict)
    # Takes ``stream_options.include_usage`` and ends a stream with its usage. llama-cpp-python's
    # server takes no such option (its request model ignores it) and streams no usage at all.
    stream_usage: bool = True

    def response_format(self, name: str, schema: dict[str, Any]) -> dict[str, Any]:
        if self.schema_wire == "json_object":  # llama-cpp-python's server takes only this form
            return {"type": "json_object", "schema": schema}
        return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


GENERIC = ServerKind("openai-compatible", "json_schema")
SERVER_KINDS = {
    "sglang": ServerKind(
        "sglang",
        "json_schema",
        "/v1/tokenize",
        "prompt",
        {"add_special_tokens": False},
        tokenize_batches=True,
        priority=True,
    ),
    "vllm": ServerKind("vllm", "json_schema", "/tokenize", "prompt", {"add_special_tokens": False}),
    "llamacpp": ServerKind("llama.cpp", "json_schema", "/tokenize", "content", props_path="/props"),
    "me": ServerKind(
        "llama-cpp-python",
        "json_object",
        "/extras/tokenize/count",
        "input",
        parallel_requests=1,
        props_path="/props",  # answered by `llmxmr serve --local`, not by a plain llama-cpp-python server
        sampling={"repeat_penalty": 1.0},
        stream_usage=False,
    ),
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
        safety_margin: float = 0.15,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._model = model
        self._max_retries = max_retries
        self._timeout_s = timeout_s
        # chunking.safety_margin: how far the token counter raises the estimates it falls back on.
        self._safety_margin = safety_margin
        # The SDK client and the event loop its aiohttp session belongs to (see ``_sdk``).
        self._openai: openai.AsyncOpenAI | None = None
        self._openai_loop: asyncio.AbstractEventLoop | None = None
        self._kind: ServerKind | None = None
        self._model_card: dict[str, Any] = {}
        self._workers: list[ListedWorker] = []  # behind a gateway
        self._discovery = asyncio.Lock()
        self._endpoints: ServerEndpoints | None = None  # /props and /workers, made on first use
        self._counter: ServerTokenCounter | None = None
        self._estimator: TiktokenCounter | None = None  # of prompts whose tokens a server did not count

    def _sdk(self) -> openai.AsyncOpenAI:
        """The SDK client of the running event loop. An aiohttp session cannot outlive its loop,
        and a client kept across ``MapReducePipeline.run`` calls (each one ``asyncio.run``) meets
        a new loop each time: it then gets a new session (the old loop's is gone with it)."""
        loop = asyncio.get_running_loop()
        if self._openai is None or self._openai_loop is not loop:
            self._openai = openai.AsyncOpenAI(
                base_url=self.base_url,
                api_key=self._api_key or "EMPTY",
                max_retries=self._max_retries,
                timeout=openai.Timeout(self._timeout_s, connect=CONNECT_TIMEOUT_S),
                http_client=openai.DefaultAioHttpClient(),
            )
            self._openai_loop = loop
        return self._openai

    def describe(self) -> str:
        kind = self._kind.name if self._kind else "server"
        model = f" ({self._model})" if self._model else ""
        return f"{kind} at {self.base_url}{model}"

    async def model_name(self) -> str:
        await self._discover()
        assert self._model is not None
        return self._model

    async def _discover(self) -> None:
        """Learn the model name and server kind from /v1/models, once."""
        async with self._discovery:
            if self._kind is not None:
                return
            try:
                page = await self._sent(self._sdk().models.list())
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
        workers = listed_workers(await self._get_json("/workers"))
        if workers is None:
            return None
        self._workers = [worker for worker in workers if self._model in worker.models]
        only_sglang = bool(self._workers) and all(worker.runtime == "sglang" for worker in self._workers)
        return replace(GATEWAY, priority=only_sglang)

    async def worker_count(self) -> int:
        """Healthy workers serving the model behind a gateway, else 1."""
        await self._discover()
        return max(1, sum(worker.healthy for worker in self._workers))

    async def chat(self, request: ChatRequest, watch: ReplyWatch | None = None) -> ChatReply:
        await self._discover()
        assert self._kind is not None and self._model is not None
        body: dict[str, Any] = {
            "model": self._model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        }
        if request.json_schema is not None:
            body["response_format"] = self._kind.response_format(request.schema_name or "output", request.json_schema)
        body.update(self._kind.sampling)
        if request.priority is not None and self._kind.priority:
            body["priority"] = request.priority
        if watch is not None:
            return await self._streamed(body, watch)
        # The SDK's generic POST, with the body as built here: ``chat.completions.create`` would
        # re-walk every request (the JSON schema included) against its typed parameters, which cost
        # more CPU per call than the rest of the pipeline together (benchmarks/overhead.py). Cast to
        # the SDK's response rather than straight to ``ChatCompletion``, for its ``retries_taken``.
        post = self._sdk().post("/chat/completions", body=body, cast_to=openai.AsyncAPIResponse[ChatCompletion])
        response = await self._sent(post)
        retries = response.retries_taken
        try:
            completion = await response.parse()
        except ValueError as exc:  # a body that is not JSON (an HTML error page, a cut-off reply)
            raise LLMCallError(f"{self.describe()} sent an unreadable reply: {exc}", retries) from exc
        if not completion.choices:
            raise LLMCallError(f"{self.describe()} returned no choices", retries)
        choice = completion.choices[0]
        usage = completion.usage
        details = getattr(usage, "prompt_tokens_details", None) if usage else None
        return ChatReply(
            text=choice.message.content or "",
            finish_reason=choice.finish_reason,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            cached_tokens=_cached_tokens(completion, details),
            transport_retries=retries,
        )

    async def _streamed(self, body: dict[str, Any], watch: ReplyWatch) -> ChatReply:
        """The reply to ``body`` streamed, and hung up on where ``watch`` says (see the module).
        The SDK sends the request (its retries, its errors for a status); the events are read from
        the response it opened (``_Events``), not through its ``AsyncStream`` and typed chunks, for
        the same reason the body is sent as it is."""
        assert self._kind is not None
        body = {**body, "stream": True}
        if self._kind.stream_usage:
            body["stream_options"] = {"include_usage": True}
        retries = 0  # the SDK's, and the streams asked again
        while True:
            post = self._sdk().post(
                "/chat/completions",
                body=body,
                cast_to=object,
                stream=True,
                stream_cls=openai.AsyncStream[object],
                options={"max_retries": self._max_retries - retries},
            )
            try:
                stream = await self._sent(post)
            except LLMCallError as exc:
                exc.transport_retries += retries
                raise
            retries += _retry_count(stream.response.request.headers)
            try:
                reply = await self._read(stream, watch, retries)
            except _StreamBroken as exc:
                if retries >= self._max_retries:
                    raise LLMCallError(f"{self.describe()} dropped the connection: {exc}", retries) from exc
                retries += 1
                continue
            finally:
                await stream.close()  # before the end: hangs up, and the server stops decoding
            if not reply.prompt_tokens_estimated:
                return reply
            return reply.model_copy(update={"prompt_tokens": self._estimated_tokens(body["messages"])})

    def _estimated_tokens(self, messages: list[dict[str, str]]) -> int:
        """The tokens of a prompt the server did not count (see the module)."""
        self._estimator = self._estimator or TiktokenCounter()
        return sum(self._estimator.count_batch([message["content"] for message in messages]))

    async def _read(self, stream: openai.AsyncStream[object], watch: ReplyWatch, retries: int) -> ChatReply:
        """One streamed reply, ``_StreamBroken`` if it broke off."""
        if not stream.response.headers.get("content-type", "").startswith("text/event-stream"):
            # A server that does not stream: its whole reply, which no watch can stop. Read outside
            # the SDK's request (and the error types it maps), the body may fail with any of its
            # HTTP stack's transport errors: a body cut off, as any stream, is asked again.
            try:
                content = await stream.response.aread()
            except Exception as exc:
                raise _StreamBroken(_describe(exc)) from exc
            try:
                return _whole_reply(json.loads(content), retries, self.describe())
            except ValueError as exc:
                raise LLMCallError(f"{self.describe()} sent an unreadable reply: {exc}", retries) from exc
        reply, events = _Streaming(), _Events()
        received = stream.response.aiter_bytes()
        while not events.done:
            try:  # as the whole body above: the transport's errors, whatever their type
                data = await anext(received)
            except StopAsyncIteration:
                break
            except Exception as exc:
                raise _StreamBroken(_describe(exc)) from exc
            try:
                for chunk in events.feed(data):
                    if chunk.get("error"):  # SGLang and vLLM report a failure mid-stream so
                        error = f"{self.describe()} ended its reply with an error: {chunk['error']}"
                        raise LLMCallError(error[:400], retries)
                    if reply.add(chunk) and watch(reply.text) and reply.finish_reason is None:
                        return reply.stopped(retries)
            except ValueError as exc:  # an event that is not a JSON object
                raise LLMCallError(f"{self.describe()} sent an unreadable reply: {exc}", retries) from exc
        if not reply.choices:
            raise LLMCallError(f"{self.describe()} returned no choices", retries)
        if reply.finish_reason is None:
            raise _StreamBroken("the stream ended before the reply did")
        return reply.finished(retries)

    async def _sent(self, request: Awaitable[T]) -> T:
        """What the SDK answers, once it has retried what was worth retrying; llmxmr's error if
        the request failed for good."""
        try:
            return await request
        except openai.APIError as exc:
            raise self._failure(exc) from exc

    def _failure(self, exc: openai.APIError) -> LlmxmrError:
        """llmxmr's error for the SDK's: what the run does next depends on it. A refused key or an
        unreachable server stops the run (``ServerError``); a call that failed, however, fails
        alone (``LLMCallError``, with the retries taken for the trace)."""
        retries = _retries_taken(exc)
        if isinstance(exc, openai.APIStatusError):
            if exc.status_code in (401, 403):
                return ServerRefusedError(self.base_url, exc.status_code, _message(exc))
            return LLMCallError(f"{self.describe()} answered HTTP {exc.status_code}: {_message(exc)}", retries)
        if not isinstance(exc, openai.APIConnectionError):  # a reply the SDK could not read
            return LLMCallError(f"{self.describe()} sent an unreadable reply: {exc}", retries)
        # The SDK's class does not tell these apart: its aiohttp adapter maps every aiohttp
        # connection error (a refused connection, a server that hung up) to httpx's ConnectTimeout,
        # which the SDK raises as APITimeoutError. aiohttp's own error, beneath, tells them apart.
        cause = _aiohttp_error(exc)
        if isinstance(cause, aiohttp.ServerTimeoutError):
            return LLMCallError(f"{self.describe()} timed out", retries)
        if isinstance(cause, aiohttp.ClientConnectorError):  # no connection at all: down, or a wrong URL
            return ServerUnavailableError(self.base_url, _describe(cause))
        # It was reached, but dropped this request: this call's failure.
        return LLMCallError(f"{self.describe()} dropped the connection: {_describe(cause or exc)}", retries)

    async def parallel_requests(self) -> int | None:
        """llama-cpp-python's one; llama.cpp's slots (``/props`` ``total_slots``); else unknown."""
        await self._discover()
        assert self._kind is not None
        if self._kind.parallel_requests is not None or not self._kind.props_path:
            return self._kind.parallel_requests
        slots = (await self._get_json(self._kind.props_path) or {}).get("total_slots")
        return slots if isinstance(slots, int) and slots > 0 else None

    async def context_window(self) -> int | None:
        await self._discover()
        assert self._kind is not None and self._model is not None
        if isinstance(self._model_card.get("max_model_len"), int):
            return self._model_card["max_model_len"]
        if self._kind.props_path:
            props = await self._get_json(self._kind.props_path)
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
                safety_margin=self._safety_margin,
            )
            try:
                await asyncio.to_thread(counter.count_exactly, ["probe"])
            except LlmxmrError:  # no usable endpoint: the caller falls back to tiktoken
                counter.close()
                return None
            self._counter = counter
        return self._counter

    async def _get_json(self, path: str) -> Any | None:
        """The JSON at ``path`` from the server's root, or None (see ``ServerEndpoints.get_json``)."""
        if self._endpoints is None:  # made here, in the event loop's thread, so only once
            self._endpoints = ServerEndpoints(server_root(self.base_url), self._api_key)
        return await asyncio.to_thread(self._endpoints.get_json, path)

    async def aclose(self) -> None:
        if self._counter is not None:
            self._counter.close()
        if self._endpoints is not None:
            self._endpoints.close()
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


def _retries_taken(exc: openai.APIError) -> int:
    """The SDK's count of retries before it gave up. Its errors do not carry ``retries_taken`` as
    its responses do, but the last request it sent does: as the ``x-stainless-retry-count`` header
    it tells the server."""
    return _retry_count(exc.request.headers)


def _retry_count(headers: Mapping[str, str]) -> int:
    return int(headers.get("x-stainless-retry-count", 0))


class _StreamBroken(Exception):
    """A stream that broke off before its reply was complete: asked again."""


class _Events:
    """OpenAI's server-sent events, read from the bytes of a stream as they come: the JSON object
    of each event's data, until ``[DONE]``. Read here rather than by the SDK's ``AsyncStream``,
    whose decoder costs several times more CPU per event (a streamed reply is an event a token)."""

    def __init__(self) -> None:
        self._pending = b""
        self.done = False

    def feed(self, data: bytes) -> list[Mapping[str, Any]]:
        blocks = (self._pending + data).replace(b"\r\n", b"\n").split(b"\n\n")
        self._pending = blocks.pop()  # an event not yet ended by its blank line
        chunks: list[Mapping[str, Any]] = []
        for block in blocks:
            payload = b"\n".join(line[5:].lstrip(b" ") for line in block.split(b"\n") if line.startswith(b"data:"))
            if not payload:
                continue  # a comment, or fields without data
            if payload == b"[DONE]":
                self.done = True
                break
            chunk = from_json(payload)
            if not isinstance(chunk, dict):
                raise ValueError(f"an event that is no JSON object: {payload[:80]!r}")
            chunks.append(chunk)
        return chunks


class _Streaming:
    """A reply as its chunks come in: the text (of the first choice), its finish reason, and the
    usage and llama.cpp timings the last chunks carry."""

    def __init__(self) -> None:
        self.text = ""
        self.finish_reason: str | None = None
        self.choices = False
        self.pieces = 0  # chunks that added text: a token each, where the server gives no usage
        self.usage: Mapping[str, Any] | None = None
        self.timings: Any = None

    def add(self, chunk: Mapping[str, Any]) -> bool:
        """Takes one chunk; True if it added text."""
        self.usage = chunk.get("usage") or self.usage
        self.timings = chunk.get("timings") or self.timings
        choices = chunk.get("choices") or []
        if not choices:
            return False
        self.choices = True
        choice = choices[0]
        self.finish_reason = choice.get("finish_reason") or self.finish_reason
        delta = (choice.get("delta") or {}).get("content")
        if not delta:
            return False
        self.text += delta
        self.pieces += 1
        return True

    def finished(self, retries: int) -> ChatReply:
        return _reply(self.text, self.finish_reason, self.usage, self.timings, self.pieces, retries)

    def stopped(self, retries: int) -> ChatReply:
        """Hung up on: the server sends no usage then, so the tokens are the chunks received."""
        return _reply(self.text, WATCH_STOP, None, None, self.pieces, retries)


def _whole_reply(completion: Any, retries: int, server: str) -> ChatReply:
    """A chat completion as JSON, the answer of a server that did not stream."""
    if not isinstance(completion, dict):
        raise ValueError("not a JSON object")
    if not completion.get("choices"):
        raise LLMCallError(f"{server} returned no choices", retries)
    choice = completion["choices"][0]
    text = (choice.get("message") or {}).get("content") or ""
    usage, timings = completion.get("usage"), completion.get("timings")
    return _reply(text, choice.get("finish_reason"), usage, timings, 0, retries)


def _reply(
    text: str, finish: str | None, usage: Mapping[str, Any] | None, timings: Any, pieces: int, retries: int
) -> ChatReply:
    """A reply from what a server sent as JSON: its usage where it gave one, else the pieces of
    text counted as its completion tokens and its prompt tokens left to estimate."""
    details = (usage or {}).get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens")
    if cached is None and isinstance(timings, dict) and isinstance(timings.get("cache_n"), int):
        cached = timings["cache_n"]  # llama.cpp's, as in ``_cached_tokens``
    return ChatReply(
        text=text,
        finish_reason=finish,
        prompt_tokens=int(usage.get("prompt_tokens") or 0) if usage else 0,
        prompt_tokens_estimated=usage is None,
        completion_tokens=int(usage.get("completion_tokens") or 0) if usage else pieces,
        cached_tokens=None if cached is None else int(cached),
        transport_retries=retries,
    )


def _aiohttp_error(exc: openai.APIConnectionError) -> aiohttp.ClientError | None:
    """The error aiohttp raised, which the SDK's adapter wraps in an httpx one, which the SDK wraps."""
    cause = exc.__cause__
    while cause is not None:
        if isinstance(cause, aiohttp.ClientError):
            return cause
        cause = cause.__cause__
    return None


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".strip(": ")[:200]
