"""MapReducePipeline: chunk, map concurrently, collapse until the partials fit, reduce.

``arun`` is the core (async, a call budget bounds the calls in flight); ``run`` wraps it for
synchronous callers.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel, computed_field
from tqdm import tqdm

from .budget import PARTIAL_HEADER_TOKENS, Budget, concurrency_of, context_window_of, plan_budget, token_counter_for
from .chunking import Chunk, chunk_text
from .clients import make_client
from .clients.base import LLMClient
from .config import PipelineConfig
from .errors import LLMCallError, UsageError
from .grounding import Citation, DocumentIndex, quotes_evidence
from .prompts import ChatMessage, PromptSet, load_prompts
from .scheduling import CallBudget, gather_or_cancel, in_order
from .schemas import CollapseOutput, FinalAnswer, MapOutput
from .stages import collapse, reduce
from .stages.map import ground_map_reply, map_messages
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
    # The document's own words the answer rests on: quotes from the model, found in the text.
    citations: list[Citation]
    # False when no part of the document gave an answer backed by the text: ``answer`` is then
    # empty and ``rationale`` says why, rather than a guess.
    found: bool
    model: str
    chunks: list[ChunkSpan]
    # Chunks whose map call failed for good: their text was not read. The confidence is scaled by
    # the share of chunks that were read, since the answer may sit in the ones that were not.
    unread_chunks: list[int]
    failed_calls: list[CallRecord]
    trace: Trace

    @computed_field  # type: ignore[prop-decorator]
    @property
    def complete(self) -> bool:
        """False when some chunk went unread: a missing answer may then be in the text after all
        (the rationale names the chunks and why), and a rerun retries them."""
        return not self.unread_chunks


class MapReducePipeline:
    """``MapReducePipeline(config).run(document, question)``; ``await pipeline.arun(...)`` in async
    code. Without a ``client``, each run opens the one the config names (a server, or the embedded
    model) and closes it at the end. A given client is left open for the caller to reuse across
    ``arun`` calls in one event loop (``run`` starts a new loop each time).

    Without a ``budget``, each run may have ``llm.concurrency`` calls in flight (by default
    ``llm.concurrency_per_worker`` for each server behind the client). Runs given one budget share
    its calls: that is how a batch of documents keeps one limit for the whole server."""

    def __init__(
        self,
        config: PipelineConfig | None = None,
        *,
        client: LLMClient | None = None,
        budget: CallBudget | None = None,
        progress: bool = False,
    ) -> None:
        self.config = config or PipelineConfig.load()
        self._client = client
        self._calls = budget
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
            calls = self._calls or CallBudget(await concurrency_of(self.config, client))
            return await _Run(self.config, client, calls, self._progress).execute(document, question)
        finally:
            if self._client is None:
                await client.aclose()


class _Run:
    """The state of one run: its client, prompts, call budget and place in it, trace and progress
    bar."""

    def __init__(self, config: PipelineConfig, client: LLMClient, calls: CallBudget, progress: bool) -> None:
        self.config = config
        self.client = client
        self.prompts: PromptSet = load_prompts(config.task_type)
        self.trace = Trace()
        self.failed: list[CallRecord] = []
        self.calls = calls
        self.place = calls.join()
        self.tasks: list[asyncio.Future[Any]] = []
        self.bar = tqdm(total=0, desc="map", unit="call", file=sys.stderr, disable=not progress, leave=False)

    async def execute(self, document: str, question: str) -> PipelineResult:
        started = time.perf_counter()
        self.document = DocumentIndex(document)
        try:
            counter = await token_counter_for(self.config, self.client)
            estimated_before = counter.estimated if isinstance(counter, ServerTokenCounter) else 0
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
            maps = self._start_maps(chunks, question)
            if self.config.scheduler == "streaming":
                partials = await self._collapse_streaming(maps, question, budget, counter)
            else:
                partials = [p async for batch in in_order(maps) for p in batch if _informative(p)]
                partials = await self._collapse_in_rounds(partials, question, budget, counter)
            found = reduce.supported(partials)
            unread_note = reduce.unread_note([r for r in self.failed if r.stage == "map"], len(chunks))
            final = await self._reduce(partials, question) if found else reduce.nothing_found(len(partials), unread_note)
        except BaseException:
            await self._cancel_all()
            raise
        finally:
            self.bar.close()
            self.trace.wall_time_s = time.perf_counter() - started
        if isinstance(counter, ServerTokenCounter):  # shared by a batch's runs: this run's share, about
            self.trace.estimated_token_counts = counter.estimated - estimated_before
        unread = sorted(i for record in self.failed if record.stage == "map" for i in record.chunk_indices)
        rationale = final.rationale
        if found and unread_note:
            rationale = f"{rationale} {unread_note}, and the confidence is scaled by the share read."
        return PipelineResult(
            question=question,
            task_type=self.config.task_type,
            answer=final.answer,
            rationale=rationale,
            confidence=round(final.confidence * (1 - len(unread) / len(chunks)), 3) if unread else final.confidence,
            supporting_chunks=final.supporting_chunks,
            citations=reduce.citations_for(final, partials) if found else [],
            found=found,
            model=self.client.describe(),
            chunks=[ChunkSpan(index=c.index, start=c.start, end=c.end, tokens=c.tokens) for c in chunks],
            unread_chunks=unread,
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
        on_slot: Callable[[], None] | None = None,
    ) -> tuple[Output | None, CallRecord]:
        """One structured call within the call budget, recorded in the trace. Calls of later stages
        go first: they shorten the run's tail, and maps wait for nothing but slots. ``on_slot``
        is called once the call has its slot."""
        async with self.calls.slot(stage, self.place):
            if on_slot is not None:
                on_slot()
            output, record = await call_structured(
                self.client,
                messages,
                output_type,
                stage=stage,
                chunk_indices=chunk_indices,
                max_tokens=max_tokens,
                temperature=self.config.llm.temperature,
                attempts=self.config.generation.validation_attempts,
                omit_fields=() if quotes_evidence(self.prompts.family) else ("evidence",),
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

    def _spawn(self, awaitable: Awaitable[T]) -> asyncio.Future[T]:
        task = asyncio.ensure_future(awaitable)
        self.tasks.append(task)
        return task

    async def _cancel_all(self) -> None:
        """On failure or cancellation: no call of this run outlives it."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def _start_maps(self, chunks: list[Chunk], question: str) -> list[asyncio.Future[Partial | None]]:
        """One task per chunk, in order. The first call runs alone: it puts the prompt prefix
        every map call shares into the server's prefix cache (SGLang's radix cache, llama.cpp's
        slot cache), so the calls that follow reuse it instead of all computing it at once."""
        self.bar.total += len(chunks)
        self.bar.refresh()
        sent, warm = asyncio.Event(), asyncio.Event()

        async def first(chunk: Chunk) -> Partial | None:
            try:
                return await self._map_chunk(chunk, question, on_slot=sent.set)
            finally:
                sent.set()
                warm.set()

        async def later(chunk: Chunk) -> Partial | None:
            # The wait counts from when the first call is sent, not from when it was queued: in a
            # batch it may first wait behind other documents' calls for a slot.
            await sent.wait()
            try:  # a first call that hangs (retries, reasks) must not hold the whole run
                await asyncio.wait_for(warm.wait(), WARM_UP_WAIT_S)
            except asyncio.TimeoutError:
                pass
            if warming.done() and not warming.cancelled() and warming.exception() is not None:
                return None  # the run is failing (a refused key, on_chunk_error: fail): send nothing more
            return await self._map_chunk(chunk, question)

        warming = self._spawn(first(chunks[0])) if chunks else None
        return ([warming] if warming else []) + [self._spawn(later(chunk)) for chunk in chunks[1:]]

    async def _map_chunk(
        self, chunk: Chunk, question: str, on_slot: Callable[[], None] | None = None
    ) -> Partial | None:
        output, record = await self._call(
            "map",
            map_messages(self.prompts, question, chunk.text),
            MapOutput,
            [chunk.index],
            self.config.generation.map_max_tokens,
            on_slot,
        )
        if output is None:
            return None
        grounded = ground_map_reply(
            output, chunk, self.document, question, self.prompts.family, self.config.grounding
        )
        record.check = grounded.check
        return grounded.partial

    async def _sizes(self, partials: list[Partial], counter: TokenCounter) -> list[int]:
        rendered = [render_partial(p) for p in partials]
        return [n + PARTIAL_HEADER_TOKENS for n in await asyncio.to_thread(counter.count_batch, rendered)]

    async def _collapse_in_rounds(
        self, partials: list[Partial], question: str, budget: Budget, counter: TokenCounter
    ) -> list[Partial]:
        """The barrier scheduler: each round waits for all of the previous one."""
        while len(partials) > 1:
            sizes = await self._sizes(partials, counter)
            if sum(sizes) <= budget.reduce_tokens:
                return partials
            groups = [[partials[i] for i in g] for g in collapse.group_to_fit(sizes, budget.collapse_tokens)]
            if all(len(group) == 1 for group in groups):
                groups = collapse.pairs(partials)
            merged = await gather_or_cancel(self._collapse_group(group, question) for group in groups)
            partials = [p for p in merged if _informative(p)]
        return partials

    async def _collapse_streaming(
        self,
        level: list[asyncio.Future[Partial | None]],
        question: str,
        budget: Budget,
        counter: TokenCounter,
    ) -> list[Partial]:
        """The streaming scheduler: the same groups as ``_collapse_in_rounds``, each started as
        soon as its members are done and the round is known to be needed."""
        while True:
            partials, outputs = await self._stream_round(level, question, budget, counter)
            if outputs is None:
                return partials
            level = outputs

    async def _stream_round(
        self,
        inputs: list[asyncio.Future[Partial | None]],
        question: str,
        budget: Budget,
        counter: TokenCounter,
    ) -> tuple[list[Partial], list[asyncio.Future[Partial | None]] | None]:
        """One collapse round over ``inputs`` as they finish, in order. Greedy grouping closes a
        group as soon as the next partial would not fit it. A round is needed once the partials
        seen so far exceed the reduce budget; until then closed groups wait. Returns the round's
        partials and, if it collapsed, the futures of its groups (the next round's inputs)."""
        partials: list[Partial] = []
        groups: list[list[Partial]] = []
        outputs: list[asyncio.Future[Partial | None]] = []
        group: list[Partial] = []
        group_size = total = 0
        needed = False

        def launch(ready: list[list[Partial]]) -> None:
            for members in ready:
                outputs.append(self._spawn(self._collapse_group(members, question)))

        async for batch in in_order(inputs):
            arrived = [p for p in batch if _informative(p)]
            for partial, size in zip(arrived, await self._sizes(arrived, counter) if arrived else []):
                partials.append(partial)
                total += size
                if group and group_size + size > budget.collapse_tokens:
                    groups.append(group)
                    if needed:
                        launch([group])
                    group, group_size = [], 0
                group.append(partial)
                group_size += size
                if not needed and total > budget.reduce_tokens and len(partials) > 1:
                    needed = True
                    launch(groups)
        if not needed:
            return partials, None
        groups.append(group)
        if all(len(members) == 1 for members in groups):  # singletons cost no call: regroup them
            outputs.clear()
            launch(collapse.pairs(partials))
        else:
            launch([group])
        return partials, outputs

    async def _collapse_group(self, group: list[Partial], question: str) -> Partial:
        if len(group) == 1:
            return group[0]
        self.bar.set_description("collapse")
        self.bar.total += 1
        output, record = await self._call(
            "collapse",
            collapse.collapse_messages(self.prompts, question, group),
            CollapseOutput,
            collapse.merged_indices(group),
            self.config.generation.collapse_max_tokens,
        )
        if output is None:
            return collapse.fallback(group)
        partial, record.check = collapse.ground_collapse_reply(output, group, self.prompts.family, self.config.grounding)
        return partial

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


# How long the other map calls wait for the first one (which warms the server's prefix cache)
# before they go anyway.
WARM_UP_WAIT_S = 30.0


def _informative(partial: Partial | None) -> bool:
    return partial is not None and partial.answer.has_information
