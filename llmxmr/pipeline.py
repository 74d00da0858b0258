"""MapReducePipeline: chunk, map concurrently, collapse until the partials fit, reduce.

``arun`` is the core (async, one semaphore bounds the calls in flight); ``run`` wraps it for
synchronous callers.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Iterable
from typing import TypeVar

from pydantic import BaseModel
from tqdm import tqdm

from .budget import PARTIAL_HEADER_TOKENS, Budget, context_window_of, plan_budget, token_counter_for
from .chunking import Chunk, chunk_text
from .clients import make_client
from .clients.base import LLMClient
from .config import PipelineConfig
from .errors import LLMCallError, UsageError
from .prompts import ChatMessage, PromptSet, load_prompts
from .schemas import CollapseOutput, FinalAnswer, MapOutput
from .stages import collapse, reduce
from .stages.map import checked_retrieval_answer, map_messages
from .stages.partials import Partial, render_partial
from .structured import call_structured
from .tokens import ServerTokenCounter, TiktokenCounter, TokenCounter
from .trace import CallRecord, CallStage, Trace

T = TypeVar("T")
Output = TypeVar("Output", bound=BaseModel)


class ChunkSpan(BaseModel):
    index: int
    start: int
    end: int
    tokens: int


class PipelineResult(BaseModel):
    """The answer for the whole document, and how it was reached."""

    question: str
    task_type: str
    answer: str
    rationale: str
    confidence: float
    supporting_chunks: list[int]
    found: bool
    model: str
    chunks: list[ChunkSpan]
    failed_calls: list[CallRecord]
    trace: Trace


class MapReducePipeline:
    """``MapReducePipeline(config).run(document, question)``; ``await pipeline.arun(...)`` in async
    code. Without a ``client``, each run opens the one the config names (a server, or the embedded
    model) and closes it at the end. A given client is left open for the caller to reuse across
    ``arun`` calls in one event loop (``run`` starts a new loop each time)."""

    def __init__(
        self, config: PipelineConfig | None = None, *, client: LLMClient | None = None, progress: bool = False
    ) -> None:
        self.config = config or PipelineConfig.load()
        self._client = client
        self._progress = progress

    def run(self, document: str, question: str) -> PipelineResult:
        return asyncio.run(self.arun(document, question))

    async def arun(self, document: str, question: str) -> PipelineResult:
        question = question.strip()
        if not question:
            raise UsageError("the question is empty")
        if not document.strip():
            raise UsageError("the document is empty")
        client = self._client or make_client(self.config)
        try:
            return await _Run(self.config, client, self._progress).execute(document, question)
        finally:
            if self._client is None:
                await client.aclose()


class _Run:
    """The state of one run: its client, prompts, budget, semaphore, trace and progress bar."""

    def __init__(self, config: PipelineConfig, client: LLMClient, progress: bool) -> None:
        self.config = config
        self.client = client
        self.prompts: PromptSet = load_prompts(config.task_type)
        self.trace = Trace()
        self.failed: list[CallRecord] = []
        self.semaphore = asyncio.Semaphore(config.llm.concurrency)
        self.bar = tqdm(total=0, desc="map", unit="call", file=sys.stderr, disable=not progress, leave=False)

    async def execute(self, document: str, question: str) -> PipelineResult:
        started = time.perf_counter()
        try:
            counter = await token_counter_for(self.config, self.client)
            budget = await self._budget(question, counter)
            chunks = await asyncio.to_thread(
                chunk_text,
                document,
                budget.chunk_tokens,
                counter,
                # A tokenizer behind HTTP checks whole chunks; sentences are estimated locally.
                estimator=TiktokenCounter() if isinstance(counter, ServerTokenCounter) else None,
                overlap_tokens=self.config.chunking.overlap_tokens,
                min_fill=self.config.chunking.min_fill,
            )
            partials = await self._map(chunks, question)
            if partials:
                partials = await self._collapse(partials, question, budget, counter)
            found = bool(partials)
            final = await self._reduce(partials, question) if found else reduce.nothing_found()
        finally:
            self.bar.close()
            self.trace.wall_time_s = time.perf_counter() - started
        return PipelineResult(
            question=question,
            task_type=self.config.task_type,
            answer=final.answer,
            rationale=final.rationale,
            confidence=final.confidence,
            supporting_chunks=final.supporting_chunks,
            found=found,
            model=self.client.describe(),
            chunks=[ChunkSpan(index=c.index, start=c.start, end=c.end, tokens=c.tokens) for c in chunks],
            failed_calls=self.failed,
            trace=self.trace,
        )

    async def _budget(self, question: str, counter: TokenCounter) -> Budget:
        window = await context_window_of(self.config, self.client)
        return plan_budget(self.config, self.prompts, question, window, counter)

    async def _call(
        self,
        stage: CallStage,
        messages: list[ChatMessage],
        output_type: type[Output],
        chunk_indices: list[int],
        max_tokens: int,
    ) -> tuple[Output | None, CallRecord]:
        """One structured call under the run's concurrency limit, recorded in the trace."""
        async with self.semaphore:
            output, record = await call_structured(
                self.client,
                messages,
                output_type,
                stage=stage,
                chunk_indices=chunk_indices,
                max_tokens=max_tokens,
                temperature=self.config.llm.temperature,
                attempts=self.config.generation.validation_attempts,
            )
        self.trace.calls.append(record)
        self.bar.update(1)
        if record.error:
            self.failed.append(record)
            if self.config.on_chunk_error == "fail":
                raise LLMCallError(
                    f"{record.stage} call for chunk(s) {record.chunk_indices} failed: {record.error}"
                )
        return output, record

    async def _map(self, chunks: list[Chunk], question: str) -> list[Partial]:
        self.bar.total += len(chunks)
        self.bar.refresh()

        async def map_one(chunk: Chunk) -> Partial | None:
            output, record = await self._call(
                "map",
                map_messages(self.prompts, question, chunk.text),
                MapOutput,
                [chunk.index],
                self.config.generation.map_max_tokens,
            )
            if output is None:
                return None
            if self.prompts.family == "retrieval" and output.answer:
                answer, record.check = checked_retrieval_answer(
                    output.answer, output.extracted_information, question, chunk.text
                )
                if answer is None:
                    return None
                output = output.model_copy(update={"answer": answer})
            return Partial(chunk_indices=[chunk.index], answer=output)

        # The first call runs alone: it puts the prompt prefix every map call shares into the
        # server's prefix cache (SGLang's radix cache, llama.cpp's slot cache), so the calls that
        # follow reuse it instead of all computing it at once.
        results = [await map_one(chunks[0])] if chunks else []
        results += await gather_or_cancel(map_one(chunk) for chunk in chunks[1:])
        return [p for p in results if p is not None and p.answer.has_information]

    async def _collapse(
        self, partials: list[Partial], question: str, budget: Budget, counter: TokenCounter
    ) -> list[Partial]:
        while len(partials) > 1:
            rendered = [render_partial(p) for p in partials]
            sizes = [n + PARTIAL_HEADER_TOKENS for n in await asyncio.to_thread(counter.count_batch, rendered)]
            if sum(sizes) <= budget.reduce_tokens:
                return partials
            groups = collapse.group_to_fit(sizes, budget.collapse_tokens)
            if all(len(group) == 1 for group in groups):  # never stall: merge neighbours in pairs
                groups = [range(i, min(i + 2, len(partials))) for i in range(0, len(partials), 2)]
            self.bar.set_description("collapse")
            self.bar.total += sum(1 for group in groups if len(group) > 1)
            self.bar.refresh()
            merged = await gather_or_cancel(self._collapse_group([partials[i] for i in g], question) for g in groups)
            partials = [p for p in merged if p.answer.has_information]
        return partials

    async def _collapse_group(self, group: list[Partial], question: str) -> Partial:
        if len(group) == 1:
            return group[0]
        output, _ = await self._call(
            "collapse",
            collapse.collapse_messages(self.prompts, question, group),
            CollapseOutput,
            collapse.merged_indices(group),
            self.config.generation.collapse_max_tokens,
        )
        if output is None:
            return collapse.fallback(group)
        return Partial(chunk_indices=collapse.merged_indices(group), answer=output)

    async def _reduce(self, partials: list[Partial], question: str) -> FinalAnswer:
        self.bar.set_description("reduce")
        self.bar.total += 1
        output, record = await self._call(
            "reduce",
            reduce.reduce_messages(self.prompts, question, partials),
            FinalAnswer,
            collapse.merged_indices(partials),
            self.config.generation.reduce_max_tokens,
        )
        if output is None:
            return reduce.fallback(partials)
        if self.prompts.family == "retrieval":
            output, record.check = reduce.checked_retrieval_final(output, partials)
        return reduce.known_chunks(output, partials)


async def gather_or_cancel(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """Run all, in order; if one raises, cancel the rest before re-raising (no orphan calls)."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
