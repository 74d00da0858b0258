"""The baseline without map-reduce: one call over the whole document, with the middle of the
document cut out until the prompt fits the window — what InfiniteBench does for every model whose
window is shorter than the input (``truncate_input(..., manner="middle")``: the first half and the
last half of the budget are kept, joined as they are).

Unlike InfiniteBench, only the document is cut, never the instructions around it, and the reply is
free text: the baseline asks exactly what the benchmark asks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from pydantic import BaseModel

from .budget import MIN_CHUNK_TOKENS, context_window_of, prompt_tokens, token_counter_for
from .clients import config_for_client
from .clients.base import ChatRequest, LLMClient
from .config import PipelineConfig
from .errors import ContextTooSmallError, UsageError
from .prompts import ChatMessage
from .structured import add_usage
from .tokens import TokenCounter, budget_with_margin
from .trace import CallRecord, Trace

# Each re-cut aims this much below the budget, so that a count that lands just over it converges.
_RECUT_SLACK = 0.98
_MAX_RECUTS = 8


class DirectResult(BaseModel):
    answer: str
    model: str
    document_tokens: int
    kept_tokens: int
    trace: Trace

    @property
    def truncated(self) -> bool:
        return self.kept_tokens < self.document_tokens


async def answer_directly(
    client: LLMClient,
    config: PipelineConfig,
    build_messages: Callable[[str], list[ChatMessage]],
    document: str,
    max_tokens: int,
) -> DirectResult:
    """One call with ``build_messages(document)``, the document's middle cut to fit the window.

    Tokens are counted in a worker thread: a long document (or a server's tokenize endpoint) holds
    the counter for a while, and the event loop stays free for the other examples' calls in flight.
    A failed call (after the client's own retries) raises ``LLMCallError``: with one call there is
    no partial result to keep."""
    if not document.strip():
        raise UsageError("the document is empty")
    started = time.perf_counter()
    config = await config_for_client(config, client)
    counter = await token_counter_for(config, client)
    window = await context_window_of(config, client)
    instructions = await asyncio.to_thread(prompt_tokens, build_messages(""), counter)
    room = budget_with_margin(window, counter, config.chunking.safety_margin) - instructions - max_tokens
    if room < MIN_CHUNK_TOKENS:
        raise ContextTooSmallError(
            f"the context window ({window} tokens) leaves {max(room, 0)} tokens for the document "
            f"after the prompt and a {max_tokens}-token reply"
        )
    document_tokens, kept, kept_tokens = await asyncio.to_thread(_cut_to_fit, document, room, counter)
    reply = await client.chat(
        ChatRequest(messages=build_messages(kept), max_tokens=max_tokens, temperature=config.llm.temperature)
    )
    record = CallRecord(
        stage="direct",
        chunk_indices=[],
        model=await client.model_name(),
        attempts=1,
        output={"text": reply.text, "finish_reason": reply.finish_reason},
    )
    add_usage(record, reply)
    record.latency_s = round(time.perf_counter() - started, 4)
    trace = Trace(calls=[record], wall_time_s=time.perf_counter() - started)
    return DirectResult(
        answer=reply.text.strip(),
        model=client.describe(),
        document_tokens=document_tokens,
        kept_tokens=kept_tokens,
        trace=trace,
    )


def _cut_to_fit(document: str, budget: int, counter: TokenCounter) -> tuple[int, str, int]:
    """The document's tokens, and the document cut to ``budget`` tokens with its own count."""
    document_tokens = counter.count_batch([document])[0]
    return (document_tokens, *cut_middle(document, document_tokens, budget, counter))


def cut_middle(text: str, tokens: int, budget: int, counter: TokenCounter) -> tuple[str, int]:
    """``text`` with its middle removed so that at most ``budget`` tokens remain: the first and
    last halves of what fits, joined directly. Returns the text and its token count.

    Cuts are made in characters, sized by the text's own characters per token, and re-measured;
    this needs no tokenizer that can decode, so it works with a server's count-only endpoint."""
    if tokens <= budget:
        return text, tokens
    keep_chars = int(len(text) * budget / tokens)
    for _ in range(_MAX_RECUTS):
        head = keep_chars // 2
        kept = text[:head] + text[len(text) - (keep_chars - head) :]
        kept_tokens = counter.count_batch([kept])[0]
        if kept_tokens <= budget:
            return kept, kept_tokens
        keep_chars = int(keep_chars * budget / kept_tokens * _RECUT_SLACK)
    raise ContextTooSmallError(f"could not cut the document to {budget} tokens")
