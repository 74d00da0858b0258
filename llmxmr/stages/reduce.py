"""Reduce: one call that turns the remaining partial answers into the final answer."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from ..config import GroundingSettings
from ..grounding import Citation, in_document_order, normalise
from ..partials import Partial, render_partials, standing_order
from ..prompts import ChatMessage, PromptSet
from ..schemas import FinalAnswer
from ..trace import CallRecord

NOT_FOUND = "The document does not appear to contain the answer"
NOTHING_FOUND = f"{NOT_FOUND}: no part of it holds information relevant to the question."

# What a result is: answered, or why not (see ``status_of``).
Status = Literal["answered", "not_found", "unsupported", "incomplete"]


def reduce_messages(prompts: PromptSet, question: str, partials: list[Partial]) -> list[ChatMessage]:
    return prompts.messages("reduce", question=question, partials=render_partials(partials))


def nothing_found(unread: str | None = None) -> str:
    """Why there is no answer when no chunk gave one: the document does not appear to hold it or,
    with chunks unread (``unread`` says which and why), the chunks read do not."""
    if unread:
        return f"The answer was not found in the chunks that were read. {unread}."
    return NOTHING_FOUND


def unsupported(guesses: int) -> str:
    """Why there is no answer when the model gave ``guesses`` partial answers the text does not
    support (none: the final answer was written from information whose quotes do not hold it)."""
    if not guesses:
        return (
            f"{NOT_FOUND}: parts of it hold information about the question, but no quote of the text holds "
            "the answer written from it; the model's guess is kept apart as unsupported."
        )
    return (
        f"{NOT_FOUND}: {guesses} partial answer(s) proposed one, but no quote of the text holds it and is "
        "about what is asked; the model's guess is kept apart as unsupported."
    )


# Why a reading with information found and no answer is incomplete, when the reduce call failed.
REDUCE_FAILED = "the reduce call that was to weigh the information found failed; a rerun retries it"


def below_threshold(answer: FinalAnswer, threshold: float) -> str:
    """Why a supported answer is no answer: the model scores it below ``grounding.min_confidence``."""
    return (
        f"{answer.rationale} Its confidence ({answer.confidence:g}) is below grounding.min_confidence "
        f"({threshold:g}): the model itself says the text barely supports it."
    )


class Outcome(BaseModel):
    """What a result says, once its final answer (or guess) is known: its status, and the answer,
    guess, rationale, confidence and citations that status allows (see ``PipelineResult``)."""

    status: Status
    answer: str
    unsupported_guess: str | None
    rationale: str
    confidence: float
    supporting_chunks: list[int]
    citations: list[Citation]
    related: list[Citation]


def outcome(
    final: FinalAnswer | None,
    *,
    supported: bool,
    guesses: int,
    cited: tuple[list[Citation], list[Citation]],
    failed_maps: list[CallRecord],
    chunk_count: int,
    settings: GroundingSettings,
    partials: list[Partial],
    reduce_failed: bool = False,
) -> Outcome:
    """The result of a question: ``final`` is the answer reduced from supported partial answers
    (``supported``), or the model's guess from ``guesses`` unsupported ones, or None (nothing
    answered); ``cited`` its supporting citations and related passages. Only an ``answered``
    result has an answer and citations: otherwise the model's text is its ``unsupported_guess``,
    and every passage found is a related one. The confidence is scaled by the share of chunks read,
    and a guess's is capped at ``grounding.unsupported_confidence``. A supported answer's confidence
    is ``backed_confidence`` over ``partials``. ``reduce_failed``: the parts found information
    and no answer, and the reduce call that was to weigh it failed: the result is incomplete."""
    unread = sum(len(record.chunk_indices) for record in failed_maps)
    note = unread_note(failed_maps, chunk_count)
    if reduce_failed:
        note = f"{note}; {REDUCE_FAILED}" if note else REDUCE_FAILED.capitalize()
    if final is None:
        confidence = 0.0
    elif supported:
        confidence = backed_confidence(final, cited[0], partials)
    else:
        confidence = final.confidence
    status = status_of(
        supported=supported,
        guessed=final is not None,
        unread=bool(unread) or reduce_failed,
        confidence=confidence,
        threshold=settings.min_confidence,
    )
    if not supported:
        confidence = min(confidence, settings.unsupported_confidence)
    if unread:
        confidence = round(confidence * (1 - unread / chunk_count), 3)
    citations, related = cited
    if status == "answered":
        assert final is not None
        rationale = (
            f"{final.rationale} {note}, and the confidence is scaled by the share read." if note else final.rationale
        )
        return Outcome(
            status=status,
            answer=final.answer,
            unsupported_guess=None,
            rationale=rationale,
            confidence=confidence,
            supporting_chunks=final.supporting_chunks,
            citations=citations,
            related=related,
        )
    if final is not None and status == "unsupported":
        rationale = below_threshold(final, settings.min_confidence) if supported else unsupported(guesses)
    else:
        rationale = nothing_found(note)
    return Outcome(
        status=status,
        answer="",
        unsupported_guess=final.answer if final else None,
        rationale=rationale,
        confidence=confidence,
        supporting_chunks=[],
        citations=[],
        related=[*citations, *related],
    )


def backed_confidence(final: FinalAnswer, citations: list[Citation], partials: list[Partial]) -> float:
    """The confidence of a supported final answer: its own, or, if higher, that of a verified
    partial answer whose quotes are among its citations. The evidence holds the answer either way;
    a reduce that restates a value the text holds does not make it doubtful by scoring it low."""
    spans = {(citation.start, citation.end) for citation in citations}
    backing = [
        partial.answer.confidence
        for partial in partials
        if partial.answers
        and partial.support == "verified"
        and any((c.start, c.end) in spans for c in partial.citations)
    ]
    return max([final.confidence, *backing])


def status_of(*, supported: bool, guessed: bool, unread: bool, confidence: float, threshold: float) -> Status:
    """The status of a result: ``answered`` (a supported answer at or above the confidence
    threshold), ``unsupported`` (a guess the text does not support, or a supported answer the model
    scores below the threshold), ``incomplete`` (nothing supported while a chunk went unread: the
    answer may be in it), or ``not_found`` (every chunk read, no answer)."""
    if supported:
        return "answered" if confidence >= threshold else "unsupported"
    if unread:
        return "incomplete"
    return "unsupported" if guessed else "not_found"


def best_guess(partials: list[Partial]) -> FinalAnswer:
    """The most confident of partial answers that counted as no information (strict grounding,
    retrieval): the model's guess, as it gave it."""
    best = max(partials, key=lambda partial: partial.answer.confidence)
    assert best.answer.answer is not None  # only answers are kept as guesses
    return FinalAnswer(
        rationale=best.answer.rationale or "(no rationale)",
        answer=best.answer.answer,
        confidence=best.answer.confidence,
        supporting_chunks=best.chunk_indices,
    )


