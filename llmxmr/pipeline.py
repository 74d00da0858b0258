"""MapReducePipeline: chunk, map concurrently, collapse until the partials fit, reduce.

``arun_many`` is the core (async, a call budget bounds the calls in flight; several questions share
one reading of the document); ``arun`` asks one question, ``run`` and ``run_many`` wrap them for
synchronous callers.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard, TypeVar

from pydantic import BaseModel, computed_field
from tqdm import tqdm

from .budget import PARTIAL_HEADER_TOKENS, TokenPlan, concurrency_of
from .chunking import Chunk
from .clients import config_for_client, make_client
from .clients.base import LLMClient
from .config import PipelineConfig
from .documents import Document
from .errors import LLMCallError
from .grounding import Citation, DocumentIndex
from .partials import Partial, render_partial
from .plan import LastChunking, ReadingPlan, checked_questions, plan_reading
from .prompts import ChatMessage
from .reuse import Origin, Reuse, SharedCalls, call_key
from .scheduling import CallBudget, gather_or_cancel, in_order
from .schemas import CollapseOutput, FinalAnswer, MapOutput
from .stages import collapse, reduce
from .stages.map import map_messages
from .stages.reduce import Status
from .structured import call_structured
from .trace import CallRecord, CallStage, Trace

T = TypeVar("T")
Output = TypeVar("Output", bound=BaseModel)


class ChunkSpan(BaseModel):
    index: int
    start: int
    end: int
    tokens: int


class PipelineResult(BaseModel):
    """The answer for the whole document, and how it was reached.

    ``status`` says what the result is: ``answered`` (an answer the text supports, at or above
    ``grounding.min_confidence``), ``unsupported`` (the model gave an answer the text does not
    support, or scores its supported answer below the threshold), ``not_found`` (every chunk read,
    no answer) or ``incomplete`` (nothing supported while some chunk went unread: the answer may be
    in it). ``answer`` holds an answer only when it is ``answered``; the model's unsupported answer
    is kept apart in ``unsupported_guess``, so that code reading ``answer`` never takes a guess
    for an answer."""

    question: str
    task_type: str
    status: Status
    # The answer; empty unless the status is ``answered`` (``rationale`` then says why).
    answer: str
    # What the model answered when the text does not support it (or its confidence is below the
    # threshold): its guess, kept for the record and for scoring as the model's text, never an answer.
    unsupported_guess: str | None = None
    rationale: str
    confidence: float
    supporting_chunks: list[int]
    # The document's own words the answer rests on: quotes from the model (or sentences of the
    # text) that hold the answer and are about what is asked, the best supporting first; empty
    # unless the status is ``answered``.
    citations: list[Citation]
    # Other passages the model quoted and the text holds, which do not support the answer: the
    # closest to the question first. Never the answer's citations.
    related: list[Citation] = []
    model: str
    # The model profile whose settings applied (configs/default.yaml: model_profiles), if any.
    model_profile: str | None = None
    chunks: list[ChunkSpan]
    # Chunks whose map call failed for good: their text was not read. The confidence is scaled by
    # the share of chunks that were read, since the answer may sit in the ones that were not.
    unread_chunks: list[int]
    failed_calls: list[CallRecord]
    trace: Trace
    # Map calls not made: each chunk whose prompt was identical to an earlier call's (the same
    # text and question) and got its reply (``llmxmr.reuse``). Its record in the trace has no
    # attempts and no tokens.
    reused: list[Reuse] = []

    @computed_field  # type: ignore[prop-decorator]
    @property
    def found(self) -> bool:
        """Whether the result holds an answer (``status`` is ``answered``)."""
        return self.status == "answered"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def complete(self) -> bool:
        """False when some chunk went unread: a missing answer may then be in the text after all
        (the rationale names the chunks and why), and a rerun retries them."""
        return not self.unread_chunks


class MapReducePipeline:
    """``MapReducePipeline(config).run(document, question)``; ``await pipeline.arun(...)`` in async
    code; ``run_many(document, questions)`` answers several questions for about the price of one
    reading. Without a ``client``, each run opens the one the config names (a server, or the
    embedded model) and closes it at the end. A given client is left open for the caller to reuse
    across ``arun`` calls in one event loop (``run`` starts a new loop each time).

    Without a ``budget``, each run may have ``llm.concurrency`` calls in flight (by default
    ``llm.concurrency_per_worker`` for each server behind the client). Runs given one budget share
    its calls: that is how a batch of documents keeps one limit for the whole server.

    A map call identical to another of the run (the same chunk text and question) is made once, and
    its reply given to every chunk that asks it (``llmxmr.reuse``). Runs given one ``shared_calls``
    (with one client) share their map calls too: that is how a batch reads text repeated across its
    documents once."""

    def __init__(
        self,
        config: PipelineConfig | None = None,
        *,
        client: LLMClient | None = None,
        budget: CallBudget | None = None,
        shared_calls: SharedCalls[MapOutput] | None = None,
        progress: bool = False,
    ) -> None:
        self.config = config or PipelineConfig.load()
        self._client = client
        self._calls = budget
        self._shared_calls = shared_calls
        self._progress = progress
        self._last_chunking = LastChunking()

    def run(self, document: str | Document, question: str) -> PipelineResult:
        return asyncio.run(self.arun(document, question))

    def run_many(self, document: str | Document, questions: Sequence[str]) -> list[PipelineResult]:
        return asyncio.run(self.arun_many(document, questions))

    async def arun(self, document: str | Document, question: str) -> PipelineResult:
        """The answer to ``question`` about ``document``: its text, or a ``Document`` from
        ``read_document``, whose citations then say on which page or in which section they are."""
        (result,) = await self.arun_many(document, [question])
        return result

    async def arun_many(self, document: str | Document, questions: Sequence[str]) -> list[PipelineResult]:
        """One result per question, in order. The document is indexed and chunked once, and the
        map calls go chunk-major with the document first in each prompt: every question about a
        chunk reuses the server's cached prefix of it (see ``_Run._start_maps``). Grounding,
        collapse and reduce run per question, as in a run of that question alone."""
        text = document.text if isinstance(document, Document) else document
        asked = checked_questions(text, questions)  # before a client is opened for nothing
        client = self._client or make_client(self.config)
        try:
            config = await config_for_client(self.config, client)
            calls = self._calls or CallBudget(await concurrency_of(config, client))
            shared = self._shared_calls or SharedCalls[MapOutput]()
            run = _Run(config, client, calls, shared, self._progress, self._last_chunking)
            results = await run.execute(text, asked)
        finally:
            if self._client is None:
                await client.aclose()
        if isinstance(document, Document):
            results = [
                r.model_copy(
                    update={
                        "citations": [located(c, document) for c in r.citations],
                        "related": [located(c, document) for c in r.related],
                    }
                )
                for r in results
            ]
        return results


def located(citation: Citation, document: Document) -> Citation:
    """The citation with the page or section of the original file that its span starts in."""
    where = document.locate(citation.start)
    label = where.label if where.page is not None or where.section else None
    return citation.model_copy(update={"page": where.page, "section": where.section, "location": label})


class _WarmUp:
    """The call that puts a prompt prefix in the server's cache, as the calls sharing it see it:
    ``ready`` is done once it is answered, or once it was sent ``WARM_UP_WAIT_S`` ago (a call
    that hangs in retries or reasks must not hold the others back), or once it failed."""

    def __init__(self) -> None:
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.failed_run = False

    def sent(self) -> None:
        asyncio.get_running_loop().call_later(WARM_UP_WAIT_S, self.done)

    def done(self) -> None:
        if not self.ready.done():
            self.ready.set_result(None)


@dataclass
class _Question:
    """One question of a run: what it asked, its place among the run's questions, and its calls."""

    text: str
    index: int
    trace: Trace = field(default_factory=Trace)
    failed: list[CallRecord] = field(default_factory=list)
    # Map answers that counted as no information (unsupported, under strict grounding or for
    # retrieval): the model's guesses, kept for a result without a supported answer.
    rejected: list[Partial] = field(default_factory=list)
    reused: list[Reuse] = field(default_factory=list)  # map calls not made (``PipelineResult.reused``)


