"""Reduce: one call that turns the remaining partial answers into the final answer."""

from __future__ import annotations

from ..grounding import Citation, normalise
from ..partials import Partial, render_partials
from ..prompts import ChatMessage, PromptSet
from ..schemas import FinalAnswer
from ..trace import CallRecord

NOT_FOUND = "The document does not appear to contain the answer"
NOTHING_FOUND = f"{NOT_FOUND}: no part of it holds information relevant to the question."


def reduce_messages(prompts: PromptSet, question: str, partials: list[Partial]) -> list[ChatMessage]:
    return prompts.messages("reduce", question=question, partials=render_partials(partials))


def nothing_found(unsupported: int = 0, unread: str | None = None) -> FinalAnswer:
    """The answer when no chunk gave a supported answer: say so rather than guess. The one rightly
    empty answer, so it is built without the validation a model's reply gets. With chunks unread
    (``unread`` says which and why), the document may well hold the answer: only the chunks read
    are said to lack it."""
    if unread:
        rationale = f"The answer was not found in the chunks that were read. {unread}."
    elif unsupported:
        rationale = (
            f"{NOT_FOUND}: {unsupported} partial answer(s) proposed one, but none of their quotes was "
            "found in the text."
        )
    else:
        rationale = NOTHING_FOUND
    return FinalAnswer.model_construct(rationale=rationale, answer="", confidence=0.0, supporting_chunks=[])


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
    spans = {(c.start, c.end): c for p in (chosen or partials) for c in p.citations}
    return [spans[span] for span in sorted(spans)]


def fallback(partials: list[Partial]) -> FinalAnswer:
    """When the reduce call fails or its answer fails a check: the most confident partial answer
    stands as the final one."""
    best = max(partials, key=lambda partial: (partial.support != "unverified", partial.answer.confidence))
    assert best.answer.answer is not None  # reduce reads informative partials only
    return FinalAnswer(
        rationale=f"The most confident partial answer stands (no usable reduce reply). {best.answer.rationale}",
        answer=best.answer.answer,
        confidence=best.answer.confidence,
        supporting_chunks=best.chunk_indices,
    )


def known_chunks(answer: FinalAnswer, partials: list[Partial]) -> FinalAnswer:
    """Keep only supporting chunk indices that the partial answers actually covered."""
    covered = {index for partial in partials for index in partial.chunk_indices}
    return answer.model_copy(update={"supporting_chunks": [i for i in answer.supporting_chunks if i in covered]})
