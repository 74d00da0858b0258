"""How many tokens each stage may give to document text or partial answers.

Everything that is not document text is measured: the rendered prompt without its variable part,
an allowance for the chat template's role markers, and the reply's ``max_tokens``. When the token
counter is not the served model's own, a safety margin of the window stays free.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel

from .clients.base import LLMClient
from .config import PipelineConfig
from .errors import ConfigError, ContextTooSmallError
from .prompts import ChatMessage, PromptSet
from .stages.collapse import collapse_messages
from .stages.map import map_messages
from .stages.reduce import reduce_messages
from .tokens import HFTokenizerCounter, TiktokenCounter, TokenCounter, budget_with_margin

# Role markers and separators a chat template adds around each message (ChatML: about 5 tokens).
TEMPLATE_TOKENS_PER_MESSAGE = 8
# Below this, chunks are too small to be worth a call each.
MIN_CHUNK_TOKENS = 64
# Header and separator that ``render_partials`` adds around one partial answer.
PARTIAL_HEADER_TOKENS = 24


class TokenPlan(BaseModel):
    """Tokens each stage may give to document text (maps) or partial answers (collapse, reduce).
    Not to be confused with ``scheduling.CallBudget``, the calls in flight."""

    window: int
    usable: int
    chunk_tokens: int
    collapse_tokens: int
    reduce_tokens: int


async def token_counter_for(config: PipelineConfig, client: LLMClient) -> TokenCounter:
    """The counter ``llm.tokenizer`` names: the served model's own when it can be had (``auto``)."""
    setting = config.llm.tokenizer
    if setting == "tiktoken":
        return TiktokenCounter()
    if setting in ("auto", "server"):
        counter = await client.token_counter()
        if counter is not None:
            return counter
        if setting == "server":
            raise ConfigError(
                f"{client.describe()} has no tokenize endpoint; use --tokenizer tiktoken or a local tokenizer directory"
            )
        return TiktokenCounter()
    return HFTokenizerCounter(setting)


async def context_window_of(config: PipelineConfig, client: LLMClient) -> int:
    """``llm.context_window``, or what the server reports."""
    window = config.llm.context_window or await client.context_window()
    if window is None:
        raise ConfigError(
            f"the context window of {client.describe()} is unknown: set llm.context_window "
            "in the config or pass --context-window"
        )
    return window


async def concurrency_of(config: PipelineConfig, client: LLMClient) -> int:
    """``llm.concurrency``, or ``llm.concurrency_per_worker`` for each server behind the client, but
    no more than the model runs at once."""
    if config.llm.concurrency is not None:
        return config.llm.concurrency
    per_server = config.llm.concurrency_per_worker * await client.worker_count()
    # A model that runs one request at a time (the embedded one, llama-cpp-python's server) would
    # take queued calls in arrival order: held here instead, they go in the call budget's order
    # (chunk-major, later stages first), which is what lets a chunk's questions reuse its prefix.
    parallel = await client.parallel_requests()
    return min(per_server, parallel) if parallel else per_server


def prompt_tokens(messages: list[ChatMessage], counter: TokenCounter) -> int:
    (tokens,) = prompts_tokens([messages], counter)
    return tokens


def prompts_tokens(prompts: Sequence[Sequence[ChatMessage]], counter: TokenCounter) -> list[int]:
    """``prompt_tokens`` of each prompt, counted in one batch, each distinct text once (prompts
    that share a system message, or a chunk, count it once)."""
    texts = list(dict.fromkeys(message.content for messages in prompts for message in messages))
    counts = dict(zip(texts, counter.count_batch(texts), strict=True))
    return [
        sum(counts[message.content] for message in messages) + TEMPLATE_TOKENS_PER_MESSAGE * (len(messages) + 1)
        for messages in prompts
    ]


