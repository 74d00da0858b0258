"""The one protocol every LLM client implements, and the values that cross it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from ..prompts import ChatMessage
from ..tokens import TokenCounter

# SGLang's request priority for each stage's calls: with --enable-priority-scheduling a server runs
# larger values first, so a run's collapse and reduce go ahead of maps still waiting (its own or
# other runs'). The steps stay below SGLang's preemption threshold (a difference of more than 10
# by default) so that they reorder the waiting queue but never evict a map already running.
# Calls of other labels (a harness's own) get the maps' 0.
SERVER_PRIORITY: dict[str, int] = {"map": 0, "collapse": 1, "reduce": 2}

# A watch over a reply as it is written: called with the reply's text so far, each time an extension
# of the text it was given before (or a new start, where a client asks again for a stream that broke
# off), and True stops the call there (``LLMClient.chat``). It may be called from the client's
# worker thread (the embedded model's), never twice at once.
ReplyWatch = Callable[[str], bool]
# The finish reason of a reply its watch stopped: ``text`` is what the model had written by then.
WATCH_STOP = "watch"


class ChatRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    messages: list[ChatMessage]
    max_tokens: int
    temperature: float = 0.0
    schema_name: str | None = None
    json_schema: dict[str, Any] | None = None
    priority: int | None = None  # sent only to servers that take SGLang's field (see SERVER_PRIORITY)


class ChatReply(BaseModel):
    text: str
    finish_reason: str | None = None  # the server's ("stop", "length"), or WATCH_STOP
    prompt_tokens: int = 0
    # True when the server did not say how long the prompt was and ``prompt_tokens`` is the
    # client's estimate: a streamed reply without usage (llama-cpp-python's server never sends it,
    # and no server does for a reply stopped by its watch).
    prompt_tokens_estimated: bool = False
    completion_tokens: int = 0
    cached_tokens: int | None = None
    transport_retries: int = 0
    from_cache: bool = False  # answered by the reply cache, at no cost


@runtime_checkable
class LLMClient(Protocol):
    """An async chat client. ``describe()`` names the server or model in messages and traces."""

    async def chat(self, request: ChatRequest, watch: ReplyWatch | None = None) -> ChatReply:
        """The model's reply to ``request``. With a ``watch``, a client that can stream the reply
        calls it as the text grows and, once it returns True, stops the call at once (the server's
        slot or the model is free again) and returns the text so far with ``finish_reason``
        ``WATCH_STOP``; ``completion_tokens`` are then the tokens received. A client that cannot
        stream never calls the watch and returns the whole reply, as without one."""
        ...

    async def context_window(self) -> int | None:
        """The served context length in tokens, when the server tells it."""
        ...

    async def token_counter(self) -> TokenCounter | None:
        """A counter of the served model's own tokens, when there is one."""
        ...

    async def worker_count(self) -> int:
        """How many servers answer behind this client: a gateway's healthy workers, else 1."""
        ...

    async def parallel_requests(self) -> int | None:
        """How many requests the model behind this client runs at once, when that is known and
        small (llama.cpp's slots, the embedded model's one); None for a batching server."""
        ...

    async def model_name(self) -> str:
        """The name of the model that answers: its GGUF file's path in-process, else the id the
        server lists. Model profiles (``PipelineConfig.for_model``) and the reply cache key on it."""
        ...

    def describe(self) -> str: ...

    async def aclose(self) -> None: ...
