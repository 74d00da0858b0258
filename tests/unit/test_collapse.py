from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from llmxmr.schemas import MapOutput
from llmxmr.stages.collapse import fallback, group_to_fit, merged_indices
from llmxmr.stages.partials import Partial, label


@given(sizes=st.lists(st.integers(min_value=1, max_value=50), max_size=60), budget=st.integers(min_value=50, max_value=200))
def test_groups_are_consecutive_cover_everything_and_fit(sizes, budget):
    groups = group_to_fit(sizes, budget)
    assert [i for group in groups for i in group] == list(range(len(sizes)))
    assert all(sum(sizes[i] for i in group) <= budget for group in groups)
    # Greedy: a group closes only when the next item would not fit.
    for group, following in zip(groups, groups[1:]):
        assert sum(sizes[i] for i in group) + sizes[following.start] > budget


def test_an_item_over_budget_stands_alone():
    assert group_to_fit([10, 500, 10], 100) == [range(0, 1), range(1, 2), range(2, 3)]


def partial(indices, answer, confidence):
    return Partial(
        chunk_indices=indices,
        answer=MapOutput(extracted_information="", rationale="", answer=answer, confidence=confidence),
    )


def test_failed_collapse_keeps_the_most_confident_answer_for_all_chunks():
    merged = fallback([partial([1], "a", 2), partial([4, 5], "b", 4.5), partial([7], "c", 4.5)])
    assert merged.answer.answer == "b" and merged.chunk_indices == [1, 4, 5, 7]
    assert merged_indices([partial([3], "x", 1), partial([1, 2], "y", 1)]) == [1, 2, 3]


def test_labels_name_the_chunks_exactly():
    assert label([3]) == "Chunk 3"
    assert label([3, 4, 5]) == "Chunks 3-5"
    assert label([3, 5, 9]) == "Chunks 3, 5, 9"