def question_allowance(config: PipelineConfig, questions: list[str], window: int, counter: TokenCounter) -> int:
    """Tokens every map prompt keeps for its question: ``chunking.question_tokens`` (at most a
    sixteenth of the window), or the longest question's if longer. Chunks are sized by this
    allowance rather than by the question asked, so a document cuts into the same chunks for every
    question of a run, and for the next run."""
    return max([min(config.chunking.question_tokens, window // 16), *counter.count_batch(questions)])


@dataclass(frozen=True)
class ModelWindow:
    """What sizes the prompts of one stage: its settings (with its model's profile), its model's
    context window and token counter."""

    config: PipelineConfig
    window: int
    counter: TokenCounter

    @property
    def usable(self) -> int:
        return budget_with_margin(self.window, self.counter, self.config.chunking.safety_margin)


async def plan_questions(
    prompts: PromptSet,
    questions: list[str],
    map_model: ModelWindow,
    collapse_model: ModelWindow | None = None,
    reduce_model: ModelWindow | None = None,
) -> list[TokenPlan]:
    """The token plan of each question of a run over one document (``plan_tokens``), with one
    question allowance for them all (their chunks are the same). Chunks are sized by the map's
    model, collapse groups and the reduce prompt by theirs (by default the map's)."""
    config, window, counter = map_model.config, map_model.window, map_model.counter
    allowance = await asyncio.to_thread(question_allowance, config, questions, window, counter)
    merging = {"collapse_model": collapse_model, "reduce_model": reduce_model}
    return [plan_tokens(config, prompts, question, window, counter, allowance, **merging) for question in questions]


def plan_tokens(
    config: PipelineConfig,
    prompts: PromptSet,
    question: str,
    window: int,
    counter: TokenCounter,
    allowance: int,
    *,
    collapse_model: ModelWindow | None = None,
    reduce_model: ModelWindow | None = None,
) -> TokenPlan:
    """The token plan of one question; its map part is sized by ``allowance`` (see
    ``question_allowance``), not by the question. ``config``, ``window`` and ``counter`` are the
    map's model's; the collapse and reduce budgets are their own model's (by default the map's)."""
    mapping = ModelWindow(config, window, counter)
    collapsing, reducing = collapse_model or mapping, reduce_model or mapping
    usable = mapping.usable
    map_fixed = (
        prompt_tokens(map_messages(prompts, "", ""), counter)
        + allowance * prompts.question_slots
        + config.generation.map_max_tokens
    )
    chunk_tokens = usable - map_fixed
    if config.chunking.chunk_tokens is not None:
        chunk_tokens = min(chunk_tokens, config.chunking.chunk_tokens)
    if chunk_tokens < MIN_CHUNK_TOKENS:
        raise ContextTooSmallError(
            f"the context window ({window} tokens) is too small: the map prompt and its reply need "
            f"{map_fixed} of the {usable} usable tokens, leaving {max(chunk_tokens, 0)} for text "
            f"(at least {MIN_CHUNK_TOKENS} needed)"
        )
    collapse_fixed = prompt_tokens(collapse_messages(prompts, question, []), collapsing.counter)
    reduce_fixed = prompt_tokens(reduce_messages(prompts, question, []), reducing.counter)
    plan = TokenPlan(
        window=window,
        usable=usable,
        chunk_tokens=chunk_tokens,
        collapse_tokens=collapsing.usable - collapse_fixed - collapsing.config.generation.collapse_max_tokens,
        reduce_tokens=reducing.usable - reduce_fixed - reducing.config.generation.reduce_max_tokens,
    )
    # A partial is a map reply (the map model's length) or a collapse reply (the collapse model's).
    largest_partial = (
        max(config.generation.map_max_tokens, collapsing.config.generation.collapse_max_tokens) + PARTIAL_HEADER_TOKENS
    )
    if min(plan.collapse_tokens, plan.reduce_tokens) < 2 * largest_partial:
        merging = sorted({collapsing.window, reducing.window})
        windows = " and ".join(f"{w}" for w in merging)
        raise ContextTooSmallError(
            f"the context window ({windows} tokens) is too small to merge two partial answers of up "
            f"to {largest_partial} tokens; lower generation.*_max_tokens or use a larger window"
        )
    return plan
