"""Needle-in-a-haystack runs: one pipeline run per (length, depth) cell, written as it finishes.

Each finished cell is one JSON file, ``<out>/cells/len_<tokens>_depth_<percent>.json``, written to
a temporary name and renamed, so a killed run leaves whole files only; a rerun skips the cells
whose file exists. ``<out>/run.json`` holds the settings that make cells comparable (needles,
haystack, method, scoring); a rerun with other settings is refused rather than mixed in. The cells in
flight share one budget of ``llm.concurrency`` calls, as a batch's documents do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from string import Template

from pydantic import BaseModel, Field, computed_field

from ...clients import config_for_client
from ...clients.base import LLMClient
from ...config import PipelineConfig
from ...direct import answer_directly
from ...errors import LlmxmrError, UsageError
from ...executor import Executor, Job, JsonFiles, Shared, check_same_model, require_complete, write_atomically
from ...families.retrieval import names_request
from ...grounding import Citation
from ...pipeline import MapReducePipeline, Status
from ...prompts import ChatMessage, prompt_file
from ...reuse import SharedCalls
from ...schemas import MapOutput
from ...structured import call_structured
from ...trace import Trace
from .. import Method
from .haystack import Placement, build_context, check_lengths, load_haystack
from .needles import NeedleSet, recall

# What the direct baseline may answer: the reference test's answers are a sentence or two.
DIRECT_MAX_TOKENS = 128
JUDGE_MAX_TOKENS = 32
# Cells at once on a server that batches requests (fewer where the server runs fewer at once).
CELLS_ON_SERVER = 4


class RunSettings(BaseModel):
    """What makes two cells comparable; stored in ``run.json``."""

    haystack: str
    needles: NeedleSet
    method: Method
    judge: bool
    buffer: int
    task_type: str

    @property
    def max_score(self) -> float:
        return 10.0 if self.judge else 1.0


class CellResult(BaseModel):
    """One cell: what was asked where, what came back, its score and cost."""

    model: str
    method: Method
    context_length: int  # requested, tokens
    context_tokens: int  # the haystack with its needles, as built (length minus the buffer)
    kept_tokens: int  # what the model read: context_tokens, or less where --method direct cut the middle
    depth_percent: float
    needles: list[str]
    placements: list[Placement]
    question: str
    expected: list[str]
    response: str  # the answer (mr: empty unless the text supports it; the guess is ``unsupported_guess``)
    found: bool
    # The result's status (mr: ``PipelineResult.status``); null for --method direct, whose one call
    # nothing checks, and in cells written before statuses.
    status: Status | None = None
    unsupported_guess: str | None = None
    recall: float  # fraction of expected strings in the response
    judge_score: float | None = None  # 1-10 with --judge
    score: float  # judge_score with --judge, else recall
    duration_s: float
    calls: int
    failed_calls: int  # calls the model never answered validly (transport failures are retried)
    prompt_tokens: int
    completion_tokens: int
    # Why the cell scored as it did: the quotes the answer rests on (mr) and every call's reply
    # and grounding check. Absent from cells written before they were recorded.
    citations: list[Citation] = Field(default_factory=list)
    trace: Trace | None = None
    # Chunks whose map call the model never answered validly (mr): an empty response is then not
    # proof that the needle was missed by reading. Absent from cells written before it was recorded.
    unread_chunks: list[int] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def complete(self) -> bool:
        return not self.unread_chunks


class JudgeVerdict(BaseModel):
    score: int = Field(ge=1, le=10)


def cell_name(length: int, depth: float) -> str:
    return f"len_{length}_depth_{depth:g}"


class NiahRun:
    """``await NiahRun(settings, out_dir, config).run(lengths, depths)``."""

    def __init__(
        self,
        settings: RunSettings,
        out_dir: str | Path,
        config: PipelineConfig,
        *,
        cells_in_flight: int | None = None,
        client: LLMClient | None = None,
        progress: bool = True,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.out_dir = Path(out_dir)
        self.config = config
        self._executor = Executor(self.out_dir, client=client, in_flight=cells_in_flight, progress=progress, log=log)
        self._haystack: list[int] = []
        self._recorded_models: list[str] = []
        self.failed_cells = 0

    async def run(self, lengths: list[int], depths: list[float]) -> list[CellResult]:
        """Runs every unfinished cell; returns all finished cells of the run folder."""
        check_lengths(lengths, self.settings.needles.needles, self.settings.buffer)
        check_question(self.settings)
        async with self._executor:
            (self.out_dir / "cells").mkdir(parents=True, exist_ok=True)
            check_settings(self.out_dir, self.settings)
            job = Job(
                name="niah",
                unit="cell",
                items=[(n, d) for n in lengths for d in depths],
                key=lambda cell: cell_name(*cell),
                work=self._run_cell,
                sink=JsonFiles(self.out_dir / "cells"),
                config=self.config,
                on_server=CELLS_ON_SERVER,
                prepare=lambda: self._prepare(max(lengths)),
            )
            self.failed_cells = (await self._executor.run(job)).failed
        return load_cells(self.out_dir)

    async def _prepare(self, longest: int) -> None:
        """What only running cells needs: the haystack, and the model of the cells already written."""
        self._haystack = await asyncio.to_thread(load_haystack, self.settings.haystack, longest)
        self._recorded_models = [cell.model for cell in load_cells(self.out_dir)]
        # Every cell's map calls: cells cut from the same haystack share chunks (all of those before
        # the needle, at one length), which are read once (``reuse``).
        self._shared_calls = SharedCalls[MapOutput]()

    async def _run_cell(self, cell: tuple[int, float], shared: Shared) -> CellResult:
        result = await self._cell(*cell, shared)
        check_same_model(self._recorded_models, result.model, self.out_dir)
        return result

    async def _cell(self, length: int, depth: float, shared: Shared) -> CellResult:
        # The reduce's client and budget: a direct answer and a grade are the answering model's calls.
        client, calls, place = shared.client, shared.calls, shared.calls.join()
        needles = self.settings.needles
        context = await asyncio.to_thread(
            build_context, self._haystack, needles.needles, length, depth, self.settings.buffer
        )
        started = time.perf_counter()
        if self.settings.method == "direct":
            async with calls.slot("direct", place):
                direct = await answer_directly(
                    client,
                    self.config.for_stage("reduce"),
                    lambda text: direct_messages(text, needles.question),
                    context.text,
                    DIRECT_MAX_TOKENS,
                )
            response, found, model, trace = direct.answer, True, direct.model, direct.trace
            kept_tokens, citations, unread = direct.kept_tokens, [], []
            status: Status | None = None
            guess = None
        else:
            pipeline = MapReducePipeline(
                self.config, client=shared.clients, budget=shared.budgets, shared_calls=self._shared_calls
            )
            result = await pipeline.arun(context.text, needles.question)
            response, found, model, trace = result.answer, result.found, result.model, result.trace
            kept_tokens, citations, unread = context.tokens, result.citations, result.unread_chunks
            status, guess = result.status, result.unsupported_guess
        require_complete(trace)
        judge_score = None
        if self.settings.judge:
            async with calls.slot("judge", place):
                judge_score = await self._judge(client, response, trace)
        string_recall = recall(response, needles.expected)
        totals = trace.totals
        return CellResult(
            model=model,
            method=self.settings.method,
            context_length=length,
            context_tokens=context.tokens,
            kept_tokens=kept_tokens,
            depth_percent=depth,
            needles=needles.needles,
            placements=context.placements,
            question=needles.question,
            expected=needles.expected,
            response=response,
            found=found,
            status=status,
            unsupported_guess=guess,
            recall=string_recall,
            judge_score=judge_score,
            score=judge_score if judge_score is not None else string_recall,
            duration_s=round(time.perf_counter() - started, 3),
            calls=totals.calls,
            failed_calls=totals.failed_calls,
            prompt_tokens=totals.prompt_tokens,
            completion_tokens=totals.completion_tokens,
            citations=citations,
            trace=trace,
            unread_chunks=unread,
        )

    async def _judge(self, client: LLMClient, response: str, trace: Trace) -> float:
        """The reference test's 1-10 accuracy grade, asked of the same model as a JSON object.
        An answer that is empty scores 1 without a call; a judge call that fails raises."""
        if not response.strip():
            return 1.0
        verdict, record = await call_structured(
            client,
            judge_messages(self.settings.needles, response),
            JudgeVerdict,
            stage="judge",
            chunk_indices=[],
            max_tokens=JUDGE_MAX_TOKENS,
            temperature=0.0,
            attempts=self.config.generation.validation_attempts,
            max_string_chars=(await config_for_client(self.config.for_stage("reduce"), client)).llm.max_string_chars,
        )
        record.model = await client.model_name()
        trace.calls.append(record)
        if verdict is None:
            raise LlmxmrError(f"the judge gave no score: {record.error}")
        return float(verdict.score)


def direct_messages(context: str, question: str) -> list[ChatMessage]:
    """The reference test's prompt (its OpenAI provider): the haystack, then the question."""
    user = Template(prompt_file("niah/direct.md")).substitute(context=context, question=question)
    return [
        ChatMessage(role="system", content=prompt_file("niah/direct_system.md")),
        ChatMessage(role="user", content=user),
    ]


