"""Batches of documents: ``llmxmr batch --input FILE.jsonl --out DIR``.

Every line of the input is ``{"id", "question", "document" | "path"}``. Lines about the same
document (the same file, or the same text) are answered together, from one reading of it
(``MapReducePipeline.arun_many``). All documents draw on one budget of ``llm.concurrency`` calls
in flight (not one budget per document), and a waiting call goes first by stage, then by its
document's place in the batch, so documents finish one after another. A map call identical to one
made for any document of the batch (the same chunk text and question: repeated boilerplate, a
haystack) is made once (``llmxmr.reuse``). Each result is appended to ``<out>/results.jsonl`` (and
flushed to disk) the moment its document is done; a rerun skips the ids already there. The engine
is the one the benchmark harnesses run on (``llmxmr.executor``).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, computed_field, model_validator

from .clients.base import LLMClient
from .config import PipelineConfig
from .documents import Document, read_document
from .errors import LlmxmrError, UsageError
from .executor import (
    Executor,
    Job,
    JsonLines,
    RunStats,
    Shared,
    Together,
    check_same_model,
    complete_or_error,
    summed_usage,
    text_sha256,
    write_atomically,
)
from .grounding import Citation
from .pipeline import MapReducePipeline, PipelineResult, Status
from .reuse import SharedCalls
from .schemas import MapOutput
from .stage_models import StageClients, short_model_name
from .trace import ModelTotals, summed_models

RESULTS_FILE = "results.jsonl"
SUMMARY_FILE = "summary.json"


class BatchItem(BaseModel):
    """One input line: the question and the document, given inline or as a file path."""

    model_config = ConfigDict(extra="forbid")

    id: str | int
    question: str
    document: str | None = None
    path: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> BatchItem:
        if (self.document is None) == (self.path is None):
            raise ValueError('give exactly one of "document" and "path"')
        if not self.question.strip():
            raise ValueError("the question is empty")
        return self

    @property
    def key(self) -> str:
        return str(self.id)

    @property
    def document_key(self) -> str:
        """What tells the batch's documents apart: a file by its resolved path, text by its hash."""
        if self.path is not None:
            return f"path:{Path(self.path).resolve()}"
        return f"text:{text_sha256(self.document or '')}"


class BatchResult(BaseModel):
    """One output line: the answer for one document and what it cost. ``status``, ``answer``,
    ``unsupported_guess``, ``citations`` and ``related`` are the ``PipelineResult``'s: an answer
    only when it is ``answered``."""

    id: str | int
    question: str
    status: Status
    answer: str
    unsupported_guess: str | None = None
    found: bool
    confidence: float
    rationale: str
    supporting_chunks: list[int]
    citations: list[Citation]
    related: list[Citation] = []
    chunks: int
    unread_chunks: list[int]
    model: str
    calls: int
    failed_calls: int
    cache_hits: int
    # Of the calls, map calls not made: their chunk's prompt was identical to an earlier call's
    # (of this document or another of the batch), whose reply it got (``PipelineResult.reused``).
    reused_calls: int = 0
    prompt_tokens: int
    completion_tokens: int
    wall_time_s: float
    # The calls and tokens of each model that answered (``Totals.by_model``): one, unless stages
    # have models of their own.
    models: dict[str, ModelTotals] = {}

    @model_validator(mode="before")
    @classmethod
    def _status_of_an_older_line(cls, values: Any) -> Any:
        """A line written before results had a status: what its ``found`` and unread chunks said."""
        if isinstance(values, dict) and "status" not in values:
            status = "answered" if values.get("found") else "incomplete" if values.get("unread_chunks") else "not_found"
            values = {**values, "status": status}
        return values

    @computed_field  # type: ignore[prop-decorator]
    @property
    def complete(self) -> bool:
        """False when some chunk went unread (see ``PipelineResult.complete``)."""
        return not self.unread_chunks