class _Run:
    """The state of one run: its client, its plan (prompts, token plans, chunks), call budget and
    place in it, the map calls it shares and its number among their readings, the document as read
    once, its questions, and the progress bar."""

    plan: ReadingPlan

    def __init__(
        self,
        config: PipelineConfig,
        client: LLMClient,
        calls: CallBudget,
        shared: SharedCalls[MapOutput],
        progress: bool,
        last_chunking: LastChunking,
    ) -> None:
        self.config = config
        self.last_chunking = last_chunking  # the pipeline's, reused by its next run
        self.client = client
        self.calls = calls
        self.place = calls.join()
        self.shared = shared
        self.reading = shared.join()
        self.tasks: list[asyncio.Future[Any]] = []
        self.bar = tqdm(total=0, desc="map", unit="call", file=sys.stderr, disable=not progress, leave=False)

    def _expect(self, calls: int) -> None:
        """``calls`` more calls in the progress bar's total (tqdm types it as optional; it is set)."""
        self.bar.total = (self.bar.total or 0) + calls

    async def execute(self, document: str, questions: list[str]) -> list[PipelineResult]:
        started = time.perf_counter()
        self.document = DocumentIndex(document)
        try:
            self.plan = await plan_reading(self.config, self.client, questions, document, self.last_chunking)
            asked = [_Question(text, index) for index, text in enumerate(self.plan.questions)]
            maps = self._start_maps(self.plan.chunks, asked)
            results = await gather_or_cancel(
                self._answer(question, maps[question.index], token_plan, started)
                for question, token_plan in zip(asked, self.plan.token_plans, strict=True)
            )
        except BaseException:
            await self._cancel_all()
            raise
        finally:
            self.bar.close()
        estimated = self.plan.counts_estimated()
        if estimated:
            results = [
                r.model_copy(update={"trace": r.trace.model_copy(update={"estimated_token_counts": estimated})})
                for r in results
            ]
        return results

    async def _answer(
        self, question: _Question, maps: list[asyncio.Future[Partial | None]], token_plan: TokenPlan, started: float
    ) -> PipelineResult:
        """Collapse and reduce one question's map replies into its result."""
        chunks = self.plan.chunks
        if self.config.scheduler == "streaming":
            partials = await self._collapse_streaming(maps, question, token_plan)
        else:
            partials = [p async for batch in in_order(maps) for p in batch if _informative(p)]
            partials = await self._collapse_in_rounds(partials, question, token_plan)
        supported = reduce.supported(partials)
        final: FinalAnswer | None = None
        if partials:  # supported answers; or, under cap grounding, the model's guess from unsupported ones
            final = await self._reduce(partials, question, supported)
        elif question.rejected:
            final = reduce.best_guess(question.rejected)
        question.trace.wall_time_s = time.perf_counter() - started
        failed_maps = [record for record in question.failed if record.stage == "map"]
        cited = (
            self.plan.family.cited(final, [*partials, *question.rejected], question.text, self.document)
            if final
            else ([], [])
        )
        outcome = reduce.outcome(
            final,
            supported=supported,
            guesses=len(partials) or len(question.rejected),
            cited=cited,
            failed_maps=failed_maps,
            chunk_count=len(chunks),
            settings=self.config.grounding,
            partials=partials,
        )
        return PipelineResult(
            question=question.text,
            task_type=self.config.task_type,
            **dict(outcome),
            model=self.client.describe(),
            model_profile=self.config.model_profile,
            chunks=[ChunkSpan(index=c.index, start=c.start, end=c.end, tokens=c.tokens) for c in chunks],
            unread_chunks=sorted(i for record in failed_maps for i in record.chunk_indices),
            failed_calls=question.failed,
            trace=question.trace,
            reused=sorted(question.reused, key=lambda reuse: reuse.chunk),
        )

    async def _call(
        self,
        stage: CallStage,
        messages: list[ChatMessage],
        output_type: type[Output],
        chunk_indices: list[int],
        max_tokens: int,
        order: tuple[int, ...] = (),
        waits_for: _WarmUp | None = None,
        warms: _WarmUp | None = None,
    ) -> tuple[Output | None, CallRecord | None]:
        """One structured call within the call budget. Calls of later stages go first: they shorten
        the run's tail, and maps wait for nothing but slots; among a run's maps, ``order`` decides,
        and a map goes only once the call it ``waits_for`` is answered (no record, and no call, if
        that one failed the run). ``warms`` learns when this call was sent and answered. The caller
        hands the record to ``_record`` once it knows what its check of the output decided."""
        async with self.calls.slot(stage, self.place, order, waits_for.ready if waits_for else None):
            if waits_for is not None and waits_for.failed_run:
                return None, None  # the run is failing (a refused key, on_chunk_error: fail): send nothing more
            if warms is not None:
                warms.sent()
            output, record = await call_structured(
                self.client,
                messages,
                output_type,
                stage=stage,
                chunk_indices=chunk_indices,
                max_tokens=max_tokens,
                temperature=self.config.llm.temperature,
                attempts=self.config.generation.validation_attempts,
                omit_fields=self.plan.family.omitted_fields,
                max_string_chars=self.config.llm.max_string_chars,
            )
            if warms is not None:
                warms.done()  # before the slot is released: the calls that wait for it go next
        return output, record

    def _record(self, question: _Question, record: CallRecord, check: str | None = None) -> None:
        """Puts a finished call in its question's trace, with what the check of its output
        decided; a failed call stops the run when ``on_chunk_error`` says so."""
        if check is not None:
            record = record.model_copy(update={"check": check})
        question.trace.calls.append(record)
        self.bar.update(1)
        if record.error:
            question.failed.append(record)
            if self.config.on_chunk_error == "fail":
                raise LLMCallError(f"{record.stage} call for chunk(s) {record.chunk_indices} failed: {record.error}")

    def _spawn(self, awaitable: Awaitable[T]) -> asyncio.Future[T]:
        task = asyncio.ensure_future(awaitable)
        self.tasks.append(task)
        return task

    async def _cancel_all(self) -> None:
        """On failure or cancellation: no call of this run outlives it."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def _start_maps(
        self, chunks: list[Chunk], questions: list[_Question]
    ) -> list[list[asyncio.Future[Partial | None]]]:
        """One task per chunk and question; the futures of each question, in chunk order.

        Serving engines reuse a prompt prefix only once it is cached, so calls wait in line for
        the call whose prefix they share to be answered, and go chunk-major (by chunk, then
        question, in the call budget). The very first call runs alone: it caches the map
        instructions that every call shares. Then the first question's call of each chunk goes,
        and the other questions' calls of that chunk follow it as soon as it is answered, ahead of
        later chunks, reusing the chunk's prefix (on a server with one slot and in-process too,
        where the previous prompt is the cache), while other chunks' calls keep the server busy."""
        self._expect(len(chunks) * len(questions))
        self.bar.refresh()
        futures: list[list[asyncio.Future[Partial | None]]] = [[] for _ in questions]
        first: _WarmUp | None = None
        for chunk in chunks:
            leading = _WarmUp()
            futures[0].append(self._spawn(self._map_chunk(chunk, questions[0], first, leading)))
            first = first or leading
            for question in questions[1:]:
                futures[question.index].append(self._spawn(self._map_chunk(chunk, question, leading)))
        return futures

    async def _map_chunk(
        self, chunk: Chunk, question: _Question, waits_for: _WarmUp | None, warms: _WarmUp | None = None
    ) -> Partial | None:
        """The map call of ``chunk`` for ``question``, once the call whose prefix it shares
        (``waits_for``) is answered; ``warms`` is done once this call is. A call identical to one
        in flight or done is not made: its reply is that call's (``llmxmr.reuse``)."""
        messages = map_messages(self.plan.prompts, question.text, chunk.text)
        try:
            (output, record), source = await self.shared.call(
                self._map_key(messages),
                Origin(self.reading, chunk.index),
                lambda: self._call(
                    "map",
                    messages,
                    self.plan.map_output,
                    [chunk.index],
                    self.config.generation.map_max_tokens,
                    order=(chunk.index, question.index),
                    waits_for=waits_for,
                    warms=warms,
                ),
                # Waiting for an identical call that warms the same prefix: as long as a call sent.
                warms.sent if warms is not None else None,
            )
        except BaseException:
            if warms is not None:
                warms.failed_run = True
            raise
        finally:
            if warms is not None:
                warms.done()
        if record is None:
            return None
        if source is not None:
            reuse = Reuse(chunk=chunk.index, source_chunk=source.chunk, same_document=source.reading == self.reading)
            question.reused.append(reuse)
        if output is None:
            self._record(question, record)
            return None
        grounded = self.plan.family.ground_map(output, chunk, self.document, question.text, self.config.grounding)
        self._record(question, record, grounded.check)
        if grounded.rejected is not None:
            question.rejected.append(grounded.rejected)
        return grounded.partial

    def _map_key(self, messages: list[ChatMessage]) -> str | None:
        """What decides a map call's reply (``reuse.call_key``): its messages, the family, and
        every setting of the calls (the reply's shape and length, its string cap, the temperature,
        the attempts), the few that do not matter included. None for a sampled call, a draw of its
        own unless ``llm.cache_sampled`` says otherwise."""
        llm = self.config.llm
        if llm.temperature > 0 and not llm.cache_sampled:
            return None
        settings = (self.config.task_type, llm.model_dump(mode="json"), self.config.generation.model_dump(mode="json"))
        return call_key(messages, settings)

    async def _sizes(self, partials: list[Partial]) -> list[int]:
        rendered = [render_partial(p) for p in partials]
        return [n + PARTIAL_HEADER_TOKENS for n in await asyncio.to_thread(self.plan.counter.count_batch, rendered)]

    async def _collapse_in_rounds(
        self, partials: list[Partial], question: _Question, token_plan: TokenPlan
    ) -> list[Partial]:
        """The barrier scheduler: each round waits for all of the previous one."""
        while len(partials) > 1:  # one partial needs no sizes to go to the reduce
            sizes = await self._sizes(partials)
            groups = collapse.collapse_round(sizes, token_plan.collapse_tokens, token_plan.reduce_tokens)
            if groups is None:
                break
            merged = await gather_or_cancel(self._collapse_group([partials[i] for i in g], question) for g in groups)
            partials = [p for p in merged if _informative(p)]
        return partials

    async def _collapse_streaming(
        self, level: list[asyncio.Future[Partial | None]], question: _Question, token_plan: TokenPlan
    ) -> list[Partial]:
        """The streaming scheduler: the same groups as ``_collapse_in_rounds``, each started as
        soon as its members are done and the round is known to be needed."""
        while True:
            partials, outputs = await self._stream_round(level, question, token_plan)
            if outputs is None:
                return partials
            level = outputs

    async def _stream_round(
        self, inputs: list[asyncio.Future[Partial | None]], question: _Question, token_plan: TokenPlan
    ) -> tuple[list[Partial], list[asyncio.Future[Partial | None]] | None]:
        """One collapse round over ``inputs`` as they finish, in order: ``collapse.collapse_round``
        decided as the partials arrive. Greedy grouping closes a group as soon as the next partial
        would not fit it. A round is needed once the partials seen so far exceed the reduce budget;
        until then closed groups wait. Returns the round's partials and, if it collapsed, the
        futures of its groups (the next round's inputs)."""
        partials: list[Partial] = []
        grouper = collapse.Grouper(token_plan.collapse_tokens)
        groups: list[range] = []
        outputs: list[asyncio.Future[Partial | None]] = []
        total = 0
        needed = False

        def launch(ready: list[range]) -> None:
            for group in ready:
                outputs.append(self._spawn(self._collapse_group([partials[i] for i in group], question)))

        async for batch in in_order(inputs):
            arrived = [p for p in batch if _informative(p)]
            for partial, size in zip(arrived, await self._sizes(arrived) if arrived else [], strict=True):
                partials.append(partial)
                total += size
                closed = grouper.add(size)
                if closed:
                    groups.append(closed)
                    if needed:
                        launch([closed])
                if not needed and collapse.collapse_needed(len(partials), total, token_plan.reduce_tokens):
                    needed = True
                    launch(groups)
        if not needed:
            return partials, None
        last = grouper.close()
        groups.append(last)
        if all(len(group) == 1 for group in groups):  # singletons cost no call: regroup them
            outputs.clear()
            launch(collapse.pairs(len(partials)))
        else:
            launch([last])
        return partials, outputs

    async def _collapse_group(self, group: list[Partial], question: _Question) -> Partial:
        if len(group) == 1:
            return group[0]
        self.bar.set_description("collapse")
        self._expect(1)
        output, record = await self._call(
            "collapse",
            collapse.collapse_messages(self.plan.prompts, question.text, group),
            CollapseOutput,
            collapse.merged_indices(group),
            self.config.generation.collapse_max_tokens,
        )
        assert record is not None  # only map calls wait for a warm-up, and may be skipped
        if output is None:
            self._record(question, record)
            return collapse.fallback(group)
        partial, check = self.plan.family.ground_collapse(
            output, group, question.text, self.document, self.config.grounding
        )
        self._record(question, record, check)
        return partial

    async def _reduce(self, partials: list[Partial], question: _Question, supported: bool) -> FinalAnswer:
        """The final answer from the partial answers; when none is supported (cap grounding), the
        model's guess from the unsupported ones, as the reduce gives it."""
        self.bar.set_description("reduce")
        self._expect(1)
        output, record = await self._call(
            "reduce",
            reduce.reduce_messages(self.plan.prompts, question.text, partials),
            FinalAnswer,
            collapse.merged_indices(partials),
            self.config.generation.reduce_max_tokens,
        )
        assert record is not None  # only map calls wait for a warm-up, and may be skipped
        if output is None:
            self._record(question, record)
            return reduce.fallback(partials)
        if not supported:
            self._record(question, record, "no partial answer is supported: the reply is the model's unsupported guess")
            return reduce.known_chunks(output, partials)
        checked, problem = self.plan.family.checked_final(output, partials, question.text, self.document)
        if checked is None:
            self._record(question, record, f"{problem}; the most confident partial answer stands")
            return reduce.fallback(partials)
        self._record(question, record)
        return reduce.known_chunks(checked, partials)


# How long map calls wait for the warm-up call whose prefix they share (see ``_Run._start_maps``)
# before they go anyway.
WARM_UP_WAIT_S = 30.0


def _informative(partial: Partial | None) -> TypeGuard[Partial]:
    return partial is not None and partial.answer.has_information
