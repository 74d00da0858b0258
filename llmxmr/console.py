"""Answers printed as the model writes them: what ``llmxmr run`` and ``llmxmr chat`` show on a
terminal, from a run's events (``llmxmr.events``).

Each question's answer field is printed as its reduce reply streams in, then checked: the result
(``FinalResult``) decides. When it keeps what was shown, the rest of the result (citations, notes)
follows on the next line. When the check changed it (the text does not support the answer, or it
gave way to a partial answer), the next line says so plainly and the result is printed whole, as
without streaming. A server that cannot stream gives no deltas: the result is printed once, when
it comes. Several questions are printed in order, each under its header: a later question's
answer waits (kept) until the ones before it are printed.

The progress bar shares the terminal: it is paused (cleared, not drawn) from a question's first
printed character until its result is printed, so that no redraw lands inside the answer's line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import click

from .events import AnswerDelta, PartialFound, ProgressBar
from .pipeline import FinalResult, PipelineEvent, PipelineResult


def _stdout(text: str) -> None:
    click.echo(text, nl=False)


@dataclass
class _Printed:
    """One question as printed: the deltas not yet shown (it is not its turn), the answer shown,
    its result once known, and the partial answers verified so far."""

    pending: list[AnswerDelta] = field(default_factory=list)
    shown: str = ""
    started: bool = False
    result: PipelineResult | None = None
    verified: list[PartialFound] = field(default_factory=list)


@dataclass(frozen=True)
class Interrupted:
    """What ``AnswerPrinter.interrupted`` printed: whether an answer was being written (it was
    not checked), and how many verified partial answers it listed."""

    writing: bool
    verified: int


class AnswerPrinter:
    """An ``on_event`` for ``MapReducePipeline.arun_many`` that prints ``count`` questions' answers
    as they stream in (see the module). ``render`` is a result as printed without streaming;
    ``header`` the line above a question's output (several questions), ``done`` what follows its
    result (its summary, on stderr). ``bar``, if given, is told every event first, and paused while
    an answer is printed."""

    def __init__(
        self,
        count: int,
        render: Callable[[PipelineResult], str],
        *,
        header: Callable[[int], str] | None = None,
        done: Callable[[int, PipelineResult], None] | None = None,
        bar: ProgressBar | None = None,
        write: Callable[[str], None] = _stdout,
    ) -> None:
        self._questions = [_Printed() for _ in range(count)]
        self._render = render
        self._header = header
        self._done = done
        self._bar = bar
        self._write = write
        self._current = 0  # the question whose turn it is
        self._line_open = False  # the answer's line has no end yet

    def __call__(self, event: PipelineEvent) -> None:
        if self._bar is not None:
            self._bar(event)
        if isinstance(event, PartialFound):
            if event.support == "verified":
                self._questions[event.question].verified.append(event)
        elif isinstance(event, AnswerDelta):
            self._questions[event.question].pending.append(event)
            self._print_ready()
        elif isinstance(event, FinalResult):
            self._questions[event.question].result = event.result
            self._print_ready()

    def _print_ready(self) -> None:
        """Prints what the questions whose turn it is have: their deltas, and once a result is
        known, its check and the rest of it; then it is the next question's turn."""
        while self._current < len(self._questions):
            question = self._questions[self._current]
            for delta in question.pending:
                self._show(question, delta)
            question.pending.clear()
            if question.result is None:
                return
            self._finish(question, question.result)
            self._current += 1

    def _start(self, question: _Printed) -> None:
        if question.started:
            return
        question.started = True
        if self._bar is not None:
            self._bar.pause()
        if self._header is not None:
            self._write(("\n" if self._current else "") + self._header(self._current) + "\n")

    def _show(self, question: _Printed, delta: AnswerDelta) -> None:
        self._start(question)
        if delta.restart and question.shown:
            self._write("\n(that reply could not be used: the model answers again)\n")
            question.shown = ""
        self._write(delta.text)
        question.shown += delta.text
        self._line_open = True

    def _finish(self, question: _Printed, result: PipelineResult) -> None:
        self._start(question)
        rendered = self._render(result)
        shown = question.shown
        if not shown:  # nothing streamed (a server that cannot, or no reduce): the result as it is
            self._write(rendered + "\n")
        elif result.status == "answered" and result.answer.startswith(shown) and rendered.startswith(result.answer):
            self._write(rendered[len(shown) :] + "\n")  # what the stream had not shown yet, and the rest
        else:
            self._write(f"\n{correction(result)}\n{rendered}\n")
        self._line_open = False
        if self._done is not None:
            self._done(self._current, result)
        if self._bar is not None:
            self._bar.resume()

    def interrupted(self) -> Interrupted:
        """On Ctrl-C: ends the answer's line (it was not checked), and prints the partial answers
        verified so far (quotes of the text hold them) of each question whose result was not
        printed. Returns what it printed."""
        if self._bar is not None:
            self._bar.pause()
        writing = self._line_open
        if writing:
            self._write("\n(interrupted: the answer above was not checked)\n")
            self._line_open = False
        listed = 0
        for index in range(self._current, len(self._questions)):
            verified = self._questions[index].verified
            if not verified:
                continue
            if self._header is not None and (index != self._current or not self._questions[index].started):
                self._write(("\n" if index or listed else "") + self._header(index) + "\n")
            self._write(verified_so_far(verified) + "\n")
            listed += len(verified)
        return Interrupted(writing, listed)


def correction(result: PipelineResult) -> str:
    """The line that says how the check of a complete reply changed the answer shown as it
    streamed in, before the result is printed."""
    if result.status == "answered":
        reduce = next((record for record in reversed(result.trace.calls) if record.stage == "reduce"), None)
        if reduce is not None and reduce.error:
            why = "the reply was not valid, and the most confident partial answer stands"
        elif reduce is not None and reduce.check:
            why = reduce.check
        elif reduce is not None and "answer" in reduce.loops_cut:
            why = "it was cut where it began to repeat itself"
        else:
            why = "the check changed it"
        return f"Checked: the answer above does not stand as written ({why}). The answer:"
    unread = " and some chunks went unread" if result.status == "incomplete" else ""
    return f"Checked: the text does not support the answer above{unread}; it is not an answer."


def verified_so_far(partials: list[PartialFound]) -> str:
    """Partial answers whose quotes the text holds, with those quotes: what an interrupted run
    had verified."""
    lines = ["Verified so far (partial answers that quotes of the text hold):"]
    for partial in partials:
        chunks = ", ".join(str(index) for index in partial.chunks)
        lines.append(f"  chunk {chunks} (confidence {partial.confidence:g}): {partial.answer}")
        for citation in partial.citations:
            where = f"{citation.location}, " if citation.location else ""
            quote = " ".join(citation.quote.split())
            lines.append(f'    {where}line {citation.line}: "{quote}"')
    return "\n".join(lines)
