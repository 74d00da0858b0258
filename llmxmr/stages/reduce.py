"""Reduce: one call that turns the remaining partial answers into the final answer."""

from __future__ import annotations

from ..prompts import ChatMessage, PromptSet
from ..schemas import FinalAnswer
from .partials import Partial, render_partials

NOTHING_FOUND = "No part of the document holds information relevant to the question."


def reduce_messages(prompts: PromptSet, question: str, partials: list[Partial]) -> list[ChatMessage]:
    return prompts.messages("reduce", question=question, partials=render_partials(partials))


def nothing_found() -> FinalAnswer:
    """The answer when every chunk reported no information: say so rather than guess. The one
    rightly empty answer, so it is built without the validation a model's reply gets."""
    return FinalAnswer.model_construct(rationale=NOTHING_FOUND, answer="", confidence=0.0, supporting_chunks=[])


def fallback(partials: list[Partial]) -> FinalAnswer:
    """When the reduce call fails: the most confident partial answer stands as the final one."""
    best = max(partials, key=lambda partial: partial.answer.confidence)
    return FinalAnswer(
        rationale=f"The reduce call failed; this is the most confident partial answer. {best.answer.rationale}",
        answer=best.answer.answer,
        confidence=best.answer.confidence,
        supporting_chunks=best.chunk_indices,
    )


def known_chunks(answer: FinalAnswer, partials: list[Partial]) -> FinalAnswer:
    """Keep only supporting chunk indices that the partial answers actually covered."""
    covered = {index for partial in partials for index in partial.chunk_indices}
    return answer.model_copy(update={"supporting_chunks": [i for i in answer.supporting_chunks if i in covered]})
