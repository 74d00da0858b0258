"""An on-disk cache of LLM replies (SQLite), in front of any client: ``--cache PATH``.

A request is looked up by a key over everything that decides the reply: the model's identity,
the messages, the reply length, the temperature and the JSON schema. A hit answers without a call;
a miss asks the client and stores the reply at once (committed, so a killed run keeps what it
paid for). Rerunning or resuming a run with the same settings therefore makes no new calls for
finished work. A sampled reply (temperature > 0) is a draw, not the answer: such requests bypass
the cache unless ``llm.cache_sampled`` asks for them to be cached too.

Hits report no token usage (nothing was spent) and count as ``cache_hits`` in the trace. What
the model said is kept as it said it, valid or not: at temperature 0 it would say it again. A call
with a watch (``ReplyWatch``) is passed on with it, and a reply its watch stopped is kept as it
came (finish reason ``WATCH_STOP``): the same watch stops the same reply at the same place. A hit
for a watched call is streamed to its watch as the model would write it, in pieces of
``REPLAY_CHARS`` characters, and stopped where the watch stops it; so a whole reply stored by an
unwatched call serves a watched one as a live stream would. A stopped reply is no answer to an
unwatched call, which asks the model and keeps the whole reply instead. The watch is no part of the
key. The cache only ever saves calls: if the file cannot be read or written (locked by another
process, disk full), the call goes to the model and a warning says so once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import sys
import threading
from pathlib import Path

from ..errors import ConfigError
from ..tokens import TokenCounter
from .base import WATCH_STOP, ChatReply, ChatRequest, LLMClient, ReplyWatch

# Bumped when the key or the stored reply changes meaning, so old entries are never misread.
# 3: a GGUF is named by its contents (``model_identity``), not by where it lies.
_KEY_VERSION = 3
# How much of each end of a GGUF file its identity reads: the head holds its metadata (name,
# quantisation, tokenizer, tensor layout), the tail the last tensors' weights.
_GGUF_SAMPLE_BYTES = 1 << 20
# How much more of a stored reply a watched hit shows its watch each time: about a token's worth.
REPLAY_CHARS = 4


def model_identity(model_name: str) -> str:
    """The model as the reply cache knows it. A GGUF (the embedded model's path, or the id
    llama-cpp-python's server lists, which is its path) is named by its file name, size and a
    digest of its first and last MiB, so the same file answers from the same entries wherever a
    venv put it; another quantisation or fine-tune differs in size or in those bytes. A GGUF path
    that is not on this machine keeps its file name; any other name is kept as the server gave it."""
    if not model_name.lower().endswith(".gguf"):
        return model_name
    path = Path(model_name)
    try:
        size = path.stat().st_size
        with path.open("rb") as gguf:
            digest = hashlib.sha256(gguf.read(_GGUF_SAMPLE_BYTES))
            gguf.seek(max(size - _GGUF_SAMPLE_BYTES, 0))
            digest.update(gguf.read(_GGUF_SAMPLE_BYTES))
    except OSError:
        return f"gguf:{path.name}"
    return f"gguf:{path.name}:{size}:{digest.hexdigest()[:16]}"


def request_key(identity: str, request: ChatRequest) -> str:
    # The priority orders the server's queue and does not change the reply: it stays out of the
    # key, which is then the same as before the field existed.
    payload = {"v": _KEY_VERSION, "model": identity, **request.model_dump(mode="json", exclude={"priority"})}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def replayed(stored: ChatReply, watch: ReplyWatch) -> ChatReply:
    """A stored reply streamed to a watch, ``REPLAY_CHARS`` more characters each time: the text up
    to where the watch stops it (finished by ``WATCH_STOP``), else the reply as stored."""
    text = stored.text
    for end in range(REPLAY_CHARS, len(text) + REPLAY_CHARS, REPLAY_CHARS):
        if watch(text[:end]) and end < len(text):
            return ChatReply(text=text[:end], finish_reason=WATCH_STOP, from_cache=True)
    return ChatReply(text=text, finish_reason=stored.finish_reason, from_cache=True)


class CachedClient:
    """``CachedClient(client, path)``: the key names the model by ``model_identity`` of
    ``client.model_name()`` (the id the server lists, the embedded GGUF), so two models never share
    replies, and a model served again at another address, or installed in another venv, finds its
    own. Settings that change replies (a string cap) are in the request's schema, so in the key."""

    def __init__(self, inner: LLMClient, path: str | Path, *, sampled: bool = False) -> None:
        self._inner = inner
        self._identity: str | None = None
        self._sampled = sampled
        self._warned = False
        self._lock = threading.Lock()
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, reply TEXT NOT NULL)")
            self._db.commit()
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open the reply cache {path}: {exc}") from exc

    async def chat(self, request: ChatRequest, watch: ReplyWatch | None = None) -> ChatReply:
        if request.temperature > 0 and not self._sampled:
            return await self._inner.chat(request, watch)
        if self._identity is None:
            name = await self._inner.model_name()
            self._identity = await asyncio.to_thread(model_identity, name)
        key = request_key(self._identity, request)
        stored = await asyncio.to_thread(self._get, key)
        if stored is not None and watch is not None:
            return replayed(stored, watch)
        if stored is not None and stored.finish_reason != WATCH_STOP:
            return ChatReply(text=stored.text, finish_reason=stored.finish_reason, from_cache=True)
        reply = await self._inner.chat(request, watch)
        await asyncio.to_thread(self._put, key, reply)
        return reply

    def _get(self, key: str) -> ChatReply | None:
        try:
            with self._lock:
                row = self._db.execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as exc:
            self._warn(exc)
            return None
        return ChatReply.model_validate_json(row[0]) if row else None

    def _put(self, key: str, reply: ChatReply) -> None:
        try:
            with self._lock:
                self._db.execute("INSERT OR REPLACE INTO replies VALUES (?, ?)", (key, reply.model_dump_json()))
                self._db.commit()
        except sqlite3.Error as exc:
            self._warn(exc)

    def _warn(self, exc: sqlite3.Error) -> None:
        if not self._warned:
            self._warned = True
            print(f"warning: the reply cache is not usable ({exc}); calls go to the model", file=sys.stderr)

    async def context_window(self) -> int | None:
        return await self._inner.context_window()

    async def token_counter(self) -> TokenCounter | None:
        return await self._inner.token_counter()

    async def worker_count(self) -> int:
        return await self._inner.worker_count()

    async def parallel_requests(self) -> int | None:
        return await self._inner.parallel_requests()

    async def model_name(self) -> str:
        return await self._inner.model_name()

    def describe(self) -> str:
        return self._inner.describe()

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            with self._lock:
                self._db.close()
