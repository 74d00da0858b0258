"""Batch runs over InfiniteBench tasks: predictions written as they finish, resumable, scored.

Each task's predictions go to ``<out>/preds_<task>.jsonl`` in the official format (``id``,
``prediction``, ``ground_truth``) plus what the example cost. A line is appended and flushed to
disk the moment its example finishes, so a killed run loses at most the examples in flight; a
rerun skips every id already written (a half-written last line is cut off first). Several
examples run at once through one client, their chunk calls within one budget of
``llm.concurrency`` calls in flight for the task (``llmxmr.executor``, the engine of
``llmxmr batch``). For map-reduce, the examples that share a context (InfiniteBench asks many
questions of the same novels) run together, from one reading of it
(``MapReducePipeline.arun_many``); each example's line is written when its group is done.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ...clients.base import LLMClient
from ...config import PipelineConfig
from ...direct import answer_directly
from ...errors import LlmxmrError, UsageError
from ...executor import (
    Executor,
    Job,
    JsonLines,
    RunStats,
    Shared,
    Together,
    check_same_model,
    complete_or_error,
    pin_source,
    summed_usage,
    text_sha256,
    write_atomically,
)
from ...pipeline import MapReducePipeline, Status
from ...reuse import SharedCalls
from ...schemas import MapOutput
from ...trace import Trace
from .. import Method
from .data import DataSource, read_examples
from .scorers import SCORERS, check_scorer_packages, score_predictions
from .tasks import Example, direct_messages, ground_truth, question_for, task_config

# Records the SHA-256 of each task's data file, so a resumed run reads the same examples.
SOURCES_FILE = "sources.json"
SUMMARY_FILE = "summary.json"
# Map-reduce groups of examples that share a context, at once on a server that batches requests
# (fewer where the server runs fewer at once). A direct example is one call, so the call budget
# (``llm.concurrency``) is what bounds direct examples; they get the executor's default, twice it.
EXAMPLES_ON_SERVER = 8


class Prediction(BaseModel):
    """One line of ``preds_<task>.jsonl``: the official three fields, then the result's status and
    the example's cost. ``prediction`` is the model's text, as InfiniteBench scores it: for
    map-reduce the answer, or when the text does not support it the model's unsupported guess, so
    that scores compare with the paper's; ``status`` says which (``PipelineResult.status``; null for
    --method direct, whose one call nothing checks, and for lines written before statuses)."""

    id: int | str
    prediction: str
    ground_truth: Any
    method: Method
    model: str
    status: Status | None = None
    found: bool
    calls: int
    failed_calls: int
    prompt_tokens: int
    completion_tokens: int
    wall_time_s: float
    # Chunks whose map call failed for good (map-reduce): a prediction without an answer is then
    # no statement about the whole document.
    unread_chunks: list[int] = []


class TaskReport(BaseModel):
    task: str
    method: Method
    n: int
    documents: int  # distinct contexts of the n predictions' examples (as read by this invocation)
    scores: dict[str, float]  # scorer -> score x100, over every prediction in the file
    calls: int
    failed_calls: int
    prompt_tokens: int
    completion_tokens: int
    example_time_s: float  # summed over examples (they overlap when run concurrently)
    run_time_s: float  # this invocation's wall time for the task
    new: int  # examples run by this invocation (the rest were resumed from the file)
    failed_examples: int  # examples that raised and have no prediction (a rerun retries them)


class BatchRun:
    """``await BatchRun(...).run(tasks, examples_for)``: every task in turn, examples concurrently."""

    def __init__(
        self,
        out_dir: str | Path,
        *,
        method: Method = "mr",
        config_path: str | None = None,
        overrides: dict[str, Any] | None = None,
        examples_in_flight: int | None = None,
        client: LLMClient | None = None,
        progress: bool = True,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.method = method
        self._config_path = config_path
        self._overrides = overrides or {}
        self._executor = Executor(self.out_dir, client=client, in_flight=examples_in_flight, progress=progress, log=log)

    def config_for(self, task: str) -> PipelineConfig:
        return PipelineConfig.load(self._config_path, preset=task_config(task).pipeline, **self._overrides)

    async def run(self, tasks: Sequence[str], files: dict[str, Path], limit: int | None = None) -> list[TaskReport]:
        """Runs the first ``limit`` examples of ``files[task]`` for each task, in turn."""
        for task in tasks:  # a missing scorer package is found before predictions it cannot score
            check_scorer_packages(task)
        configs = {task: self.config_for(task) for task in tasks}
        async with self._executor:
            for task in tasks:  # every data file is checked before hours are spent on the first task
                pin_source(self.out_dir / SOURCES_FILE, task, files[task])
            return [await self._run_task(task, configs[task], read_examples(files[task], limit)) for task in tasks]

    async def _run_task(self, task: str, config: PipelineConfig, examples: list[Example]) -> TaskReport:
        path = self.out_dir / f"preds_{task}.jsonl"
        finished = read_finished(path, self.method)
        contexts = {str(example.id): text_sha256(example.context) for example in examples}
        # Every example's map calls, through the one client: a chunk of one example's context equal
        # to one of another's (the passkey haystack repeats one block) is read once (``reuse``).
        shared_calls = SharedCalls[MapOutput]()

        async def predict(example: Example, shared: Shared) -> Prediction:
            prediction = await self._predict_directly(task, config, shared, example)
            check_same_model((p.model for p in finished), prediction.model, path)
            return prediction

        async def predict_together(group: Sequence[Example], shared: Shared) -> list[Prediction | LlmxmrError]:
            predictions = await self._predict_together(task, config, shared, shared_calls, group)
            for model in {p.model for p in predictions if isinstance(p, Prediction)}:
                check_same_model((p.model for p in finished), model, path)
            return predictions

        job = Job(
            name=task,
            unit="example",
            items=examples,
            key=lambda example: str(example.id),
            work=predict if self.method == "direct" else Together(lambda e: contexts[str(e.id)], predict_together),
            sink=_predictions_file(path),
            config=config,
            on_server=EXAMPLES_ON_SERVER if self.method == "mr" else None,
        )
        return self._report(task, path, await self._executor.run(job), contexts)

    async def _predict_directly(
        self, task: str, config: PipelineConfig, shared: Shared, example: Example
    ) -> Prediction:
        """One call with the document cut to fit, as InfiniteBench does."""
        label = ground_truth(task, example)
        async with shared.calls.slot("direct", shared.calls.join()):  # within llm.concurrency
            direct = await answer_directly(
                shared.client,
                config.for_stage("reduce"),  # the model that answers (``Shared.client``)
                lambda context: direct_messages(task, example, context),
                example.context,
                task_config(task).direct_max_tokens,
            )
        return _prediction(example, label, "direct", direct.answer, direct.model, True, direct.trace)

    async def _predict_together(
        self,
        task: str,
        config: PipelineConfig,
        shared: Shared,
        shared_calls: SharedCalls[MapOutput],
        group: Sequence[Example],
    ) -> list[Prediction | LlmxmrError]:
        """Map-reduce over examples that share a context: one reading, one outcome per example (a
        bad example, or one that lost a call, goes without a prediction, not its group-mates)."""
        outcomes: dict[int, Prediction | LlmxmrError] = {}
        asked: dict[int, tuple[Any, str]] = {}  # place in the group -> label, question
        for place, example in enumerate(group):
            try:
                asked[place] = (ground_truth(task, example), question_for(task, example))
            except UsageError as exc:
                outcomes[place] = exc
        if asked:
            pipeline = MapReducePipeline(
                config, client=shared.clients, budget=shared.budgets, shared_calls=shared_calls
            )
            results = await pipeline.arun_many(group[0].context, [question for _, question in asked.values()])
            for (place, (label, _)), res in zip(asked.items(), results, strict=True):
                text = res.answer or res.unsupported_guess or ""
                prediction = _prediction(group[place], label, "mr", text, res.model, res.found, res.trace)
                prediction.status = res.status
                prediction.unread_chunks = res.unread_chunks
                outcomes[place] = complete_or_error(res.trace, prediction)
        return [outcomes[place] for place in range(len(group))]

    def _report(self, task: str, path: Path, stats: RunStats, contexts: dict[str, str]) -> TaskReport:
        finished = read_finished(path, self.method)
        rows = [p.model_dump() for p in finished]
        return TaskReport(
            task=task,
            method=self.method,
            n=len(finished),
            documents=len({contexts[str(p.id)] for p in finished if str(p.id) in contexts}),
            scores={scorer: score_predictions(task, rows, scorer) for scorer in SCORERS} if rows else {},
            **summed_usage(finished),
            example_time_s=round(sum(p.wall_time_s for p in finished), 3),
            run_time_s=stats.run_time_s,
            new=stats.new,
            failed_examples=stats.failed,
        )


def _prediction(
    example: Example, label: Any, method: Method, answer: str, model: str, found: bool, trace: Trace
) -> Prediction:
    totals = trace.totals
    return Prediction(
        id=example.id,
        prediction=answer,
        ground_truth=label,
        method=method,
        model=model,
        found=found,
        calls=totals.calls,
        failed_calls=totals.failed_calls,
        prompt_tokens=totals.prompt_tokens,
        completion_tokens=totals.completion_tokens,
        wall_time_s=totals.wall_time_s,
    )


def read_finished(path: Path, method: Method) -> list[Prediction]:
    """The predictions already in ``path`` (a half-written last line is cut off)."""
    finished = _predictions_file(path).read()
    other = next((p.method for p in finished if p.method != method), None)
    if other is not None:
        raise UsageError(f"{path} holds --method {other} predictions; use another --out")
    return finished


def _predictions_file(path: Path) -> JsonLines[Prediction]:
    return JsonLines(path, Prediction, lambda prediction: str(prediction.id), "a prediction written by llmxmr")


def write_summary(out_dir: str | Path, method: Method, source: DataSource, reports: list[TaskReport]) -> dict[str, Any]:
    """``<out>/summary.json``: the run's data source and every task's report, written whole."""
    summary = {
        "method": method,
        "data": source.model_dump(exclude_none=True),
        "tasks": [report.model_dump() for report in reports],
    }
    write_atomically(Path(out_dir) / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    return summary


def format_table(reports: list[TaskReport]) -> str:
    """The summary table: one row per task. Scores, calls, tokens and seconds per example cover
    every prediction in the file, docs the distinct contexts among them; wall time is this
    invocation's."""
    header = (
        f"{'task':<22}{'method':>7}{'n':>6}{'docs':>6}{'official':>10}{'lenient':>9}{'calls':>8}"
        f"{'prompt tok':>12}{'compl tok':>11}{'s/example':>11}{'wall s':>9}"
    )
    rows = [header, "-" * len(header)]
    for r in reports:
        per_example = r.example_time_s / r.n if r.n else 0.0
        official = f"{r.scores['official']:.2f}" if r.scores else "-"
        lenient = f"{r.scores['lenient']:.2f}" if r.scores else "-"
        rows.append(
            f"{r.task:<22}{r.method:>7}{r.n:>6}{r.documents:>6}{official:>10}{lenient:>9}{r.calls:>8}"
            f"{r.prompt_tokens:>12,}{r.completion_tokens:>11,}{per_example:>11.1f}{r.run_time_s:>9.1f}"
        )
    return "\n".join(rows)
