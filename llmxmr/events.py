"""What a run tells as it goes: typed events, in the order things happen.

A run (``MapReducePipeline.arun_many(..., on_event=...)``, or ``astream``) emits, for each question:
every map call done (``ChunkRead``, and ``PartialFound`` when its chunk gave a partial answer), every
collapse call started and done (``CollapseStarted``, ``CollapseDone``), the reduce started, its
answer field as the model writes it (``AnswerDelta``: the text added, where the client streams;
nothing where it cannot) and the reduce done (``ReduceStarted``, ``ReduceDone``), and last its
result (``pipeline.FinalResult``, which carries the ``PipelineResult``). ``ReadingPlanned`` opens
the run, once the chunks are cut. Events of several questions interleave; each names its question
by its place in the run (0 for a run of one question).

The streamed answer is the reply as written, before any check: the result, checked against the
text once the reply is complete, may not keep it (``AnswerDelta``). The progress bar
(``ProgressBar``) is one consumer of the events; ``llmxmr run`` and ``llmxmr chat`` print the answer
from them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict
from tqdm import tqdm

from .grounding import Citation
from .partials import Support
from .structured import ANSWER_FIELD, PartialReply


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True)


class ReadingPlanned(_Event):
    """The document is chunked: ``chunks`` map calls are due for each of the ``questions``."""

    kind: Literal["reading_planned"] = "reading_planned"
    chunks: int
    questions: int


class ChunkRead(_Event):
    """A map call done: whether its chunk gave a partial answer (``found``, once grounding had its
    say: an answer that counts as no information is not found), whether the call failed for good
    (the chunk went unread), and whether its reply was an identical call's (``llmxmr.reuse``)."""

    kind: Literal["chunk_read"] = "chunk_read"
    question: int
    chunk: int
    found: bool
    failed: bool = False
    reused: bool = False


class PartialFound(_Event):
    """A chunk's partial answer, as it goes on to collapse and reduce: ``support`` says whether
    quotes of the text hold it (``verified``), and ``citations`` are those quotes."""

    kind: Literal["partial_found"] = "partial_found"
    question: int
    chunks: list[int]
    answer: str
    confidence: float
    support: Support
    citations: list[Citation] = []


class CollapseStarted(_Event):
    kind: Literal["collapse_started"] = "collapse_started"
    question: int
    chunks: list[int]


class CollapseDone(_Event):
    """A collapse call done: the merged answer (None: no information), or ``failed`` (the group's
    most confident partial answer then stands)."""

    kind: Literal["collapse"] = "collapse"
    question: int
    chunks: list[int]
    answer: str | None
    failed: bool = False


class ReduceStarted(_Event):
    kind: Literal["reduce_started"] = "reduce_started"
    question: int
    partials: int


class AnswerDelta(_Event):
    """Text the model added to the reduce reply's answer field, as it streams in. With
    ``restart``, the reply shown so far was given up (a reply asked again after an invalid one, or
    a stream that broke off and was asked again) and ``text`` starts the new one. Unchecked: the
    result decides what stands, and may differ from the deltas (an answer the text does not
    support, one cut where it began to repeat itself, or one replaced by a partial answer)."""

    kind: Literal["answer_delta"] = "answer_delta"
    question: int
    text: str
    restart: bool = False


class ReduceDone(_Event):
    """The reduce call done: ``failed`` when it gave no valid reply (the most confident partial
    answer then stands), ``check`` what the check of its answer decided when it did not simply pass."""

    kind: Literal["reduce_done"] = "reduce_done"
    question: int
    failed: bool = False
    check: str | None = None


# The events of a run but its last (``pipeline.FinalResult``): ``pipeline.PipelineEvent`` is all of them.
StageEvent = (
    ReadingPlanned
    | ChunkRead
    | PartialFound
    | CollapseStarted
    | CollapseDone
    | ReduceStarted
    | AnswerDelta
    | ReduceDone
)


class AnswerStream:
    """``call_structured``'s ``on_partial`` for a reduce call: the answer field's growth as
    ``AnswerDelta`` events, given to ``emit``. A new reply (another attempt) or an answer that no
    longer extends the one shown (a stream asked again) starts over, with ``restart``."""

    def __init__(self, question: int, emit: Callable[[AnswerDelta], None]) -> None:
        self.question = question
        self._emit = emit
        self._attempt = 0
        self._shown = ""
        self._restart = False

    def __call__(self, partial: PartialReply) -> None:
        answer = partial.fields.get(ANSWER_FIELD)
        if not isinstance(answer, str):
            return
        if partial.attempt != self._attempt or not answer.startswith(self._shown):
            self._restart = self._restart or bool(self._shown)
            self._attempt, self._shown = partial.attempt, ""
        added = answer[len(self._shown) :]
        if not added:
            return
        self._shown = answer
        self._emit(AnswerDelta(question=self.question, text=added, restart=self._restart))
        self._restart = False


class ProgressBar:
    """The progress bar of a run on stderr (tqdm), driven by its events: every call expected
    (``ReadingPlanned``, each collapse and reduce started) and every call done. ``pause`` clears
    it and keeps it from drawing until ``resume`` (while an answer is printed as it streams, on the
    same terminal); it keeps counting meanwhile."""

    def __init__(self, enabled: bool = True) -> None:
        self._bar = tqdm(total=0, desc="map", unit="call", file=sys.stderr, disable=not enabled, leave=False)
        self._enabled = enabled
        self._paused = False

    def __call__(self, event: BaseModel) -> None:
        if isinstance(event, ReadingPlanned):
            self._expect(event.chunks * event.questions)
            self._draw()
        elif isinstance(event, CollapseStarted | ReduceStarted):
            self._expect(1)
            stage = "collapse" if isinstance(event, CollapseStarted) else "reduce"
            self._bar.set_description(stage, refresh=not self._paused)
        elif isinstance(event, ChunkRead | CollapseDone | ReduceDone):
            if self._paused or not self._enabled:  # counted without a redraw
                self._bar.n += 1
            else:
                self._bar.update(1)

    @property
    def expected(self) -> int:
        """The calls expected so far."""
        return int(self._bar.total or 0)

    @property
    def done(self) -> int:
        """The calls done so far."""
        return int(self._bar.n)

    def _expect(self, calls: int) -> None:
        self._bar.total = (self._bar.total or 0) + calls  # tqdm types it as optional; it is set

    def _draw(self) -> None:
        if not self._paused:
            self._bar.refresh()

    def pause(self) -> None:
        """Clears the bar; it draws nothing until ``resume``. A disabled tqdm bar draws nothing,
        its monitor thread's redraws included."""
        if self._enabled and not self._paused:
            self._bar.clear()
            self._bar.disable = True
        self._paused = True

    def resume(self) -> None:
        if self._enabled and self._paused:
            self._bar.disable = False
            self._bar.refresh()
        self._paused = False

    def close(self) -> None:
        """Removes the bar (it leaves no line behind)."""
        if self._enabled:
            self._bar.disable = False  # a disabled tqdm bar would not take itself off the screen
        self._bar.close()
        self._paused = False
