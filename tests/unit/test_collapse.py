from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from llmxmr.grounding import Citation
from llmxmr.partials import Partial, label
from llmxmr.schemas import MapOutput
from llmxmr.stages.collapse import collapse_round, fallback, group_to_fit, merged_indices


@given(
    sizes=st.lists(st.integers(min_value=1, max_value=50), max_size=60), budget=st.integers(min_value=50, max_value=200)
)
def test_groups_are_consecutive_cover_everything_and_fit(sizes, budget):
    groups = group_to_fit(sizes, budget)
    assert [i for group in groups for i in group] == list(range(len(sizes)))
    assert all(sum(sizes[i] for i in group) <= budget for group in groups)
    # Greedy: a group closes only when the next item would not fit.
    for group, following in pairwise(groups):
        assert sum(sizes[i] for i in group) + sizes[following.start] > budget


def test_an_item_over_budget_stands_alone():
    assert group_to_fit([10, 500, 10], 100) == [range(0, 1), range(1, 2), range(2, 3)]


@given(
    sizes=st.lists(st.integers(min_value=1, max_value=80), max_size=60),
    collapse_budget=st.integers(min_value=50, max_value=200),
    reduce_budget=st.integers(min_value=50, max_value=400),
)
def test_a_round_is_made_only_when_the_partials_do_not_fit_the_reduce_and_it_shrinks_them(
    sizes, collapse_budget, reduce_budget
):
    groups = collapse_round(sizes, collapse_budget, reduce_budget)
    if len(sizes) <= 1 or sum(sizes) <= reduce_budget:
        assert groups is None
    else:
        assert groups is not None and [i for group in groups for i in group] == list(range(len(sizes)))
        assert len(groups) < len(sizes)  # each round merges something, so collapsing ends


def test_partials_too_large_to_share_a_group_are_merged_in_pairs():
    assert collapse_round([60, 60, 60], 100, 100) == [range(0, 2), range(2, 3)]
    assert collapse_round([30, 30, 30, 60], 100, 100) == [range(0, 3), range(3, 4)]  # else greedy groups


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


def _cited(indices, start):
    """A partial with no answer carrying one quote found in the text (information only)."""
    quote = Citation(
        chunk=indices[0], start=start, end=start + 10, line=1, quote="0123456789", match="exact", score=100
    )
    return partial(indices, None, 0).model_copy(update={"citations": [quote], "support": "verified"})


def test_a_failed_collapse_of_information_only_keeps_every_inputs_quotes():
    merged = fallback([_cited([1], 50), _cited([2], 10)])
    assert merged.informs and not merged.answers and merged.support == "verified"
    assert [c.start for c in merged.citations] == [10, 50] and merged.chunk_indices == [1, 2]


def test_a_failed_collapse_keeps_a_supported_answer_before_information_and_information_before_a_guess():
    supported = partial([3], "b", 1).model_copy(update={"support": "verified"})
    guess = partial([4], "c", 5).model_copy(update={"support": "unverified"})
    assert fallback([_cited([1], 0), supported, guess]).answer.answer == "b"
    assert fallback([guess, _cited([1], 0)]).answer.answer is None
