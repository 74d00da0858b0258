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

    return CachedClient(client, config.llm.cache, sampled=config.llm.cache_sampled)


async def config_for_client(config: PipelineConfig, client: LLMClient) -> PipelineConfig:
    """``config`` with the profile of the model ``client`` talks to (``PipelineConfig.for_model``):
    what a run uses once it knows its model."""
    return config.for_model(await client.model_name())


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
            safety_margin=config.chunking.safety_margin,
        )
    from .embedded import EmbeddedLlamaClient

    embedded = config.embedded
    return EmbeddedLlamaClient(
        embedded.model_path,
        n_ctx=embedded.n_ctx,
        threads=embedded.threads,
        extra_buffers=embedded.extra_buffers,
        state_cache_mb=embedded.state_cache_mb,
    )


__all__ = ["ChatReply", "ChatRequest", "LLMClient", "config_for_client", "make_client"]
