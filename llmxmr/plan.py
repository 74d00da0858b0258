"""The plan of one reading: all that a run over a document settles before its first call.

``plan_reading`` goes from the config to the task family, the prompts the calls use, the token
counter, each question's token plan (``budget``) and the chunks. The pipeline runs the plan;
``--dry-run`` (``estimate``) prices the same plan without calling the model.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from .budget import TokenPlan, plan_questions, token_counter_for
from .chunking import Chunk, chunk_text
from .clients.base import LLMClient
from .clients.tokenize import ServerTokenCounter
from .config import PipelineConfig
from .errors import UsageError
from .families import QuotingFamily, family
from .families.workarounds import maps_for_the_model
from .prompts import PromptSet
from .schemas import MapOutput
from .tokens import TiktokenCounter, TokenCounter


@dataclass(frozen=True)
class ReadingPlan:
    """A document's questions as a run asks them, and what it will ask them with."""

    family: QuotingFamily
    prompts: PromptSet  # the family's, with the map layout and reply shape the model's profile asks for
    map_output: type[MapOutput]  # the map reply's type, in that shape
    counter: TokenCounter
    questions: list[str]
    token_plans: list[TokenPlan]  # one per question, in order
    chunks: list[Chunk]
    # How many texts the counter had estimated when planning began (see ``counts_estimated``).
    estimated_before: int

    @property
    def window(self) -> int:
        return self.token_plans[0].window

    @property
    def chunk_tokens(self) -> int:
        """The most document tokens a chunk holds: the same for every question, since the question
        allowance, not the question, sizes the chunks."""
        return self.token_plans[0].chunk_tokens

    def counts_estimated(self) -> int:
        """How many texts the counter estimated since planning began, because the server did not
        count them in time. A client's counter is shared by a batch's runs: this run's share, about."""
        return _estimated_so_far(self.counter) - self.estimated_before


async def plan_reading(
    config: PipelineConfig,
    client: LLMClient,
    questions: Sequence[str],
    document_text: str,
    last_chunking: LastChunking | None = None,
) -> ReadingPlan:
    """The plan of answering ``questions`` about ``document_text`` through ``client``, with
    ``config`` as it applies to the client's model (``clients.config_for_client``). With
    ``last_chunking``, a document chunked as last time is not chunked again."""
    asked = checked_questions(document_text, questions)
    policy = family(config.task_type)
    family_prompts, map_output = policy.map_reply(config.llm.map_reply)
    prompts = maps_for_the_model(family_prompts, config.llm.map_question_first)
    counter = await token_counter_for(config, client)
    estimated_before = _estimated_so_far(counter)
    token_plans = await plan_questions(config, client, prompts, asked, counter)
    chunk_tokens = token_plans[0].chunk_tokens
    if last_chunking is None:
        chunks = await asyncio.to_thread(cut_chunks, config, document_text, chunk_tokens, counter)
    else:
        chunks = await last_chunking.chunks(config, document_text, chunk_tokens, counter)
    return ReadingPlan(policy, prompts, map_output, counter, asked, token_plans, chunks, estimated_before)


def checked_questions(text: str, questions: Sequence[str]) -> list[str]:
    """The questions as a run asks them (stripped); no question, an empty one or an empty
    document is a ``UsageError``."""
    asked = [question.strip() for question in questions]
    if not asked or not all(asked):
        raise UsageError("the question is empty" if asked else "no question was asked")
    if not text.strip():
        raise UsageError("the document is empty")
    return asked


def cut_chunks(config: PipelineConfig, text: str, chunk_tokens: int, counter: TokenCounter) -> list[Chunk]:
    """The chunks a run cuts ``text`` into (``chunking.chunk_text`` with the config's settings)."""
    return chunk_text(
        text,
        chunk_tokens,
        counter,
        # A tokenizer behind HTTP checks whole chunks; sentences are estimated locally.
        estimator=TiktokenCounter() if isinstance(counter, ServerTokenCounter) else None,
        overlap_tokens=config.chunking.overlap_tokens,
        min_fill=config.chunking.min_fill,
    )


class LastChunking:
    """The chunks last cut, and what they were cut from and how: a pipeline asked about the same
    document again (``llmxmr chat``) reuses them."""

    def __init__(self) -> None:
        self._key: tuple[object, ...] | None = None
        self._chunks: list[Chunk] = []

    async def chunks(self, config: PipelineConfig, text: str, chunk_tokens: int, counter: TokenCounter) -> list[Chunk]:
        """``cut_chunks``, unless the last call cut the same text the same way."""
        chunking = config.chunking
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        key = (digest, chunk_tokens, counter.name, chunking.overlap_tokens, chunking.min_fill)
        if key != self._key:
            chunks = await asyncio.to_thread(cut_chunks, config, text, chunk_tokens, counter)
            self._key, self._chunks = key, chunks
        return self._chunks


def _estimated_so_far(counter: TokenCounter) -> int:
    return counter.estimated if isinstance(counter, ServerTokenCounter) else 0