def unread_note(failed_maps: list[CallRecord], chunk_count: int) -> str | None:
    """One clause naming the chunks whose map call failed for good and why (no final period);
    None when every chunk was read."""
    causes: dict[str, list[int]] = {}
    for record in failed_maps:
        cause = "the server could not be made to answer" if record.error_kind == "transport" else "no valid reply"
        causes.setdefault(f"{cause} ({_shortened(record.error or '')})", []).extend(record.chunk_indices)
    if not causes:
        return None
    unread = sum(len(chunks) for chunks in causes.values())
    reasons = "; ".join(f"{_chunk_list(chunks)}: {cause}" for cause, chunks in causes.items())
    them = "it" if unread == 1 else "them"
    return f"{unread} of {chunk_count} chunks went unread ({reasons}); a rerun retries {them}"


def _chunk_list(chunks: list[int]) -> str:
    numbers = ", ".join(str(i) for i in sorted(chunks))
    return f"chunk {numbers}" if len(chunks) == 1 else f"chunks {numbers}"


def _shortened(error: str, limit: int = 160) -> str:
    error = " ".join(error.split())
    return error if len(error) <= limit else error[: limit - 1] + "…"


def supported(partials: list[Partial]) -> bool:
    """Whether any partial answer may be the basis of a final one: not when all are unverified."""
    return any(partial.support != "unverified" for partial in partials)


def citations_for(answer: FinalAnswer, partials: list[Partial]) -> list[Citation]:
    """The quotes the final answer rests on: those of the partial answers of its supporting chunks;
    failing that, of the partial answers it restates; failing that, of all of them."""
    chosen = [p for p in partials if set(p.chunk_indices) & set(answer.supporting_chunks) and p.citations]
    if not chosen:
        final = normalise(answer.answer).text
        chosen = [p for p in partials if p.answer.answer and normalise(p.answer.answer).text in final]
    return in_document_order(c for p in (chosen or partials) for c in p.citations)


def fallback(partials: list[Partial], supported: bool) -> tuple[FinalAnswer | None, bool]:
    """When the reduce call fails or its answer fails a check: the partial answer that stands
    instead (the most confident supported one, else the most confident guess), and whether the
    text supports it; None when the partials carry information but no answer."""
    best = max((p for p in partials if p.answers), key=standing_order, default=None)
    if best is None:
        return None, False
    assert best.answer.answer is not None  # partials that answer only
    final = FinalAnswer(
        rationale=f"The most confident partial answer stands (no usable reduce reply). {best.answer.rationale}",
        answer=best.answer.answer,
        confidence=best.answer.confidence,
        supporting_chunks=best.chunk_indices,
    )
    return final, supported and best.support != "unverified"


def known_chunks(answer: FinalAnswer, partials: list[Partial]) -> FinalAnswer:
    """Keep only supporting chunk indices that the partial answers actually covered."""
    covered = {index for partial in partials for index in partial.chunk_indices}
    return answer.model_copy(update={"supporting_chunks": [i for i in answer.supporting_chunks if i in covered]})
