"""The one protocol every LLM client implements, and the values that cross it."""

from __future__ import annotations

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
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int | None = None
    transport_retries: int = 0
    from_cache: bool = False  # answered by the reply cache, at no cost


@runtime_checkable
class LLMClient(Protocol):
    """An async chat client. ``describe()`` names the server or model in messages and traces."""

    async def chat(self, request: ChatRequest) -> ChatReply: ...

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