class BatchReport(BaseModel):
    """The batch's totals over every result in the folder; ``new`` and ``run_time_s`` are this
    invocation's."""

    documents: int  # results: one per input line (a question about a document)
    distinct_documents: int  # the documents those results are about (by path or text)
    new: int
    failures: int  # documents of this invocation without a result (a rerun retries them)
    found: int  # results answered
    # Results by status (answered, unsupported, not_found, incomplete), over every result.
    statuses: dict[str, int] = {}
    calls: int
    failed_calls: int
    reused_calls: int = 0  # of the calls, map calls not made: given an identical call's reply
    prompt_tokens: int
    completion_tokens: int
    document_time_s: float  # summed over documents (they overlap)
    run_time_s: float
    concurrency: int | None  # this invocation's call budget (the map model's); None when it had nothing to do
    models: dict[str, ModelTotals] = {}  # the calls and tokens of each model, over every result


def read_items(path: Path) -> list[BatchItem]:
    """The input lines, checked: every problem is one line naming the file and line number."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc
    items: list[BatchItem] = []
    seen: set[str] = set()
    for number, line in enumerate(text.split("\n"), 1):  # not splitlines: U+2028 is text
        if not line.strip():
            continue
        try:
            item = BatchItem.model_validate_json(line)
        except ValidationError as exc:
            raise UsageError(f"{path}:{number}: {_first_problem(exc)}") from exc
        if item.key in seen:
            raise UsageError(f"{path}:{number}: id {item.key!r} appears twice")
        seen.add(item.key)
        if item.path is not None and not Path(item.path).is_absolute():
            item = item.model_copy(update={"path": str(path.parent / item.path)})  # relative to the input file
        items.append(item)
    if not items:
        raise UsageError(f"{path} holds no documents")
    return items


def _first_problem(error: ValidationError) -> str:
    problem = error.errors()[0]
    where = ".".join(str(part) for part in problem["loc"])
    return f"{where}: {problem['msg']}" if where else problem["msg"]


def read_results(path: Path) -> list[BatchResult]:
    return _results_file(path).read()


def _results_file(path: Path) -> JsonLines[BatchResult]:
    return JsonLines(path, BatchResult, lambda result: str(result.id), "a result written by llmxmr batch")


async def run_batch(
    items: Sequence[BatchItem],
    out_dir: str | Path,
    config: PipelineConfig,
    *,
    client: LLMClient | StageClients | None = None,
    documents_in_flight: int | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> BatchReport:
    """Answers every item not yet in ``<out_dir>/results.jsonl``, the items about one document
    together, and returns the totals. ``documents_in_flight`` counts distinct documents. Without a
    ``client`` (or ``StageClients``, one per stage), those the config names are opened (when a
    document is left) and closed here."""
    out = Path(out_dir)
    results = _results_file(out / RESULTS_FILE)
    async with Executor(out, client=client, in_flight=documents_in_flight, progress=progress, log=log) as executor:
        finished = results.read()
        _check_same_questions(items, finished, results.path)
        bar_postfix = _CallCounter()
        shared_calls = SharedCalls[MapOutput]()  # every document's, through the one client

        async def answer(group: Sequence[BatchItem], shared: Shared) -> list[BatchResult | LlmxmrError]:
            document: str | Document | None = group[0].document
            if document is None:  # read when its turn comes (any format: citations get pages and sections)
                document = await asyncio.to_thread(
                    read_document, group[0].path or "", max_bytes=int(config.max_document_mb * 2**20)
                )
            pipeline = MapReducePipeline(
                config, client=shared.clients, budget=shared.budgets, shared_calls=shared_calls
            )
            answers = await pipeline.arun_many(document, [item.question for item in group])
            check_same_model((r.model for r in finished), answers[0].model, results.path)
            lines: list[BatchResult | LlmxmrError] = []
            for item, result in zip(group, answers, strict=True):
                lines.append(complete_or_error(result.trace, _result_line(item, result)))
                if not isinstance(lines[-1], LlmxmrError):
                    bar_postfix.add(result)
            return lines

        job = Job(
            name="batch",
            unit="document",
            items=items,
            key=lambda item: item.key,
            work=Together(group=lambda item: item.document_key, work=answer),
            sink=results,
            config=config,
            postfix=bar_postfix.text,
        )
        stats = await executor.run(job)
        return _finish(out, items, results.read(), stats)


def _finish(out: Path, items: Sequence[BatchItem], results: list[BatchResult], stats: RunStats) -> BatchReport:
    """The totals over every result in the folder, also written to ``summary.json``. Distinct
    documents are counted over the results of this batch's lines (a result of a line since removed
    from the input is about a document no longer known)."""
    answered = {str(r.id) for r in results}
    report = BatchReport(
        documents=len(results),
        distinct_documents=len({item.document_key for item in items if item.key in answered}),
        new=stats.new,
        failures=stats.failed,
        found=sum(r.found for r in results),
        statuses=dict(Counter(r.status for r in results)),
        **summed_usage(results),
        reused_calls=sum(r.reused_calls for r in results),
        models=summed_models(r.models for r in results),
        document_time_s=round(sum(r.wall_time_s for r in results), 3),
        run_time_s=stats.run_time_s,
        concurrency=stats.concurrency,
    )
    write_atomically(out / SUMMARY_FILE, report.model_dump_json(indent=2) + "\n")
    return report


class _CallCounter:
    """Calls and tokens of the documents finished so far, for the progress bar."""

    def __init__(self) -> None:
        self.calls = 0
        self.tokens = 0

    def add(self, result: PipelineResult) -> None:
        totals = result.trace.totals
        self.calls += totals.calls
        self.tokens += totals.prompt_tokens + totals.completion_tokens

    def text(self) -> str:
        return f"{self.calls:,} calls, {self.tokens:,} tokens"


def _check_same_questions(items: Sequence[BatchItem], finished: list[BatchResult], path: Path) -> None:
    """A result is reused only for the question it answers: an input edited since is refused."""
    asked = {item.key: item.question.strip() for item in items}
    for result in finished:
        question = asked.get(str(result.id))
        if question is not None and question != result.question:
            raise UsageError(f"{path} answers another question for id {result.id!r}; use another --out")


def _result_line(item: BatchItem, result: PipelineResult) -> BatchResult:
    totals = result.trace.totals
    return BatchResult(
        id=item.id,
        question=result.question,
        status=result.status,
        answer=result.answer,
        unsupported_guess=result.unsupported_guess,
        found=result.found,
        confidence=result.confidence,
        rationale=result.rationale,
        supporting_chunks=result.supporting_chunks,
        citations=result.citations,
        related=result.related,
        chunks=len(result.chunks),
        unread_chunks=result.unread_chunks,
        model=result.model,
        calls=totals.calls,
        failed_calls=totals.failed_calls,
        cache_hits=totals.cache_hits,
        reused_calls=len(result.reused),
        prompt_tokens=totals.prompt_tokens,
        completion_tokens=totals.completion_tokens,
        wall_time_s=round(totals.wall_time_s, 3),
        models=totals.by_model,
    )


def _calls_row(report: BatchReport) -> str:
    notes = [f"{report.reused_calls:,} not made: identical to an earlier call"] if report.reused_calls else []
    notes += [f"at most {report.concurrency:,} in flight"] if report.concurrency else []
    return f"{report.calls:,}" + (f" ({'; '.join(notes)})" if notes else "")


def format_report(report: BatchReport) -> str:
    rows: list[tuple[str, Any]] = [
        (
            "documents",
            f"{report.documents:,} ({report.new:,} new, {report.found:,} answered; "
            f"{report.distinct_documents:,} distinct)",
        ),
        ("failures", f"{report.failures:,} documents without a result, {report.failed_calls:,} failed calls"),
        ("statuses", ", ".join(f"{count:,} {status}" for status, count in sorted(report.statuses.items())) or "-"),
        ("calls", _calls_row(report)),
        ("tokens", f"{report.prompt_tokens:,} prompt, {report.completion_tokens:,} completion"),
    ]
    if len(report.models) > 1:  # a model per stage: what each cost
        rows += [
            (
                "model",
                f"{short_model_name(model)} ({', '.join(totals.stages)}): {totals.calls:,} calls, "
                f"{totals.prompt_tokens:,} prompt, {totals.completion_tokens:,} completion tokens",
            )
            for model, totals in report.models.items()
        ]
    rows.append(("wall time", f"{report.run_time_s:,.1f} s"))
    return "\n".join(f"{name:<10} {value}" for name, value in rows)
