"""The ``llmxmr`` command: thin wrappers that parse flags, call the library, and turn errors into
one line and an exit code (2 for usage errors, 1 for failures, 130 on Ctrl-C)."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial, wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from . import gateway as gateways
from . import local_server as local_servers
from . import serve as serving
from .clients import make_client
from .config import PipelineConfig
from .console import AnswerPrinter, Interrupted
from .documents import Document, read_document
from .errors import LlmxmrError, UsageError
from .estimate import CostEstimate, batch_documents, estimate_cost, format_estimate, questions_by_document
from .events import ProgressBar
from .executor import write_atomically
from .grounding import Citation
from .pipeline import MapReducePipeline, PipelineResult
from .prompts import TASK_FAMILIES
from .questions import Question, read_questions
from .report import QuestionRun, load_runs, render_report, write_report
from .stage_models import StageClients, short_model_name

if TYPE_CHECKING:
    import asyncio

    from .bench import Method
    from .bench.infinitebench.data import DataSource
    from .bench.infinitebench.runner import BatchRun


# Set (as the tests do) to let unexpected errors raise with their traceback instead of one line.
RAISE_ERRORS_VARIABLE = "LLMXMR_RAISE_ERRORS"


def _reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """One line on stderr for any error; the traceback only with -v, which it adds to the command."""

    @wraps(command)
    def wrapper(*args: Any, verbose: bool = False, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except LlmxmrError as exc:
            _fail(str(exc), exc.exit_code, verbose)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as exc:  # a bug: still one line, with the way to see more
            if os.environ.get(RAISE_ERRORS_VARIABLE):
                raise
            _fail(f"unexpected {type(exc).__name__}: {exc} (run with -v for the traceback)", 1, verbose)

    return click.option("-v", "--verbose", is_flag=True, help="Tracebacks on errors.")(wrapper)


def _fail(message: str, code: int, verbose: bool) -> None:
    if verbose:
        traceback.print_exc()
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


# Flags every command that calls an LLM takes, and the settings they override.
_LLM_FLAGS = {
    "base_url": "llm.base_url",
    "api_key": "llm.api_key",
    "model": "llm.model",
    "map_base_url": "stages.map.llm.base_url",
    "map_model": "stages.map.llm.model",
    "reduce_base_url": "stages.reduce.llm.base_url",
    "reduce_model": "stages.reduce.llm.model",
    "concurrency": "llm.concurrency",
    "context_window": "llm.context_window",
    "tokenizer": "llm.tokenizer",
    "chunk_tokens": "chunking.chunk_tokens",
    "cache": "llm.cache",
    "on_chunk_error": "on_chunk_error",
    "grounding": "grounding.mode",
}


@dataclass(frozen=True)
class _Settings:
    """The --config file and the setting flags of one command line."""

    config_path: str | None
    overrides: dict[str, Any]

    def load(self, preset: dict[str, Any] | None = None, **more: Any) -> PipelineConfig:
        return PipelineConfig.load(self.config_path, preset=preset, **self.overrides, **more)


def _llm_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Adds the server and settings flags; the command receives them as ``settings``."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        overrides = {dotted: kwargs.pop(name) for name, dotted in _LLM_FLAGS.items()}
        kwargs["settings"] = _Settings(kwargs.pop("config_path"), overrides)
        return command(*args, **kwargs)

    options = [
        click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML settings file."),
        click.option(
            "--base-url",
            help="OpenAI-compatible server, e.g. http://127.0.0.1:30000/v1, or embedded: the in-process model "
            "(the default).",
        ),
        click.option("--api-key", help="API key for the server (or LLMXMR_API_KEY)."),
        click.option("--model", help="Model name on the server (default: the first it lists)."),
        click.option(
            "--map-base-url",
            help="The map calls' server, or embedded (default: --base-url's); its window sizes the chunks.",
        ),
        click.option("--map-model", help="The map calls' model name on their server (default: --model)."),
        click.option(
            "--reduce-base-url",
            help="The collapse and reduce calls' server, or embedded (default: --base-url's).",
        ),
        click.option("--reduce-model", help="The collapse and reduce calls' model name on their server."),
        click.option(
            "--chunk-tokens",
            type=click.IntRange(min=1),
            help="Most document tokens per chunk "
            "(default: as many as fit; InfiniteBench 4096; the bundled model 2048).",
        ),
        click.option(
            "--concurrency",
            type=click.IntRange(min=1),
            help="LLM calls in flight at once, shared by a batch's documents "
            "(default: 64 per server or gateway worker).",
        ),
        click.option("--context-window", type=click.IntRange(min=1), help="Model context window in tokens."),
        click.option("--tokenizer", help="auto, tiktoken, server, or a local Hugging Face tokenizer directory."),
        click.option("--cache", type=click.Path(dir_okay=False), help="SQLite file of LLM replies: reruns reuse them."),
        click.option(
            "--on-chunk-error",
            type=click.Choice(["skip", "fail"]),
            help="A chunk whose call keeps failing: skip it (recorded, confidence scaled) or stop the run.",
        ),
        click.option(
            "--grounding",
            type=click.Choice(["off", "cap", "strict"]),
            help="Answers whose quotes are not in the text: "
            "trusted (off), capped or dropped (cap; default), dropped (strict).",
        ),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def _stream_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--stream/--no-stream",
        default=None,
        help="Print each answer as the model writes it, then check it "
        "(default: when the output is a terminal; never with --json).",
    )(command)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="llmxmr")
def main() -> None:
    """Answer questions about documents far longer than a model's context window."""


