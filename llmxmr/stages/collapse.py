"""Collapse: merge consecutive partial answers, in groups that fit the window, until they fit the
reduce prompt."""

from __future__ import annotations

from ..prompts import ChatMessage, PromptSet
from .partials import Partial, render_partials


def collapse_messages(prompts: PromptSet, question: str, group: list[Partial]) -> list[ChatMessage]:
    return prompts.messages("collapse", question=question, partials=render_partials(group))


def group_to_fit(sizes: list[int], budget: int) -> list[range]:
    """Consecutive groups whose sizes sum to at most ``budget`` (order kept). A size over budget
    gets a group of its own; the caller makes sure two partials always fit together."""
    groups: list[range] = []
    start, total = 0, 0
    for index, size in enumerate(sizes):
        if index > start and total + size > budget:
            groups.append(range(start, index))
            start, total = index, 0
        total += size
    if sizes:
        groups.append(range(start, len(sizes)))
    return groups


def pairs(partials: list[Partial]) -> list[list[Partial]]:
    """Neighbours in pairs: the grouping when every partial is too large to share a group (each
    alone over half the budget), so that collapsing still makes progress."""
    return [partials[i : i + 2] for i in range(0, len(partials), 2)]


def merged_indices(group: list[Partial]) -> list[int]:
    return sorted({index for partial in group for index in partial.chunk_indices})


def fallback(group: list[Partial]) -> Partial:
    """When a collapse call fails: keep the group's most confident partial answer (the earliest on
    a tie), so the run goes on with the best evidence it had."""
    best = max(group, key=lambda partial: partial.answer.confidence)
    return Partial(chunk_indices=merged_indices(group), answer=best.answer)
