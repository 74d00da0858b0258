"""The plan of one reading: all that a run over a document settles before its first call.

``plan_reading`` goes from each stage's model and settings (``stage_models``) to the task family,
the prompts the calls use, the token counters, each question's token plan (``budget``) and the
chunks. The pipeline runs the plan;
``--dry-run`` (``estimate``) prices the same plan without calling the model.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from .budget import ModelWindow, TokenPlan, context_window_of, plan_questions, token_counter_for
from .chunking import Chunk, chunk_text
from .clients.tokenize import ServerTokenCounter
from .config import STAGE_NAMES, PipelineConfig, StageName
from .errors import UsageError
from .families import QuotingFamily, family
from .families.workarounds import maps_for_the_model
from .prompts import PromptSet
from .schemas import MapOutput
from .stage_models import StageModels
from .tokens import TiktokenCounter, TokenCounter


@dataclass(frozen=True)
class ReadingPlan:
    """A document's questions as a run asks them, and what it will ask them with."""

    family: QuotingFamily
    prompts: PromptSet  # the family's, with the map layout and reply shape the map model's profile asks for
    map_output: type[MapOutput]  # the map reply's type, in that shape
    counter: TokenCounter  # the map model's: chunks and map prompts
    questions: list[str]
    token_plans: list[TokenPlan]  # one per question, in order
    chunks: list[Chunk]
    # How many texts the counters had estimated when planning began (see ``counts_estimated``).
    estimated_before: int
    # Each stage's settings, window and counter (the map's are ``counter`` and the token plans').
    models: dict[StageName, ModelWindow]

    @property
    def merge_counter(self) -> TokenCounter:
        """The collapse model's counter, which sizes partial answers for the collapse groups and
        the reduce prompt."""
        return self.models["collapse"].counter

    @property
    def window(self) -> int:
        return self.token_plans[0].window

    @property
    def chunk_tokens(self) -> int:
        """The most document tokens a chunk holds: the same for every question, since the question
        allowance, not the question, sizes the chunks."""
        return self.token_plans[0].chunk_tokens

    def counts_estimated(self) -> int:
        """How many texts the counters estimated since planning began, because the server did not
        count them in time. A client's counter is shared by a batch's runs: this run's share, about."""
        return _estimated_so_far(self._counters()) - self.estimated_before

    def _counters(self) -> list[TokenCounter]:
        return list({id(model.counter): model.counter for model in self.models.values()}.values())


async def plan_reading(
    models: StageModels,
    questions: Sequence[str],
    document_text: str,
    last_chunking: LastChunking | None = None,
) -> ReadingPlan:
    """The plan of answering ``questions`` about ``document_text`` with each stage's model
    (``stage_models.stage_models``: its client, and the settings as its profile has them).
    Chunks and map prompts follow the map model; collapse groups and the reduce prompt the
    collapse and reduce model. With ``last_chunking``, a document chunked as last time is not
    chunked again."""
    asked = checked_questions(document_text, questions)
    config = models.map.config
    policy = family(config.task_type)
    family_prompts, map_output = policy.map_reply(config.llm.map_reply)
    prompts = maps_for_the_model(family_prompts, config.llm.map_question_first)
    windows = await _model_windows(models)
    counter = windows["map"].counter
    estimated_before = _estimated_so_far(list({id(w.counter): w.counter for w in windows.values()}.values()))
    token_plans = await plan_questions(prompts, asked, windows["map"], windows["collapse"], windows["reduce"])
    chunk_tokens = token_plans[0].chunk_tokens
    if last_chunking is None:
        chunks = await asyncio.to_thread(cut_chunks, config, document_text, chunk_tokens, counter)
    else:
        chunks = await last_chunking.chunks(config, document_text, chunk_tokens, counter)
    return ReadingPlan(policy, prompts, map_output, counter, asked, token_plans, chunks, estimated_before, windows)


async def _model_windows(models: StageModels) -> dict[StageName, ModelWindow]:
    """Each stage's window and counter, each asked of its client once (``budget.token_counter_for``,
    ``budget.context_window_of``): stages that share a client and the settings read share them."""
    counters: dict[tuple[int, str], TokenCounter] = {}
    windows: dict[tuple[int, int | None], int] = {}
    found: dict[StageName, ModelWindow] = {}
    for stage in STAGE_NAMES:
        model = models.of(stage)
        llm = model.config.llm
        counter_key, window_key = (id(model.client), llm.tokenizer), (id(model.client), llm.context_window)
        if counter_key not in counters:
            counters[counter_key] = await token_counter_for(model.config, model.client)
        if window_key not in windows:
            windows[window_key] = await context_window_of(model.config, model.client)
        found[stage] = ModelWindow(model.config, windows[window_key], counters[counter_key])
    return found


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


def _estimated_so_far(counters: Sequence[TokenCounter]) -> int:
    return sum(counter.estimated for counter in counters if isinstance(counter, ServerTokenCounter))
