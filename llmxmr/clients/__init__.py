"""LLM clients: one protocol (``base.LLMClient``), an OpenAI-compatible HTTP client, the embedded
llama.cpp model, and a scripted fake for tests."""

from __future__ import annotations

from ..config import PipelineConfig
from .base import ChatReply, ChatRequest, LLMClient


def make_client(config: PipelineConfig) -> LLMClient:
    """The server the config names, or the embedded model when it names none; behind the reply
    cache when ``llm.cache`` names one."""
    client = _model_client(config)
    if config.llm.cache is None:
        return client
    from .cache import CachedClient

    return CachedClient(client, config.llm.cache, _identity(config), sampled=config.llm.cache_sampled)


def _identity(config: PipelineConfig) -> str:
    """What changes the replies besides the model the client names: a string cap changes the
    grammar."""
    if config.llm.base_url:
        return f"max_string_chars={config.llm.max_string_chars}" if config.llm.max_string_chars else ""
    return f"max_string_chars={config.embedded.max_string_chars}"


def _model_client(config: PipelineConfig) -> LLMClient:
    llm = config.llm
    if llm.base_url:
        from .openai_compat import OpenAICompatibleClient

        return OpenAICompatibleClient(
            llm.base_url,
            api_key=llm.api_key.get_secret_value() if llm.api_key else None,
            model=llm.model,
            timeout_s=llm.timeout_s,
            max_retries=llm.max_retries,
            max_string_chars=llm.max_string_chars,
        )
    from .embedded import EmbeddedLlamaClient

    embedded = config.embedded
    return EmbeddedLlamaClient(
        embedded.model_path,
        n_ctx=embedded.n_ctx,
        threads=embedded.threads,
        max_string_chars=embedded.max_string_chars,
        extra_buffers=embedded.extra_buffers,
        state_cache_mb=embedded.state_cache_mb,
    )


__all__ = ["ChatReply", "ChatRequest", "LLMClient", "make_client"]
