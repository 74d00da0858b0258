"""MapReducePipeline: chunk, map concurrently, collapse until the partials fit, reduce.

``arun_many`` is the core (async, a call budget bounds the calls in flight; several questions share
one reading of the document); ``arun`` asks one question, ``run`` and ``run_many`` wrap them for
synchronous callers.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeGuard, TypeVar

from pydantic import BaseModel, ConfigDict, Field, computed_field

from .budget import PARTIAL_HEADER_TOKENS, TokenPlan
from .chunking import Chunk
from .clients import make_client
from .clients.base import LLMClient
from .config import PipelineConfig
from .documents import Document
from .errors import LLMCallError
from .events import (
    AnswerStream,
    ChunkRead,
    CollapseDone,
    CollapseStarted,
    PartialFound,
    ProgressBar,
    ReadingPlanned,
    ReduceDone,
    ReduceStarted,
    StageEvent,
)
from .grounding import Citation, DocumentIndex, in_document_order
from .partials import Partial, render_partial
from .plan import LastChunking, ReadingPlan, checked_questions, plan_reading
from .prompts import ChatMessage
from .reuse import Origin, Reuse, SharedCalls, call_key
from .scheduling import CallBudget, gather_or_cancel, in_order
from .schemas import CollapseOutput, FinalAnswer, MapOutput
from .stage_models import ModelUse, StageBudgets, StageClients, StageModels, stage_models
from .stages import collapse, reduce
from .stages.map import map_messages
from .stages.reduce import Status
from .structured import PartialReply, call_structured
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
    # The model profile whose settings applied (configs/default.yaml: model_profiles), if any; with
    # a model per stage, when they all have the same one (``models`` gives each model's).
    model_profile: str | None = None
    # Each model that served the run, with its stages: one, unless stages have their own
    # (``stages`` in configs/default.yaml). Every call's record names its model (``CallRecord.model``).
    models: list[ModelUse] = []
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


class FinalResult(BaseModel):
    """The last event of a question (``llmxmr.events``): its result, as ``arun_many`` returns it."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["final_result"] = "final_result"
    question: int
    result: PipelineResult


# Every event a run emits (``arun_many``'s ``on_event``, ``astream``), told apart by ``kind``.
PipelineEvent = Annotated[StageEvent | FinalResult, Field(discriminator="kind")]


