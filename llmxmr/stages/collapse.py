"""Collapse: merge consecutive partial answers, in groups that fit the window, until they fit the
reduce prompt.

The rounds are decided here, on sizes alone (``collapse_round``), so that the pipeline's schedulers
and the estimate of a run's cost make the same groups. What a merged reply may keep is the task
family's to decide (``families.base.QuotingFamily.ground_collapse``).
"""

from __future__ import annotations

from ..grounding import in_document_order
from ..partials import Partial, render_partials, standing_order
from ..prompts import ChatMessage, PromptSet


def collapse_messages(prompts: PromptSet, question: str, group: list[Partial]) -> list[ChatMessage]:
    return prompts.messages("collapse", question=question, partials=render_partials(group))


class Grouper:
    """Consecutive groups of items whose sizes sum to at most ``budget`` (order kept), built one
    item at a time: a group closes as soon as the next item would not fit it, so a scheduler that
    receives partials as they finish can start each group's collapse at once. An item over budget
    gets a group of its own; the caller makes sure two partials always fit together."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._start = 0
        self._end = 0
        self._size = 0

    def add(self, size: int) -> range | None:
        """Adds the next item; returns the indices of the group it closed, if any."""
        closed = None
        if self._end > self._start and self._size + size > self.budget:
            closed, self._start, self._size = range(self._start, self._end), self._end, 0
        self._end += 1
        self._size += size
        return closed

    def close(self) -> range:
        """The last group (empty if no item was added since the last one closed)."""
        last, self._start, self._size = range(self._start, self._end), self._end, 0
        return last


def group_to_fit(sizes: list[int], budget: int) -> list[range]:
    """The groups ``Grouper`` makes of items of these sizes, as index ranges."""
    grouper = Grouper(budget)
    groups = [closed for size in sizes if (closed := grouper.add(size))]
    return [*groups, last] if (last := grouper.close()) else groups


def collapse_needed(count: int, tokens: int, reduce_budget: int) -> bool:
    """Whether ``count`` partials of ``tokens`` in all must collapse before the reduce: more than
    one, together over the reduce prompt's budget."""
    return count > 1 and tokens > reduce_budget


def pairs(count: int) -> list[range]:
    """Neighbours in pairs: the grouping when every partial is too large to share a group (each
    alone over half the budget), so that collapsing still makes progress."""
    return [range(i, min(i + 2, count)) for i in range(0, count, 2)]


def collapse_round(sizes: list[int], collapse_budget: int, reduce_budget: int) -> list[range] | None:
    """The groups of the next collapse round over partials of these sizes (singletons pass through
    without a call), or None when they go to the reduce as they are."""
    if not collapse_needed(len(sizes), sum(sizes), reduce_budget):
        return None
    groups = group_to_fit(sizes, collapse_budget)
    return pairs(len(sizes)) if all(len(group) == 1 for group in groups) else groups


def merged_indices(group: list[Partial]) -> list[int]:
    return sorted({index for partial in group for index in partial.chunk_indices})


def fallback(group: list[Partial]) -> Partial:
    """When a collapse call fails, or its reply may not stand: keep the group's most confident
    partial answer (the earliest on a tie; answers first, then verified ones), so the run goes on
    with the best evidence it had. A group that holds no answer keeps the quoted information of all
    its inputs."""
    best = max(group, key=standing_order)
    if best.answers:
        cited = best.citations
    else:
        cited = in_document_order([c for p in group if p.informs for c in p.citations])
    others = in_document_order([c for p in group for c in (*p.citations, *p.related) if c not in cited])
    return Partial(
        chunk_indices=merged_indices(group),
        answer=best.answer,
        citations=cited,
        support=best.support,
        related=others,  # the other inputs' quotes: passages, not its support
    )