def judge_messages(needles: NeedleSet, response: str) -> list[ChatMessage]:
    """The reference is what a right answer says: the needles holding an expected string (not the
    RULER distractors, whose numbers are wrong answers)."""
    reference = " ".join(needle.strip() for needle in needles.needles if _holds_expected(needle, needles.expected))
    user = Template(prompt_file("niah/judge.md")).substitute(
        question=needles.question, reference=reference, answer=response.strip()
    )
    return [ChatMessage(role="user", content=user)]


def _holds_expected(needle: str, expected: list[str]) -> bool:
    return any(value.lower() in needle.lower() for value in expected)


def check_question(settings: RunSettings) -> None:
    """Refuses a run that would score 0 whatever the model did: map-reduce's retrieval check keeps
    only values from sentences that name what the question asks for, so a question sharing no word
    with its needle has nothing to keep."""
    if settings.method != "mr" or settings.task_type != "retrieval":
        return
    if not names_request(settings.needles.needles[0], settings.needles.question):
        raise UsageError(
            "the question shares no word with the needle: map-reduce's retrieval check keeps only "
            "values from sentences that name what the question asks for; reword it, or pass --task-type qa"
        )


def check_settings(out_dir: Path, settings: RunSettings) -> None:
    """Records the settings on the first run (again while no cell is written: a run that failed
    before any cell, say on a wrong haystack, does not bind the folder); refuses a rerun whose
    cells would not compare."""
    path = out_dir / "run.json"
    if not path.exists() or not any((out_dir / "cells").glob("*.json")):
        write_atomically(path, settings.model_dump_json(indent=2))
        return
    recorded = read_settings(out_dir)
    if recorded != settings:
        differing = [name for name in RunSettings.model_fields if getattr(recorded, name) != getattr(settings, name)]
        raise UsageError(f"{out_dir} holds a run with other {', '.join(differing)}; use another --out")


def read_settings(out_dir: Path) -> RunSettings:
    path = Path(out_dir) / "run.json"
    try:
        return RunSettings.model_validate_json(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"no needle-in-a-haystack run in {out_dir} ({exc.strerror})") from exc
    except ValueError as exc:
        raise UsageError(f"{path} is not a run written by llmxmr") from exc


def load_cells(out_dir: str | Path) -> list[CellResult]:
    cells = []
    for path in sorted((Path(out_dir) / "cells").glob("*.json")):
        try:
            cells.append(CellResult.model_validate_json(path.read_text(encoding="utf-8")))
        except ValueError as exc:
            raise UsageError(f"{path} is not a cell written by llmxmr") from exc
    return cells