@main.command()
@click.option("--input", "input_path", required=True, help="Document file, or - for standard input.")
@click.option(
    "--question",
    "question_texts",
    multiple=True,
    help="A question about the document (repeat for several: one reading answers them all).",
)
@click.option(
    "--questions",
    "questions_path",
    type=click.Path(dir_okay=False),
    help='File of questions: one per line, or JSONL {"id", "question"}.',
)
@click.option("--password", help="Password of an encrypted PDF.")
@_llm_options
@click.option("--task-type", type=click.Choice(TASK_FAMILIES), help="Task family, which picks the prompts.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the whole result as JSON (several questions: one object per line)."
)
@click.option("--no-citations", is_flag=True, help="Print the answer without the quotes it rests on.")
@click.option("--trace", "trace_path", type=click.Path(dir_okay=False), help="Write every call to this JSON file.")
@click.option(
    "--report", "report_path", type=click.Path(dir_okay=False), help="Write the run as one self-contained HTML page."
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@_stream_option
@click.option(
    "--dry-run", is_flag=True, help="Make no LLM call: print the chunks, calls and prompt tokens the run would take."
)
@_reports_errors
def run(
    input_path: str,
    question_texts: tuple[str, ...],
    questions_path: str | None,
    password: str | None,
    settings: _Settings,
    task_type: str | None,
    as_json: bool,
    no_citations: bool,
    trace_path: str | None,
    report_path: str | None,
    no_progress: bool,
    stream: bool | None,
    dry_run: bool,
) -> None:
    """Answer questions about the document in --input (text, Markdown, PDF, HTML, EPUB or DOCX):
    one --question, several, or a --questions file; the document is read once for all of them."""
    questions = _asked(question_texts, questions_path)
    streamed = _streams(stream, as_json)
    config = settings.load(task_type=task_type)
    document = read_document(input_path, max_bytes=int(config.max_document_mb * 2**20), password=password)
    for warning in document.warnings:
        click.echo(f"warning: {document.name}: {warning}", err=True)
    asked = [(document.text, [q.question for q in questions])]
    if dry_run:
        (estimate,) = _estimated([(config, asked)])
        click.echo(estimate.model_dump_json(indent=2) if as_json else format_estimate(estimate))
        return
    # The report shows what --dry-run would have said beside what the run spent: priced first,
    # without an LLM call, as --dry-run prices it.
    planned = _estimated([(config, asked)])[0] if report_path else None
    pipeline = MapReducePipeline(config, progress=not no_progress and not streamed)
    if streamed:  # each answer printed as it is written, then its summary
        results = _streamed_run(pipeline, document, questions, no_citations, not no_progress)
    else:
        results = pipeline.run_many(document, [q.question for q in questions])
    if report_path:
        runs = [QuestionRun.of_result(q.id, r) for q, r in zip(questions, results, strict=True)]
        source = f"llmxmr run on {document.name}"
        page = render_report(runs, document=document, config=config, estimate=planned, source=source)
        write_report(Path(report_path), page)
    if len(results) == 1:  # one question: the output as it always was
        (result,) = results
        if trace_path:
            write_atomically(Path(trace_path), result.model_dump_json(indent=2))
        if streamed:
            return
        click.echo(
            result.model_dump_json(indent=2, exclude={"trace": {"calls"}})
            if as_json
            else _answer_text(result, no_citations)
        )
        click.echo(_summary(result), err=True)
        return
    if trace_path:
        traced = [{"id": q.id, **r.model_dump(mode="json")} for q, r in zip(questions, results, strict=True)]
        write_atomically(Path(trace_path), json.dumps(traced, indent=2))
    if streamed:
        return
    for number, (question, result) in enumerate(zip(questions, results, strict=True), 1):
        if as_json:
            click.echo(json.dumps({"id": question.id, **result.model_dump(mode="json", exclude={"trace": {"calls"}})}))
        else:
            if number > 1:
                click.echo()
            click.echo(f"[{question.id}] {question.question}")
            click.echo(_answer_text(result, no_citations))
        click.echo(f"[{question.id}] {_summary(result)}", err=True)


def _streams(stream: bool | None, as_json: bool) -> bool:
    """Whether answers are printed as they stream in: as asked, else when stdout is a terminal;
    never as JSON, which is printed whole."""
    if as_json:
        if stream:
            raise UsageError("--json prints each result whole, once it is checked: it does not go with --stream")
        return False
    return stream if stream is not None else sys.stdout.isatty()


def _streamed_run(
    pipeline: MapReducePipeline, document: Document, questions: list[Question], no_citations: bool, progress: bool
) -> list[PipelineResult]:
    """``run`` with each answer printed as it is written (``llmxmr.console``), each result's
    summary after it. Ctrl-C stops the calls, prints the partial answers verified so far, and
    exits with 130."""
    import asyncio

    several = len(questions) > 1

    def header(index: int) -> str:
        return f"[{questions[index].id}] {questions[index].question}"

    def summary(index: int, result: PipelineResult) -> None:
        click.echo(f"[{questions[index].id}] {_summary(result)}" if several else _summary(result), err=True)

    bar = ProgressBar(progress)
    printer = AnswerPrinter(
        len(questions),
        lambda result: _answer_text(result, no_citations),
        header=header if several else None,
        done=summary,
        bar=bar,
    )
    try:
        return asyncio.run(pipeline.arun_many(document, [q.question for q in questions], on_event=printer))
    except KeyboardInterrupt:
        shown = printer.interrupted()
        bar.close()
        click.echo(f"interrupted: {_interrupted_note(shown)}", err=True)
        sys.exit(130)
    finally:
        bar.close()


def _interrupted_note(shown: Interrupted) -> str:
    writing = "the answer being written was not checked; " if shown.writing else ""
    if shown.verified:
        return f"{writing}the {shown.verified} partial answer(s) verified so far are above"
    return f"{writing}no partial answer was verified yet"


@main.command()
@click.argument("source", type=click.Path(exists=True))
@click.option("-o", "--out", "out_path", required=True, type=click.Path(dir_okay=False), help="The HTML file to write.")
@click.option("--input", "input_path", help="The document that was read: its chunks' text is shown.")
@click.option("--password", help="Password of an encrypted PDF.")
@_reports_errors
def report(source: str, out_path: str, input_path: str | None, password: str | None) -> None:
    """Write one self-contained HTML page of a run: SOURCE is a trace (llmxmr run --trace FILE) or
    a batch folder (its results.jsonl)."""
    runs, kind = load_runs(Path(source))
    document = read_document(input_path, password=password) if input_path else None
    page = render_report(runs, document=document, source=f"{kind} {Path(source).name}")
    write_report(Path(out_path), page)
    click.echo(f"wrote {out_path}", err=True)


# Memory for the embedded model's state in 'llmxmr chat', where questions come back to chunks read
# before; 'run' reads each chunk once per run and keeps configs/default.yaml's 0.
CHAT_STATE_CACHE_MB = 1024


@main.command()
@click.option("--input", "input_path", required=True, help="Document file, or - for standard input.")
@click.option("--password", help="Password of an encrypted PDF.")
@_llm_options
@click.option("--task-type", type=click.Choice(TASK_FAMILIES), help="Task family, which picks the prompts.")
@click.option(
    "--state-cache-mb",
    type=click.IntRange(min=0),
    help="Embedded model: memory for its state after each chunk, so later questions do not read a chunk again "
    f"(default: embedded.state_cache_mb if your config sets it, else {CHAT_STATE_CACHE_MB}).",
)
@click.option("--no-citations", is_flag=True, help="Print answers without the quotes they rest on.")
@_stream_option
@_reports_errors
def chat(
    input_path: str,
    password: str | None,
    settings: _Settings,
    task_type: str | None,
    state_cache_mb: int | None,
    no_citations: bool,
    stream: bool | None,
) -> None:
    """Ask question after question about one document. It is read and chunked once, and the model
    (or the server connection) stays open. Ctrl-C cancels the question being answered; Ctrl-D or
    an empty line ends."""
    import asyncio

    with contextlib.suppress(ImportError):  # line editing and history where the platform has them
        import readline  # noqa: F401

    # chat's own default sits where a harness's preset does: beneath the user's YAML and the flag.
    chat_default = {"embedded": {"state_cache_mb": CHAT_STATE_CACHE_MB}}
    config = settings.load(preset=chat_default, task_type=task_type, **{"embedded.state_cache_mb": state_cache_mb})
    document = read_document(input_path, max_bytes=int(config.max_document_mb * 2**20), password=password)
    for warning in document.warnings:
        click.echo(f"warning: {document.name}: {warning}", err=True)
    with asyncio.Runner() as runner:  # one event loop across the questions, and Ctrl-C cancels one
        clients = StageClients.open(config, make_client)
        streamed = _streams(stream, as_json=False)
        pipeline = MapReducePipeline(config, client=clients, progress=not streamed)
        try:
            click.echo(f"{document.name}: ask a question (an empty line or Ctrl-D ends).", err=True)
            while (question := _next_question()) is not None:
                if streamed:  # printed as it is written, its summary after it
                    _streamed_question(runner, pipeline, document, question, no_citations)
                    continue
                try:
                    result = runner.run(pipeline.arun(document, question))
                except KeyboardInterrupt:
                    click.echo("(cancelled)", err=True)
                    continue
                click.echo(_answer_text(result, no_citations))
                click.echo(_summary(result), err=True)
        finally:
            runner.run(clients.aclose())


def _streamed_question(
    runner: asyncio.Runner, pipeline: MapReducePipeline, document: Document, question: str, no_citations: bool
) -> None:
    """One question of ``chat``, its answer printed as it is written (``llmxmr.console``). Ctrl-C
    cancels it, and prints the partial answers verified so far."""
    bar = ProgressBar()
    printer = AnswerPrinter(
        1,
        lambda result: _answer_text(result, no_citations),
        done=lambda _, result: click.echo(_summary(result), err=True),
        bar=bar,
    )
    try:
        runner.run(pipeline.arun_many(document, [question], on_event=printer))
    except KeyboardInterrupt:
        shown = printer.interrupted()
        bar.close()
        click.echo(f"(cancelled: {_interrupted_note(shown)})", err=True)
    finally:
        bar.close()


def _next_question() -> str | None:
    """The next line typed; None at the end (Ctrl-D or an empty line). Ctrl-C at the prompt
    clears the line."""
    while True:
        try:
            line = input("? ")
        except EOFError:
            return None
        except KeyboardInterrupt:
            click.echo(err=True)
            continue
        return line.strip() or None


def _asked(texts: tuple[str, ...], path: str | None) -> list[Question]:
    """The questions of ``run``: the --question flags (numbered from 1), then the --questions file."""
    questions = [Question(id=number, question=text) for number, text in enumerate(texts, 1)]
    if any(not q.question.strip() for q in questions):
        raise UsageError("--question is empty")
    if path is not None:
        if questions:
            raise UsageError("give --question or --questions, not both")
        questions = read_questions(Path(path))
    if not questions:
        raise UsageError("give a --question (or several), or --questions FILE")
    return questions


# Closest passages printed under a result without a supported answer (all are in --json).
SHOWN_PASSAGES = 5


def _answer_text(result: PipelineResult, no_citations: bool) -> str:
    """A result as ``run`` and ``chat`` print it. An answer, with whether the reading was
    incomplete and its citations. Anything else is never printed as an answer: where the model
    guessed (unsupported, or incomplete with a guess), "No supported answer", the guess labelled as
    unsupported, why, and the closest passages; otherwise why nothing was found (not found, or
    incomplete)."""
    if result.status == "answered":
        lines = [result.answer]
        if not result.complete:
            unread = len(result.unread_chunks)
            them = "it" if unread == 1 else "them"
            lines.append(
                f"(incomplete: {unread} of {len(result.chunks)} chunks unread, the confidence scaled; "
                f"a rerun retries {them})"
            )
        if result.citations and not no_citations:
            lines.append(_passages("Citations:", result.citations))
        return "\n".join(lines)
    if result.unsupported_guess is not None:  # unsupported, or incomplete with the model's guess
        lines = ["No supported answer", f"Unsupported guess (not an answer): {result.unsupported_guess}"]
        lines.append(f"({result.rationale})")
        if not no_citations:
            lines.append(_closest(result.related))
        return "\n".join(lines)
    return f"({'incomplete' if result.status == 'incomplete' else 'not found'}) {result.rationale}"


def _closest(related: list[Citation]) -> str:
    if not related:
        return "\nClosest passages: none (no passage the model quoted was found in the text)"
    more = len(related) - SHOWN_PASSAGES
    shown = _passages("Closest passages (they do not support the guess):", related[:SHOWN_PASSAGES])
    return f"{shown}\n  ... and {more} more (--json lists them)" if more > 0 else shown


def _passages(title: str, citations: list[Citation]) -> str:
    lines = ["", title]
    for number, citation in enumerate(citations, 1):
        quote = " ".join(citation.quote.split())
        where = f"{citation.location}, " if citation.location else ""
        lines.append(
            f"  [{number}] {where}chunk {citation.chunk}, line {citation.line}, "
            f'chars {citation.start}-{citation.end}: "{quote}"'
        )
    return "\n".join(lines)


def _summary(result: PipelineResult) -> str:
    totals = result.trace.totals
    failed = f", {len(result.failed_calls)} failed" if result.failed_calls else ""
    failed += f" ({len(result.unread_chunks)} of {len(result.chunks)} chunks unread)" if result.unread_chunks else ""
    reasks = f" ({totals.requests} requests)" if totals.requests != totals.calls else ""
    reasks += f" ({totals.cache_hits} from cache)" if totals.cache_hits else ""
    cached = f" ({totals.cached_tokens:,} prompt tokens cached)" if totals.cached_tokens else ""
    profile = f" (profile {result.model_profile})" if result.model_profile else ""
    line = (
        f"{result.status} · confidence {result.confidence:g}/5 · {len(result.chunks)} chunks · "
        f"{totals.calls} calls{reasks}{failed} · "
        f"{totals.prompt_tokens + totals.completion_tokens:,} tokens{cached} · {totals.wall_time_s:.1f} s · "
        f"{result.model}{profile}"
    )
    if len(totals.by_model) < 2:
        return line
    per_model = [  # a model per stage: what each one cost
        f"  {short_model_name(model)} ({', '.join(spent.stages)}): {spent.calls} call{'s' * (spent.calls != 1)} · "
        f"{spent.prompt_tokens:,} prompt + {spent.completion_tokens:,} completion tokens"
        for model, spent in totals.by_model.items()
    ]
    return "\n".join([line, *per_model])


@main.command()
@click.option(
    "--input",
    "input_path",
    required=True,
    type=click.Path(dir_okay=False),
    help='JSONL: {"id", "question", "document" | "path"} per line.',
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for results.jsonl and summary.json.",
)
@click.option(
    "--documents-in-flight",
    type=click.IntRange(min=1),
    help="Documents open at once (default: twice the concurrency, but no more than the server runs requests "
    "at once: 1 embedded or on llama-cpp-python's server).",
)
@_llm_options
@click.option("--task-type", type=click.Choice(TASK_FAMILIES), help="Task family, which picks the prompts.")
@click.option("--json", "as_json", is_flag=True, help="Print the totals as JSON instead of a table.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option(
    "--dry-run", is_flag=True, help="Make no LLM call: print the chunks, calls and prompt tokens the run would take."
)
@_reports_errors
def batch(
    input_path: str,
    out_dir: str,
    documents_in_flight: int | None,
    settings: _Settings,
    task_type: str | None,
    as_json: bool,
    no_progress: bool,
    dry_run: bool,
) -> None:
    """Answer a question about each document of a JSONL file. Results are written as documents
    finish; the same command resumes, skipping ids already answered."""
    import asyncio

    from . import batch as batches

    items = batches.read_items(Path(input_path))
    config = settings.load(task_type=task_type)
    if dry_run:  # every line of the input, the lines about one document together
        documents = batch_documents(items, int(config.max_document_mb * 2**20))
        (estimate,) = _estimated([(config, documents)], across_documents=True)  # a batch shares identical calls
        click.echo(estimate.model_dump_json(indent=2) if as_json else format_estimate(estimate))
        return
    try:
        report = asyncio.run(
            batches.run_batch(items, out_dir, config, documents_in_flight=documents_in_flight, progress=not no_progress)
        )
    except KeyboardInterrupt:
        click.echo(f"interrupted: finished results are in {out_dir}; rerun the same command to resume", err=True)
        sys.exit(130)
    click.echo(report.model_dump_json(indent=2) if as_json else batches.format_report(report))
    if report.failures:
        raise LlmxmrError(
            f"{report.failures} document(s) failed and have no result; rerun the same command to retry them"
        )


@main.command(context_settings={"ignore_unknown_options": True})
@click.option(
    "--local", is_flag=True, help="Serve a local GGUF with llama.cpp (llama-cpp-python's server) instead of SGLang."
)
@click.option(
    "--model-path",
    "--model",
    "model_path",
    help=f"SGLang: Hugging Face id or local path (default {serving.DEFAULT_MODEL}); "
    "--local: a GGUF file (default: the bundled SmolLM2).",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--port", type=click.IntRange(1, 65535), help=f"Default: 30000 (SGLang), {local_servers.DEFAULT_PORT} (--local)."
)
@click.option(
    "--context-length",
    "--n-ctx",
    "context_length",
    type=click.IntRange(min=256),
    help="Context window in tokens (SGLang: the model's own; --local: embedded.n_ctx).",
)
@click.option(
    "--dp",
    "dp_size",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Replicas of the model on this node (SGLang's --dp-size).",
)
@click.option(
    "--extra-buffers",
    type=click.Choice(["auto", "on", "off"]),
    help="--local: llama.cpp's extra buffer types (default: embedded.extra_buffers, auto).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="YAML settings file (--local reads its embedded section).",
)
@click.option("--dry-run", is_flag=True, help="Print the command instead of running it.")
@click.argument("extra", nargs=-1, type=click.UNPROCESSED)
@_reports_errors
def serve(
    local: bool,
    model_path: str | None,
    host: str,
    port: int | None,
    context_length: int | None,
    dp_size: int,
    extra_buffers: str | None,
    config_path: str | None,
    dry_run: bool,
    extra: tuple[str, ...],
) -> None:
    """Start an SGLang server for llmxmr (MiniCPM3-4B by default), or with --local a llama.cpp
    server for a GGUF file. Arguments after the options go to sglang.launch_server unchanged.
    Several servers or nodes go behind 'llmxmr gateway'."""
    if local:
        if extra or dp_size != 1:
            raise UsageError("--local takes no --dp and no extra server arguments")
        flags: dict[str, Any] = {"embedded.extra_buffers": extra_buffers, "embedded.n_ctx": context_length}
        config = PipelineConfig.load(config_path, **flags)
        _serve_local(config, model_path, host, port or local_servers.DEFAULT_PORT, dry_run)
        return
    if extra_buffers or config_path:
        raise UsageError("--extra-buffers and --config go with --local")
    command = serving.sglang_command(
        model_path or serving.DEFAULT_MODEL, host, port or 30000, context_length, extra, dp_size
    )
    if dry_run:
        click.echo(shlex.join(command))
        return
    click.echo(f"starting SGLang; then: llmxmr run --base-url http://{host}:{port or 30000}/v1 ...", err=True)
    serving.launch(command)


def _serve_local(config: PipelineConfig, model_path: str | None, host: str, port: int, dry_run: bool) -> None:
    from .clients.embedded import default_model_path
    from .llama_safety import extra_buffers_enabled

    path = Path(model_path or config.embedded.model_path or default_model_path())
    if not path.is_file():
        raise UsageError(f"GGUF model file not found: {path}")
    plan = local_servers.LocalServerPlan(
        model_path=path,
        host=host,
        port=port,
        n_ctx=config.embedded.n_ctx,
        threads=config.embedded.threads,
        extra_buffers=extra_buffers_enabled(config.embedded.extra_buffers, path),
    )
    if dry_run:
        click.echo(shlex.join(plan.command()))
        return
    click.echo(f"starting llama.cpp's server for {path.name}...", err=True)

    def announce(base_url: str) -> None:
        click.echo(f"server ready; then: llmxmr run --base-url {base_url} ... (Ctrl-C stops the server)", err=True)
        click.echo(base_url)  # last, and flushed by click: a script that waits for it finds the server up

    local_servers.run_local_server(plan, announce)
    click.echo("server stopped", err=True)


@main.command(context_settings={"ignore_unknown_options": True})
@click.option(
    "--workers", required=True, help="Comma-separated worker URLs, e.g. http://10.0.0.1:30000,http://10.0.0.2:30000."
)
@click.option(
    "--host",
    default=gateways.LOOPBACK,
    show_default=True,
    help="Address to listen on; the gateway has no authentication.",
)
@click.option("--port", default=gateways.DEFAULT_PORT, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--policy",
    type=click.Choice(gateways.POLICIES),
    help="How smg picks a worker (default: power_of_two; round_robin for one worker).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    help="Port of smg's Prometheus metrics on 127.0.0.1 (default: a free one).",
)
@click.option(
    "--startup-timeout",
    default=gateways.STARTUP_TIMEOUT_S,
    show_default=True,
    type=click.FloatRange(min=1),
    help="Seconds to wait for every worker to register.",
)
@click.option("--dry-run", is_flag=True, help="Print the command instead of running it.")
@click.argument("extra", nargs=-1, type=click.UNPROCESSED)
@_reports_errors
def gateway(
    workers: str,
    host: str,
    port: int,
    policy: str | None,
    metrics_port: int | None,
    startup_timeout: float,
    dry_run: bool,
    extra: tuple[str, ...],
) -> None:
    """Start the smg gateway in front of several SGLang servers (or other OpenAI-compatible ones),
    wait until each is registered, and print the URL for 'llmxmr run --base-url'. Ctrl-C stops
    it. Arguments after the options go to 'smg launch' unchanged."""
    worker_urls = gateways.parse_workers(workers)
    plan = gateways.GatewayPlan(
        workers=worker_urls,
        metrics_port=metrics_port or gateways.free_port(),
        host=host,
        port=port,
        policy=policy or gateways.default_policy(len(worker_urls)),
        startup_timeout_s=startup_timeout,
        extra=extra,
    )
    if dry_run:
        click.echo(shlex.join(plan.command()))
        return
    click.echo(f"starting smg in front of {len(plan.workers)} worker(s)...", err=True)

    def announce(base_url: str) -> None:
        # The URL last: a script that waits for it finds everything else written.
        click.echo(f"gateway ready; then: llmxmr run --base-url {base_url} ... (Ctrl-C stops the gateway)", err=True)
        click.echo(base_url)

    gateways.run_gateway(plan, announce)
    click.echo("gateway stopped", err=True)


@main.group()
def bench() -> None:
    """Benchmarks: InfiniteBench runs, scoring and synthetic data."""


@bench.command()
@click.option("--task", required=True, help="InfiniteBench task, e.g. passkey or longbook_qa_eng.")
@click.option("--preds", required=True, help='Predictions JSONL: {"id", "prediction", "ground_truth"} per line.')
@click.option(
    "--scorer", default="official", show_default=True, help="official (InfiniteBench) or lenient (LLM x MapReduce)."
)
@click.option("--model", help='Only for math_calc: "gpt4" applies InfiniteBench\'s GPT-4 rule.')
@click.option("--json", "as_json", is_flag=True, help="Print {task, scorer, n, score} as JSON.")
@_reports_errors
def score(task: str, preds: str, scorer: str, model: str | None, as_json: bool) -> None:
    """Score a predictions file; prints the score x100 with two decimals."""
    from .bench.infinitebench.scorers import score_file

    report = score_file(task, preds, scorer, model=model)
    if as_json:
        click.echo(json.dumps(report))
    else:
        click.echo(f"{report['score']:.2f}  ({report['task']}, {report['scorer']} scorer, n={report['n']})")


@bench.command()
@click.option(
    "--task",
    "tasks",
    required=True,
    help="Comma-separated synthetic tasks: passkey, number_string, kv_retrieval, math_find.",
)
@click.option("--length", required=True, help="Context length in cl100k tokens, e.g. 16k, 128k, 2000.")
@click.option("--n", "count", default=20, show_default=True, type=click.IntRange(min=1), help="Examples per task.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", required=True, help="A .jsonl file (one task), or a directory that receives <task>.jsonl.")
@_reports_errors
def generate(tasks: str, length: str, count: int, seed: int, out: str) -> None:
    """Generate InfiniteBench-style examples offline, in the official JSONL format."""
    from .bench.infinitebench.generate import generate as make_examples
    from .bench.infinitebench.generate import parse_length, write_jsonl

    names = _task_list(tasks)
    tokens = parse_length(length)
    if out.endswith(".jsonl") and len(names) > 1:
        raise UsageError("--out FILE.jsonl takes one task; give a directory for several")
    for name in names:
        path = Path(out) if out.endswith(".jsonl") else Path(out) / f"{name}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(make_examples(name, tokens, count, seed), path)
        click.echo(f"{path}: {count} {name} examples of {tokens:,} tokens (seed {seed})", err=True)


@bench.command()
@click.option("--task", "tasks", required=True, help="Comma-separated InfiniteBench tasks, or 'all'.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Folder with <task>.jsonl files.")
@click.option("--data", "data_file", type=click.Path(dir_okay=False), help="One task's JSONL file.")
@click.option("--hf", is_flag=True, help="Download the data from the Hugging Face Hub (needs llmxmr[hf]).")
@click.option("--hf-revision", help="Dataset commit, branch or tag for --hf (default: main, pinned at the first run).")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for preds_<task>.jsonl and summary.json.",
)
@click.option(
    "--method",
    type=click.Choice(["mr", "direct"]),
    default="mr",
    show_default=True,
    help="Map-reduce, or one call with the middle cut.",
)
@click.option("--limit", type=click.IntRange(min=1), help="The first N examples of each task.")
@click.option(
    "--examples-in-flight",
    type=click.IntRange(min=1),
    help="Examples run at once (default: 8 for --method mr, twice the concurrency for direct, but no more than "
    "the server runs requests at once: 1 embedded or on llama-cpp-python's server).",
)
@_llm_options
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON instead of a table.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option(
    "--dry-run", is_flag=True, help="Make no LLM call: print the chunks, calls and prompt tokens the run would take."
)
@_reports_errors
def infinitebench(
    tasks: str,
    data_dir: str | None,
    data_file: str | None,
    hf: bool,
    hf_revision: str | None,
    out_dir: str,
    method: Method,
    limit: int | None,
    examples_in_flight: int | None,
    settings: _Settings,
    as_json: bool,
    no_progress: bool,
    dry_run: bool,
) -> None:
    """Run InfiniteBench tasks; predictions are written as they finish and a rerun resumes."""
    import asyncio

    from .bench.infinitebench import data
    from .bench.infinitebench.runner import BatchRun, format_table, write_summary
    from .bench.infinitebench.scorers import TASKS

    names = list(TASKS) if tasks.strip() == "all" else _task_list(tasks)
    if sum(map(bool, (data_dir, data_file, hf))) != 1:
        raise UsageError("give exactly one of --data-dir, --data or --hf")
    if data_file and len(names) > 1:
        raise UsageError("--data holds one task's examples; use --data-dir for several tasks")
    if hf_revision and not hf:
        raise UsageError("--hf-revision goes with --hf")
    if hf:
        source = data.DataSource(hf_revision=data.pinned_revision(out_dir, hf_revision))
    else:
        source = data.DataSource(data_dir=data_dir, data_file=data_file)
    runner = BatchRun(
        out_dir,
        method=method,
        config_path=settings.config_path,
        overrides=settings.overrides,
        examples_in_flight=examples_in_flight,
        progress=not no_progress,
    )
    if dry_run:
        _estimate_tasks(runner, names, source, limit, as_json, method)
        return
    try:
        files = {task: source.path_for(task) for task in names}
        reports = asyncio.run(runner.run(names, files, limit))
    except KeyboardInterrupt:
        click.echo(f"interrupted: finished predictions are in {out_dir}; rerun the same command to resume", err=True)
        sys.exit(130)
    summary = write_summary(out_dir, method, source, reports)
    click.echo(json.dumps(summary, indent=2) if as_json else format_table(reports))
    failed = sum(r.failed_examples for r in reports)
    if failed:
        raise LlmxmrError(f"{failed} example(s) failed and have no prediction; rerun the same command to retry them")


def _estimate_tasks(
    runner: BatchRun, names: list[str], source: DataSource, limit: int | None, as_json: bool, method: str
) -> None:
    """``infinitebench --dry-run``: each task's estimate over its examples, those that share a
    context together, as the run groups them."""
    from .bench.infinitebench.data import read_examples
    from .bench.infinitebench.tasks import question_for
    from .executor import text_sha256

    if method != "mr":
        raise UsageError("--dry-run estimates map-reduce runs (--method mr)")
    jobs = []
    for task in names:
        examples = read_examples(source.path_for(task), limit)
        grouped = questions_by_document(examples, lambda e: text_sha256(e.context), partial(question_for, task))
        jobs.append((runner.config_for(task), [(first.context, questions) for first, questions in grouped]))
    estimates = dict(zip(names, _estimated(jobs), strict=True))
    if as_json:
        click.echo(json.dumps({task: e.model_dump(mode="json") for task, e in estimates.items()}, indent=2))
    else:
        click.echo("\n\n".join(f"{task}\n{format_estimate(e)}" for task, e in estimates.items()))


def _estimated(
    jobs: Sequence[tuple[PipelineConfig, Iterable[tuple[str, Sequence[str]]]]], *, across_documents: bool = False
) -> list[CostEstimate]:
    """``estimate_cost`` of each (config, documents), through the clients opened from the first
    config (one per stage's model): they give the context windows and token counters; no LLM call
    is made."""
    import asyncio

    async def estimate() -> list[CostEstimate]:
        clients = StageClients.open(jobs[0][0], make_client)
        try:
            return [
                await estimate_cost(config, clients, documents, across_documents=across_documents)
                for config, documents in jobs
            ]
        finally:
            await clients.aclose()

    return asyncio.run(estimate())


def _task_list(tasks: str) -> list[str]:
    from .bench.infinitebench.scorers import check_task

    names = [check_task(name.strip()) for name in tasks.split(",") if name.strip()]
    if not names:
        raise UsageError("--task names no task")
    return list(dict.fromkeys(names))


@bench.command()
@click.option(
    "--haystack", type=click.Path(exists=True), help="A folder of .txt files (read in name order) or one text file."
)
@click.option(
    "--lengths",
    default="2k:16k:4",
    show_default=True,
    help="Context lengths in tokens: a list (2k,8k,32k) or min:max:count.",
)
@click.option(
    "--depths",
    default="0:100:5",
    show_default=True,
    help="Needle depths in percent: a list (0,50,100) or min:max:count.",
)
@click.option(
    "--depth-spacing",
    type=click.Choice(["linear", "sigmoid"]),
    default="linear",
    show_default=True,
    help="How a depth range is spaced.",
)
@click.option("--needle", help="Your own needle sentence (default: the San Francisco sandwich).")
@click.option("--question", help="The question that --needle answers.")
@click.option(
    "--answer",
    "answers",
    multiple=True,
    help="A string the answer must contain (repeatable); each must occur in --needle.",
)
@click.option("--ruler-keys", type=click.IntRange(min=1), help="RULER-style needles: keys asked for (multi-query).")
@click.option("--ruler-values", type=click.IntRange(min=1), help="RULER-style: values per asked key (multi-value).")
@click.option("--ruler-distractors", type=click.IntRange(min=0), help="RULER-style: needles of keys not asked for.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the RULER-style keys and values.")
@click.option(
    "--method",
    type=click.Choice(["mr", "direct"]),
    default="mr",
    show_default=True,
    help="Map-reduce, or one call with the middle cut.",
)
@click.option(
    "--judge",
    is_flag=True,
    help="Also grade each answer 1-10 with the model, as the reference test does; the heatmap shows that grade.",
)
@click.option(
    "--buffer",
    default=200,
    show_default=True,
    type=click.IntRange(min=0),
    help="Tokens of each length left for the prompt and reply, as in the reference test.",
)
@click.option(
    "--cells-in-flight",
    type=click.IntRange(min=1),
    help="Cells run at once (default: 4, but no more than the server runs requests at once: "
    "1 embedded or on llama-cpp-python's server).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    help="Run folder: cells/, run.json, heatmap.png, grid.csv, summary.json.",
)
@click.option(
    "--plot-only",
    "plot_dir",
    type=click.Path(file_okay=False, exists=True),
    help="Redraw the heatmap, CSV and summary of a run folder; run nothing.",
)
@_llm_options
@click.option(
    "--task-type", type=click.Choice(TASK_FAMILIES), help="Prompt family for --method mr (default: retrieval)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@_reports_errors
def niah(
    haystack: str | None,
    lengths: str,
    depths: str,
    depth_spacing: str,
    needle: str | None,
    question: str | None,
    answers: tuple[str, ...],
    ruler_keys: int | None,
    ruler_values: int | None,
    ruler_distractors: int | None,
    seed: int,
    method: Method,
    judge: bool,
    buffer: int,
    cells_in_flight: int | None,
    out_dir: str | None,
    plot_dir: str | None,
    settings: _Settings,
    task_type: str | None,
    as_json: bool,
    no_progress: bool,
) -> None:
    """Needle in a haystack: one run per (length, depth) cell, resumable, drawn as a heatmap."""
    import asyncio
    import time

    from .bench.niah import haystack as haystacks
    from .bench.niah import needles as needle_sets
    from .bench.niah.runner import NiahRun, RunSettings, load_cells, read_settings

    if plot_dir:
        _report_niah(Path(plot_dir), load_cells(plot_dir), read_settings(Path(plot_dir)), None, as_json)
        return
    if not haystack or not out_dir:
        raise UsageError("give --haystack and --out (or --plot-only DIR to redraw a run)")
    ruler = (ruler_keys, ruler_values, ruler_distractors)
    if needle or question or answers:
        if any(v is not None for v in ruler):
            raise UsageError("give either --needle/--question/--answer or --ruler-* options, not both")
        if not (needle and question and answers):
            raise UsageError("a custom needle needs --needle, --question and at least one --answer")
        needle_set = needle_sets.custom_needle(needle, question, list(answers))
    elif any(v is not None for v in ruler):
        needle_set = needle_sets.ruler_needles(ruler_keys or 1, ruler_values or 1, ruler_distractors or 0, seed)
    else:
        needle_set = needle_sets.CLASSIC
    grid_lengths = haystacks.parse_lengths(lengths)
    grid_depths = haystacks.parse_depths(depths, depth_spacing)
    # The needle is written literally in the haystack: retrieval prompts and checks fit a question
    # asking for one value; one asking for several values is a question to answer with a list.
    # --config or --task-type may say otherwise.
    preset = "qa" if needle_set.asks_for_several else "retrieval"
    config = settings.load(preset={"task_type": preset}, task_type=task_type)
    run_settings = RunSettings(
        haystack=str(Path(haystack).resolve()),
        needles=needle_set,
        method=method,
        judge=judge,
        buffer=buffer,
        task_type=config.task_type,
    )
    runner = NiahRun(
        run_settings,
        out_dir,
        config,
        cells_in_flight=cells_in_flight,
        progress=not no_progress,
    )
    started = time.perf_counter()
    try:
        cells = asyncio.run(runner.run(grid_lengths, grid_depths))
    except KeyboardInterrupt:
        click.echo(f"interrupted: finished cells are in {out_dir}; rerun the same command to resume", err=True)
        sys.exit(130)
    _report_niah(Path(out_dir), cells, run_settings, time.perf_counter() - started, as_json)
    if runner.failed_cells:
        raise LlmxmrError(f"{runner.failed_cells} cell(s) failed; rerun the same command to retry them")


def _recorded_wall_time(path: Path) -> float | None:
    """The wall time a run's summary recorded; None when there is none to read."""
    try:
        wall_time_s = json.loads(path.read_text(encoding="utf-8")).get("wall_time_s")
    except (OSError, ValueError, AttributeError):
        return None
    return wall_time_s if isinstance(wall_time_s, (int, float)) else None


def _report_niah(out_dir: Path, cells: list[Any], settings: Any, wall_time_s: float | None, as_json: bool) -> None:
    from .bench.niah.plot import draw_heatmap, score_grid, summarize, summary_line, write_csv
    from .executor import write_atomically

    if not cells:
        raise UsageError(f"no finished cells in {out_dir}")
    grid = score_grid(cells)
    summary = summarize(cells, settings.max_score)
    write_csv(grid, out_dir / "grid.csv")
    if wall_time_s is None:  # redrawn: keep the run's own wall time
        wall_time_s = _recorded_wall_time(out_dir / "summary.json")
    payload = {
        "summary": summary.model_dump(),
        "wall_time_s": wall_time_s,
        "settings": settings.model_dump(),
        "grid": grid.model_dump(),
    }
    write_atomically(out_dir / "summary.json", json.dumps(payload, indent=2) + "\n")
    title = (
        f"{cells[0].model}\n{settings.method} · {settings.needles.kind} needle · "
        f"mean score {summary.mean_score:.2f} of {summary.max_score:g}"
    )
    draw_heatmap(grid, out_dir / "heatmap.png", title, settings.max_score)
    click.echo(json.dumps(payload, indent=2) if as_json else summary_line(summary, wall_time_s))
    click.echo(f"heatmap: {out_dir / 'heatmap.png'} · grid: {out_dir / 'grid.csv'}", err=True)
