"""Collapse: merge consecutive partial answers, in groups that fit the window, until they fit the
reduce prompt."""

from __future__ import annotations

from typing import Generic, TypeVar

from ..config import GroundingSettings
from ..grounding import Citation, carried_forward, contains_phrase
from ..prompts import ChatMessage, PromptSet
from ..schemas import CollapseOutput
from ..families import QuotingFamily
from .partials import Partial, render_partials

T = TypeVar("T")


def collapse_messages(prompts: PromptSet, question: str, group: list[Partial]) -> list[ChatMessage]:
    return prompts.messages("collapse", question=question, partials=render_partials(group))


class Grouper(Generic[T]):
    """Consecutive groups whose sizes sum to at most ``budget`` (order kept), built one item at a
    time: a group closes as soon as the next item would not fit it, so a scheduler that receives
    partials as they finish can start each group's collapse at once. An item over budget gets a
    group of its own; the caller makes sure two partials always fit together."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._group: list[T] = []
        self._size = 0

    def add(self, item: T, size: int) -> list[T] | None:
        """Adds ``item``; returns the group it closed, if any."""
        closed = None
        if self._group and self._size + size > self.budget:
            closed, self._group, self._size = self._group, [], 0
        self._group.append(item)
        self._size += size
        return closed

    def close(self) -> list[T]:
        """The last group (empty if no item was added)."""
        last, self._group, self._size = self._group, [], 0
        return last


def group_to_fit(sizes: list[int], budget: int) -> list[range]:
    """The groups ``Grouper`` makes of items of these sizes, as index ranges."""
    grouper: Grouper[int] = Grouper(budget)
    groups = [closed for index, size in enumerate(sizes) if (closed := grouper.add(index, size))]
    groups.append(grouper.close())
    return [range(group[0], group[-1] + 1) for group in groups if group]


def pairs(partials: list[Partial]) -> list[list[Partial]]:
    """Neighbours in pairs: the grouping when every partial is too large to share a group (each
    alone over half the budget), so that collapsing still makes progress."""
    return [partials[i : i + 2] for i in range(0, len(partials), 2)]


def merged_indices(group: list[Partial]) -> list[int]:
    return sorted({index for partial in group for index in partial.chunk_indices})


def fallback(group: list[Partial]) -> Partial:
    """When a collapse call fails: keep the group's most confident partial answer (the earliest on
    a tie; verified ones first), so the run goes on with the best evidence it had."""
    best = max(group, key=lambda partial: (partial.support != "unverified", partial.answer.confidence))
    return Partial(chunk_indices=merged_indices(group), answer=best.answer, citations=best.citations, support=best.support)


def ground_collapse_reply(
    output: CollapseOutput, group: list[Partial], family: QuotingFamily, settings: GroundingSettings
) -> tuple[Partial, str | None]:
    """The merged partial answer with the verified quotes it carries forward, and what grounding
    decided (for the trace). A collapse cannot verify anything new: its quotes count when they
    repeat quotes of its inputs that were found in the text, or when its answer restates the
    answer of a verified input (whose quotes it then carries)."""
    indices = merged_indices(group)
    inputs = [citation for partial in group for citation in partial.citations]
    carried = carried_forward(output.evidence, inputs, settings.fuzzy_threshold)
    if not carried and output.answer:
        carried = [c for p in group if p.support != "unverified" and _restates(output.answer, p) for c in p.citations]
    supports = {partial.support for partial in group}
    if output.answer is None and "verified" in supports and settings.mode != "off":
        return fallback(group), "the merged reply dropped the verified answers; the best verified input stands"
    if settings.mode == "off" or supports == {"unchecked"}:
        return Partial(chunk_indices=indices, answer=output, citations=_unique(carried or inputs)), None
    problem = family.merged_value_problem(output, carried) if carried else None
    if problem:
        return fallback(group), f"{problem}; the best verified input stands"
    if carried:
        return Partial(chunk_indices=indices, answer=output, citations=_unique(carried), support="verified"), None
    if "verified" in supports:
        if settings.mode == "strict" or family.merges_need_a_carried_quote:
            return fallback(group), "the merged answer repeats no verified quote; the best verified input stands"
        verified = [c for p in group if p.support == "verified" for c in p.citations]
        return (
            Partial(chunk_indices=indices, answer=output, citations=_unique(verified), support="verified"),
            "no quote carried forward; the verified quotes of its inputs stand",
        )
    capped = output.model_copy(update={"confidence": min(output.confidence, settings.unsupported_confidence)})
    return (
        Partial(chunk_indices=indices, answer=capped, support="unverified"),
        f"no input was verified: confidence capped at {settings.unsupported_confidence:g}",
    )


def _restates(answer: str, partial: Partial) -> bool:
    """Whether one answer holds the other as whole words ("71432" restates "it is 71432", but
    "7143" does not restate "71432")."""
    theirs = partial.answer.answer or ""
    return bool(theirs.strip()) and (contains_phrase(answer, theirs) or contains_phrase(theirs, answer))


def _unique(citations: list[Citation]) -> list[Citation]:
    spans = {(c.start, c.end): c for c in citations}
    return [spans[span] for span in sorted(spans)]