class MapReducePipeline:
    """``MapReducePipeline(config).run(document, question)``; ``await pipeline.arun(...)`` in async
    code; ``run_many(document, questions)`` answers several questions for about the price of one
    reading. Without a ``client``, each run opens the one the config names (a server, or the
    embedded model; one per model, where stages have models of their own: ``stages`` in
    configs/default.yaml) and closes it at the end. A given client (or ``StageClients``, one per
    stage) is left open for the caller to reuse across ``arun`` calls in one event loop (``run``
    starts a new loop each time).

    Without a ``budget``, each run may have ``llm.concurrency`` calls in flight (by default
    ``llm.concurrency_per_worker`` for each server behind the client), each client its own number.
    Runs given one budget (or ``StageBudgets``) share its calls: that is how a batch of documents
    keeps one limit for each server.

    A map call identical to another of the run (the same chunk text and question) is made once, and
    its reply given to every chunk that asks it (``llmxmr.reuse``). Runs given one ``shared_calls``
    (with one client) share their map calls too: that is how a batch reads text repeated across its
    documents once."""

    def __init__(
        self,
        config: PipelineConfig | None = None,
        *,
        client: LLMClient | StageClients | None = None,
        budget: CallBudget | StageBudgets | None = None,
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

    async def arun_many(
        self,
        document: str | Document,
        questions: Sequence[str],
        *,
        on_event: Callable[[PipelineEvent], None] | None = None,
    ) -> list[PipelineResult]:
        """One result per question, in order. The document is indexed and chunked once, and the
        map calls go chunk-major with the document first in each prompt: every question about a
        chunk reuses the server's cached prefix of it (see ``_Run._start_maps``). Grounding,
        collapse and reduce run per question, as in a run of that question alone. ``on_event`` is
        given the run's events as they happen (``llmxmr.events``), in the event loop's thread."""
        text = document.text if isinstance(document, Document) else document
        asked = checked_questions(text, questions)  # before a client is opened for nothing
        clients = self._stage_clients()
        try:
            models = await stage_models(self.config, clients)
            budgets = await self._stage_budgets(clients)
            shared = self._shared_calls or SharedCalls[MapOutput]()
            run = _Run(self.config, models, budgets, shared, self._progress, self._last_chunking)
            run.source, run.on_event = (document if isinstance(document, Document) else None), on_event
            return await run.execute(text, asked)
        finally:
            if self._client is None:
                await clients.aclose()

    def _stage_clients(self) -> StageClients:
        """The client of each stage: those given, or those the config names (one per distinct
        model of its stages), opened for this run."""
        if self._client is None:
            return StageClients.open(self.config, make_client)
        return self._client if isinstance(self._client, StageClients) else StageClients.every(self._client)

    async def _stage_budgets(self, clients: StageClients) -> StageBudgets:
        """The call budget of each stage: the one given, or one per client for this run."""
        if self._calls is None:
            return await StageBudgets.open(self.config, clients)
        return self._calls if isinstance(self._calls, StageBudgets) else StageBudgets.every(self._calls)

    async def astream(self, document: str | Document, question: str) -> AsyncIterator[PipelineEvent]:
        """The events of ``arun(document, question)`` as they happen (``llmxmr.events``): each map
        call done, each partial answer found, each collapse, the answer as the reduce writes it
        (where the client streams), and last the ``FinalResult``. A run that fails raises its error
        after the events it emitted; leaving the loop early cancels the run."""
        events: asyncio.Queue[PipelineEvent | None] = asyncio.Queue()
        run = asyncio.ensure_future(self.arun_many(document, [question], on_event=events.put_nowait))
        run.add_done_callback(lambda _: events.put_nowait(None))
        try:
            while (event := await events.get()) is not None:
                yield event
            run.result()
        finally:
            if not run.done():
                run.cancel()
                await asyncio.gather(run, return_exceptions=True)


def _located(result: PipelineResult, document: Document) -> PipelineResult:
    """The result with its citations' pages or sections in the original file."""
    return result.model_copy(
        update={
            "citations": [located(c, document) for c in result.citations],
            "related": [located(c, document) for c in result.related],
        }
    )


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
    """The state of one run: each stage's model (client and settings), its plan (prompts, token
    plans, chunks), each stage's call budget and place in it, the map calls it shares and its
    number among their readings, the document as read once, its questions, and the progress bar."""

    plan: ReadingPlan
    # The file the text was read from (its results' citations then name their page or section),
    # and who else is told the run's events (``MapReducePipeline.arun_many``).
    source: Document | None = None
    on_event: Callable[[PipelineEvent], None] | None = None

    def __init__(
        self,
        config: PipelineConfig,
        models: StageModels,
        budgets: StageBudgets,
        shared: SharedCalls[MapOutput],
        progress: bool,
        last_chunking: LastChunking,
    ) -> None:
        # The run's settings: those of every stage (the scheduler, on_chunk_error, the task type).
        # A stage's own (its model's calls, replies and grounding) are ``models.<stage>.config``.
        self.config = config
        self.last_chunking = last_chunking  # the pipeline's, reused by its next run
        self.models = models
        self.budgets = budgets
        self.places = budgets.join()
        self.shared = shared
        self.reading = shared.join()
        self.tasks: list[asyncio.Future[Any]] = []
        self.bar = ProgressBar(progress)
        self.loop = asyncio.get_running_loop()
        self.thread = threading.get_ident()

    def _emit(self, event: PipelineEvent) -> None:
        """Tells the progress bar and ``on_event`` what happened, in the event loop's thread: a
        reply streamed in a client's worker thread (the embedded model's) is passed there, in
        order, before the call's end is."""
        if threading.get_ident() != self.thread:
            self.loop.call_soon_threadsafe(self._emit, event)
            return
        self.bar(event)
        if self.on_event is not None:
            self.on_event(event)

    async def execute(self, document: str, questions: list[str]) -> list[PipelineResult]:
        self.started = started = time.perf_counter()  # the run's clock (``CallRecord.sent_s``)
        self.document = DocumentIndex(document)
        try:
            self.plan = await plan_reading(self.models, questions, document, self.last_chunking)
            asked = [_Question(text, index) for index, text in enumerate(self.plan.questions)]
            self._emit(ReadingPlanned(chunks=len(self.plan.chunks), questions=len(asked)))
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
            final, supported = await self._reduce(partials, question, supported)
        elif question.rejected:
            final = reduce.best_guess(question.rejected)
        question.trace.wall_time_s = time.perf_counter() - started
        failed_maps = [record for record in question.failed if record.stage == "map"]
        if final is not None:
            cited = self.plan.family.cited(final, [*partials, *question.rejected], question.text, self.document)
        else:  # nothing answered; or the reduce failed, and what the parts found is kept as passages
            cited = ([], in_document_order(c for p in partials for c in (*p.citations, *p.related)))
        outcome = reduce.outcome(
            final,
            supported=supported,
            guesses=sum(partial.answers for partial in partials) or len(question.rejected),
            cited=cited,
            failed_maps=failed_maps,
            chunk_count=len(chunks),
            settings=self.models.reduce.config.grounding,
            partials=partials,
            reduce_failed=final is None and bool(partials),
        )
        # The texts the token counter estimated so far in the run (``ReadingPlan.counts_estimated``).
        question.trace.estimated_token_counts = self.plan.counts_estimated()
        result = PipelineResult(
            question=question.text,
            task_type=self.config.task_type,
            **dict(outcome),
            model=self.models.describe(),
            model_profile=self.models.profile,
            models=self.models.uses(),
            chunks=[ChunkSpan(index=c.index, start=c.start, end=c.end, tokens=c.tokens) for c in chunks],
            unread_chunks=sorted(i for record in failed_maps for i in record.chunk_indices),
            failed_calls=question.failed,
            trace=question.trace,
            reused=sorted(question.reused, key=lambda reuse: reuse.chunk),
        )
        if self.source is not None:
            result = _located(result, self.source)
        self._emit(FinalResult(question=question.index, result=result))
        return result

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
        on_partial: Callable[[PartialReply], None] | None = None,
    ) -> tuple[Output | None, CallRecord | None]:
        """One structured call within the call budget. Calls of later stages go first: they shorten
        the run's tail, and maps wait for nothing but slots; among a run's maps, ``order`` decides,
        and a map goes only once the call it ``waits_for`` is answered (no record, and no call, if
        that one failed the run). ``warms`` learns when this call was sent and answered, and
        ``on_partial`` its reply as it streams in. The caller hands the record to ``_record`` once
        it knows what its check of the output decided."""
        asked = time.perf_counter()
        model = self.models.of(stage)
        budget, place = self.budgets.of(stage), self.places[stage]
        async with budget.slot(stage, place, order, waits_for.ready if waits_for else None):
            if waits_for is not None and waits_for.failed_run:
                return None, None  # the run is failing (a refused key, on_chunk_error: fail): send nothing more
            sent = time.perf_counter()
            if warms is not None:
                warms.sent()
            output, record = await call_structured(
                model.client,
                messages,
                output_type,
                stage=stage,
                chunk_indices=chunk_indices,
                max_tokens=max_tokens,
                temperature=model.config.llm.temperature,
                attempts=model.config.generation.validation_attempts,
                omit_fields=self.plan.family.omitted_fields,
                max_string_chars=model.config.llm.max_string_chars,
                on_partial=on_partial,
            )
            record.sent_s, record.queued_s = round(sent - self.started, 4), round(sent - asked, 4)
            record.model = model.name
            if warms is not None:
                warms.done()  # before the slot is released: the calls that wait for it go next
        return output, record

    def _record(self, question: _Question, record: CallRecord, check: str | None = None) -> None:
        """Puts a finished call in its question's trace, with what the check of its output
        decided (a reduce's is then done: ``ReduceDone``); a failed call stops the run when
        ``on_chunk_error`` says so."""
        if check is not None:
            record = record.model_copy(update={"check": check})
        question.trace.calls.append(record)
        if record.stage == "reduce":
            self._emit(ReduceDone(question=question.index, failed=record.error is not None, check=record.check))
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
                    self.models.map.config.generation.map_max_tokens,
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
            self._chunk_read(question, chunk, None, source is not None, failed=True)
            return None
        grounded = self.plan.family.ground_map(
            output, chunk, self.document, question.text, self.models.map.config.grounding
        )
        self._record(question, record, grounded.check)
        if grounded.rejected is not None:
            question.rejected.append(grounded.rejected)
        self._chunk_read(question, chunk, grounded.partial, source is not None)
        return grounded.partial

    def _chunk_read(
        self, question: _Question, chunk: Chunk, partial: Partial | None, reused: bool, failed: bool = False
    ) -> None:
        """The events of a map call done: its chunk read, and the partial answer it gave."""
        found = _informative(partial)
        self._emit(ChunkRead(question=question.index, chunk=chunk.index, found=found, failed=failed, reused=reused))
        if partial is not None and partial.answers:
            self._emit(
                PartialFound(
                    question=question.index,
                    chunks=partial.chunk_indices,
                    answer=partial.answer.answer or "",
                    confidence=partial.answer.confidence,
                    support=partial.support,
                    citations=partial.citations,
                )
            )

    def _map_key(self, messages: list[ChatMessage]) -> str | None:
        """What decides a map call's reply (``reuse.call_key``): its messages, the family, and
        every setting of the calls (the reply's shape and length, its string cap, the temperature,
        the attempts), the few that do not matter included. None for a sampled call, a draw of its
        own unless ``llm.cache_sampled`` says otherwise."""
        config = self.models.map.config
        llm = config.llm
        if llm.temperature > 0 and not llm.cache_sampled:
            return None
        settings = (config.task_type, llm.model_dump(mode="json"), config.generation.model_dump(mode="json"))
        return call_key(messages, settings)

    async def _sizes(self, partials: list[Partial]) -> list[int]:
        rendered = [render_partial(p) for p in partials]
        counted = await asyncio.to_thread(self.plan.merge_counter.count_batch, rendered)  # the collapse model's
        return [n + PARTIAL_HEADER_TOKENS for n in counted]

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
        self._emit(CollapseStarted(question=question.index, chunks=collapse.merged_indices(group)))
        output, record = await self._call(
            "collapse",
            collapse.collapse_messages(self.plan.prompts, question.text, group),
            CollapseOutput,
            collapse.merged_indices(group),
            self.models.collapse.config.generation.collapse_max_tokens,
        )
        assert record is not None  # only map calls wait for a warm-up, and may be skipped
        if output is None:
            self._record(question, record)
            self._emit(CollapseDone(question=question.index, chunks=record.chunk_indices, answer=None, failed=True))
            return collapse.fallback(group)
        partial, check = self.plan.family.ground_collapse(
            output, group, question.text, self.document, self.models.collapse.config.grounding
        )
        self._record(question, record, check)
        self._emit(CollapseDone(question=question.index, chunks=record.chunk_indices, answer=partial.answer.answer))
        return partial

    async def _reduce(
        self, partials: list[Partial], question: _Question, supported: bool
    ) -> tuple[FinalAnswer | None, bool]:
        """The final answer from the partial answers, and whether the text supports it. When none is
        supported (cap grounding), or when a final answer fails its check and no partial answer can
        stand instead (they carried information only), it is the model's unsupported guess, as the
        reduce gives it; None when the reduce failed and no partial answer can stand."""
        self._emit(ReduceStarted(question=question.index, partials=len(partials)))
        output, record = await self._call(
            "reduce",
            reduce.reduce_messages(self.plan.prompts, question.text, partials),
            FinalAnswer,
            collapse.merged_indices(partials),
            self.models.reduce.config.generation.reduce_max_tokens,
            on_partial=AnswerStream(question.index, self._emit),  # the answer shown as it is written
        )
        assert record is not None  # only map calls wait for a warm-up, and may be skipped
        standing = reduce.fallback(partials, supported)
        if output is None:
            self._record(question, record)
            return standing
        if not supported:
            self._record(question, record, "no partial answer is supported: the reply is the model's unsupported guess")
            return reduce.known_chunks(output, partials), False
        checked, problem = self.plan.family.checked_final(output, partials, question.text, self.document)
        if checked is None and standing[0] is None:
            self._record(question, record, f"{problem}; no partial answer can stand: the reply is an unsupported guess")
            return reduce.known_chunks(output, partials), False
        if checked is None:
            self._record(question, record, f"{problem}; the most confident partial answer stands")
            return standing
        self._record(question, record)
        return reduce.known_chunks(checked, partials), supported


# How long map calls wait for the warm-up call whose prefix they share (see ``_Run._start_maps``)
# before they go anyway.
WARM_UP_WAIT_S = 30.0


def _informative(partial: Partial | None) -> TypeGuard[Partial]:
    return partial is not None and partial.informs
