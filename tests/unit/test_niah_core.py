"""Needle-in-a-haystack core: loading, trimming and needle placement in tokens, the length and depth
grids, RULER needles and their string-match recall."""

from __future__ import annotations

import math
import random
import re
from pathlib import Path

import pytest

from llmxmr.bench.niah.haystack import (
    Context,
    build_context,
    haystack_encoding,
    load_haystack,
    parse_depths,
    parse_lengths,
)
from llmxmr.bench.niah.needles import CLASSIC, NeedleSet, custom_needle, recall, ruler_needles
from llmxmr.errors import UsageError
from llmxmr.grounding import sentences_of

ESSAYS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "paul_graham_essays"
PERIOD = 13  # cl100k_base's token for "."
CLASSIC_NEEDLE = CLASSIC.needles[0]
PIZZA = [
    " Figs are one of the secret ingredients needed to build the perfect pizza. ",
    " Prosciutto is one of the secret ingredients needed to build the perfect pizza. ",
    " Goat cheese is one of the secret ingredients needed to build the perfect pizza. ",
]
RULER_NEEDLE = re.compile(r" One of the special magic numbers for ([a-z]+-[a-z]+) is: (\d{7})\.\Z")

_WORDS = ["apple", "river", "stone", "light", "quiet", "market", "garden", "window", "paper", "silver", "road"]


@pytest.fixture(scope="module")
def enc():
    return haystack_encoding()


@pytest.fixture(scope="module")
def haystack(enc):
    """About 12k tokens of sentences of 3 to 25 words: "." tokens at irregular gaps, and a few
    paragraph breaks (".\\n\\n" is one token, not a "." token)."""
    rng = random.Random(0)
    sentences = []
    for _ in range(1200):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(3, 25))]
        sentences.append(" ".join(words).capitalize() + (".\n\n" if rng.random() < 0.1 else ". "))
    return enc.encode_ordinary("".join(sentences))


def _needle_tokens(enc, needles):
    return [enc.encode_ordinary(needle) for needle in needles]


def _trimmed(enc, haystack, needles, target):
    return haystack[: target - sum(len(tokens) for tokens in _needle_tokens(enc, needles))]


def _joined(enc, haystack, needles, context: Context, target):
    """The token list the context was decoded from, rebuilt from the placements."""
    trimmed = _trimmed(enc, haystack, needles, target)
    tokens: list[int] = []
    previous = inserted = 0
    for placement, needle in zip(context.placements, _needle_tokens(enc, needles), strict=True):
        point = placement.token_offset - inserted
        tokens += trimmed[previous:point] + needle
        previous, inserted = point, inserted + len(needle)
    return tokens + trimmed[previous:]


def _assert_at_sentence_break(trimmed, point, depth):
    """``point`` is the reference's insertion point: the depth's token moved back to just after
    the nearest "." token before it."""
    asked = int(len(trimmed) * depth / 100)
    assert point <= asked
    assert trimmed[point - 1] == PERIOD
    assert PERIOD not in trimmed[point:asked]


# --------------------------------------------------------------------------------------------
# build_context: one needle.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [3, 10, 25, 33.3, 50, 75, 97.5, 99.9])
def test_one_needle_goes_after_the_sentence_end_before_its_depth(enc, haystack, depth):
    context = build_context(haystack, [CLASSIC_NEEDLE], 8000, depth)
    trimmed = _trimmed(enc, haystack, [CLASSIC_NEEDLE], 7800)
    (placement,) = context.placements
    assert placement.needle == 0 and placement.depth_percent == depth
    _assert_at_sentence_break(trimmed, placement.token_offset, depth)
    assert context.text.startswith(CLASSIC_NEEDLE, placement.char_offset)
    assert context.text[: placement.char_offset].endswith(".")
    assert context.text[: placement.char_offset] == enc.decode(trimmed[: placement.token_offset])


def test_depth_zero_starts_the_context_and_depth_100_ends_it(enc, haystack):
    first = build_context(haystack, [CLASSIC_NEEDLE], 4000, 0)
    assert first.placements[0].token_offset == first.placements[0].char_offset == 0
    assert first.text.startswith(CLASSIC_NEEDLE)

    last = build_context(haystack, [CLASSIC_NEEDLE], 4000, 100)
    needle_length = len(enc.encode_ordinary(CLASSIC_NEEDLE))
    assert last.placements[0].token_offset == 3800 - needle_length
    assert last.text.endswith(CLASSIC_NEEDLE)
    assert last.placements[0].char_offset == len(last.text) - len(CLASSIC_NEEDLE)


def test_no_sentence_end_before_the_depth_puts_the_needle_first(enc):
    haystack = enc.encode_ordinary("word " * 3000)
    context = build_context(haystack, ["NEEDLE"], 2000, 50)
    assert context.placements[0].token_offset == 0 and context.text.startswith("NEEDLE")


PASS_KEY = "The pass key is 71432. Remember it."  # a custom needle: no space of its own


@pytest.mark.parametrize("depth", [10, 50, 90])
def test_a_needle_without_a_space_of_its_own_never_glues_onto_the_sentence_before(enc, haystack, depth):
    """The reference pasted it straight after the period ("...filler.The pass key is"); here a
    space goes before it and counts in its tokens, so the context still fills its length exactly."""
    context = build_context(haystack, [PASS_KEY], 4000, depth)
    (placement,) = context.placements
    assert context.text.startswith(PASS_KEY, placement.char_offset)
    assert context.text[: placement.char_offset].endswith(". ")  # the haystack's period, then the space
    trimmed = _trimmed(enc, haystack, [f" {PASS_KEY}"], 3800)
    _assert_at_sentence_break(trimmed, placement.token_offset, depth)
    assert enc.decode(_joined(enc, haystack, [f" {PASS_KEY}"], context, 3800)) == context.text
    assert "The pass key is 71432." in sentences_of(context.text)


def test_a_needle_that_starts_the_context_goes_in_as_given_and_needles_that_meet_are_kept_apart(haystack):
    first = build_context(haystack, [PASS_KEY], 4000, 0)
    assert first.text.startswith(PASS_KEY) and first.placements[0].char_offset == 0
    needles = ["The code is 4071.", "The door is red."]
    last = build_context(haystack, needles, 4000, 100)
    assert last.text.endswith(" The code is 4071. The door is red.")
    assert [last.text.startswith(needles[p.needle], p.char_offset) for p in last.placements] == [True, True]


@pytest.mark.parametrize("length", [1000, 2048, 5000, 12000])
@pytest.mark.parametrize("depth", [0, 12.5, 50, 88, 100])
def test_total_length(enc, haystack, length, depth):
    """The joined tokens fill ``length - buffer`` exactly. Counted again after decoding, the
    classic needle loses one token when it follows a "." (".\\n" becomes one token); RULER's
    needles, which start with a space, count exactly after a "." (at depth 0 the first one's final
    "." may join the haystack's first word)."""
    target = length - 200
    classic = build_context(haystack, [CLASSIC_NEEDLE], length, depth)
    assert len(_joined(enc, haystack, [CLASSIC_NEEDLE], classic, target)) == target
    assert enc.decode(_joined(enc, haystack, [CLASSIC_NEEDLE], classic, target)) == classic.text
    assert classic.tokens == len(enc.encode_ordinary(classic.text))
    merged = depth not in (0, 100)
    assert classic.tokens == target - 1 if merged else target - 1 <= classic.tokens <= target

    ruler = ruler_needles(keys=2, values=2, distractors=2, seed=length)
    context = build_context(haystack, ruler.needles, length, depth)
    assert context.tokens == target if depth > 0 else target - 1 <= context.tokens <= target
    assert len(_joined(enc, haystack, ruler.needles, context, target)) == target


@pytest.mark.parametrize("buffer", [0, 200, 500])
def test_buffer_is_left_free(haystack, buffer):
    ruler = ruler_needles(seed=3)
    assert build_context(haystack, ruler.needles, 3000, 40, buffer=buffer).tokens == 3000 - buffer


# --------------------------------------------------------------------------------------------
# build_context: several needles.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("depth", "expected"), [(20, [20, 40, 60, 80]), (0, [0, 25, 50, 75]), (60, [60, 70, 80, 90])])
def test_needles_are_spaced_evenly_after_the_first(enc, haystack, depth, expected):
    needles = PIZZA + [" Basil is one of the secret ingredients needed to build the perfect pizza. "]
    context = build_context(haystack, needles, 6000, depth)
    trimmed = _trimmed(enc, haystack, needles, 5800)
    assert [p.depth_percent for p in context.placements] == pytest.approx(expected)
    assert [p.needle for p in context.placements] == [0, 1, 2, 3]
    inserted = 0
    for placement, tokens in zip(context.placements, _needle_tokens(enc, needles), strict=True):
        # Depths are measured on the haystack alone, not on the context grown by earlier needles.
        point = placement.token_offset - inserted
        if placement.depth_percent == 0:
            assert point == 0
        else:
            _assert_at_sentence_break(trimmed, point, placement.depth_percent)
        assert context.text.startswith(needles[placement.needle], placement.char_offset)
        inserted += len(tokens)
    offsets = [p.char_offset for p in context.placements]
    assert offsets == sorted(offsets)
    # Counted again, each pizza needle may lose a token at either edge (its spaces join the haystack's).
    assert 5800 - 2 * len(needles) <= context.tokens <= 5800


def test_depth_100_appends_every_needle_in_order(enc, haystack):
    context = build_context(haystack, PIZZA, 3000, 100)
    assert context.text.endswith("".join(PIZZA))
    assert [p.depth_percent for p in context.placements] == [100, 100, 100]
    lengths = [len(tokens) for tokens in _needle_tokens(enc, PIZZA)]
    assert [p.token_offset for p in context.placements] == [
        2800 - sum(lengths),
        2800 - sum(lengths[1:]),
        2800 - lengths[2],
    ]


def test_char_offsets_stay_exact_when_the_trim_splits_a_character(enc):
    """Non-ASCII text, cut wherever the length falls: a split character decodes to U+FFFD both in
    the context and in the offsets, so every needle is still found where its placement says."""
    haystack = enc.encode_ordinary("Le café est à côté. 東京は大きい。 Ça va 🙂. " * 300)
    needles = ruler_needles(keys=1, values=2, seed=1).needles
    for length in range(1200, 1260):
        for depth in (0, 33, 100):
            context = build_context(haystack, needles, length, depth)
            for placement in context.placements:
                assert context.text.startswith(needles[placement.needle], placement.char_offset)
            assert context.text == enc.decode(_joined(enc, haystack, needles, context, length - 200))


@pytest.mark.parametrize(
    ("needles", "length", "depth", "message"),
    [
        ([CLASSIC_NEEDLE], 4000, -1, "outside 0..100"),
        ([CLASSIC_NEEDLE], 4000, 100.5, "outside 0..100"),
        ([CLASSIC_NEEDLE], 4000, math.nan, "outside 0..100"),
        ([], 4000, 50, "at least one needle"),
        ([CLASSIC_NEEDLE], 210, 50, "too few for needles"),
        ([CLASSIC_NEEDLE], 100_000, 50, "fewer than"),
    ],
)
def test_build_context_errors(haystack, needles, length, depth, message):
    with pytest.raises(UsageError, match=message) as error:
        build_context(haystack, needles, length, depth)
    assert "\n" not in str(error.value)


def test_needles_that_exactly_fill_the_length(enc):
    needle_length = len(enc.encode_ordinary(CLASSIC_NEEDLE))
    context = build_context([], [CLASSIC_NEEDLE], 200 + needle_length, 50)
    assert context.text == CLASSIC_NEEDLE and context.tokens == needle_length


# --------------------------------------------------------------------------------------------
# load_haystack.
# --------------------------------------------------------------------------------------------


def test_load_haystack_takes_txt_files_by_name_and_repeats_them(tmp_path, enc):
    (tmp_path / "b.txt").write_text("Second file. ", encoding="utf-8")
    (tmp_path / "a.txt").write_text("First file. ", encoding="utf-8")
    (tmp_path / "c.md").write_text("Not a haystack. ", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "0.txt").write_text("Nested. ", encoding="utf-8")
    one_pass = enc.encode_ordinary("First file. Second file. ")
    assert load_haystack(tmp_path, 0) == one_pass
    assert load_haystack(str(tmp_path), len(one_pass)) == one_pass
    tokens = load_haystack(tmp_path, len(one_pass) + 1)
    assert tokens == one_pass * 2
    assert enc.decode(load_haystack(tmp_path, 10 * len(one_pass) - 1)) == "First file. Second file. " * 10


def test_load_haystack_single_file(tmp_path, enc):
    path = tmp_path / "essay.text"
    path.write_text("\ufeffOne sentence here.", encoding="utf-8")  # the BOM is dropped
    tokens = load_haystack(path, 20)
    assert len(tokens) >= 20
    assert enc.decode(tokens) == "One sentence here." * math.ceil(20 / len(enc.encode_ordinary("One sentence here.")))


def test_load_haystack_errors(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        load_haystack(tmp_path / "missing", 10)
    (tmp_path / "notes.md").write_text("text", encoding="utf-8")
    with pytest.raises(UsageError, match="no .txt files"):
        load_haystack(tmp_path, 10)
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    with pytest.raises(UsageError, match="is empty"):
        load_haystack(tmp_path, 10)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("café".encode("latin-1"))
    with pytest.raises(UsageError, match="latin.txt is not UTF-8"):
        load_haystack(tmp_path, 10)


# --------------------------------------------------------------------------------------------
# The grid.
# --------------------------------------------------------------------------------------------


def test_parse_lengths_lists_and_ranges():
    assert parse_lengths("1k,2k,4000") == [1024, 2048, 4000]
    assert parse_lengths(" 4k , 1k,4096 ") == [1024, 4096]
    assert parse_lengths("2k:2k:3") == [2048]
    assert parse_lengths("1000:4000:1") == [1000]
    # np.round(np.linspace(...)).astype(int), computed with numpy.
    assert parse_lengths("1k:128k:8") == [1024, 19602, 38181, 56759, 75337, 93915, 112494, 131072]
    reference_default = parse_lengths("1000:16000:35")
    assert reference_default[:6] == [1000, 1441, 1882, 2324, 2765, 3206]
    assert reference_default[-4:] == [14676, 15118, 15559, 16000] and len(reference_default) == 35
    assert parse_lengths("1k:3k:3,500") == [500, 1024, 2048, 3072]


@pytest.mark.parametrize(
    "text",
    ["", "1k,,2k", "abc", "0", "1k:2k", "1k:2k:3:4", "2k:1k:3", "1k:2k:0", "1k:2k:x", "1k:2k:\u00b2", "1k:2k:1001"],
)
def test_parse_lengths_errors(text):
    with pytest.raises(UsageError) as error:
        parse_lengths(text)
    assert "\n" not in str(error.value)


def test_parse_depths_linear():
    assert parse_depths("0,25,50,100") == [0, 25, 50, 100]
    assert parse_depths("50, 12.5,50") == [12.5, 50]
    assert parse_depths("12.34561,12.34564") == [12.346]  # cells are named by depth: one cell, not two
    assert parse_depths("0:100:5") == [0, 25, 50, 75, 100]
    # The reference's default grid, np.round(np.linspace(0, 100, 35)).astype(int).
    grid = parse_depths("0:100:35")
    assert grid[:10] == [0, 3, 6, 9, 12, 15, 18, 21, 24, 26] and grid[-3:] == [94, 97, 100]
    assert all(isinstance(depth, float) for depth in grid)


def test_parse_depths_sigmoid_matches_the_reference():
    assert parse_depths("0:100:5", "sigmoid") == [0, 7.586, 50, 92.414, 100]
    assert parse_depths("0:100:7", "sigmoid") == [0, 3.445, 15.887, 50, 84.113, 96.555, 100]
    # The reference's logistic over np.linspace(0, 100, 35), sorted (computed with numpy).
    assert parse_depths("0:100:35", "sigmoid") == [
        0.0, 0.896, 1.199, 1.602, 2.138, 2.849, 3.786, 5.016, 6.617, 8.683, 11.316, 14.62, 18.685,
        23.569, 29.269, 35.704, 42.7, 50.0, 57.3, 64.296, 70.731, 76.431, 81.315, 85.38, 88.684,
        91.317, 93.383, 94.984, 96.214, 97.151, 97.862, 98.398, 98.801, 99.104, 100.0,
    ]  # fmt: skip
    # Rising, unlike the reference's own logistic, which maps 25 to 92.414 (the same depths over
    # 0..100, but a range from 0 to 50 must stay between 0 and 50).
    assert parse_depths("0:50:3", "sigmoid") == [0, 7.586, 50]
    # Only ranges are mapped; listed depths are taken as written.
    assert parse_depths("25,75", "sigmoid") == [25, 75]


@pytest.mark.parametrize(
    ("text", "spacing", "message"),
    [
        ("101", "linear", "outside 0..100"),
        ("-5", "linear", "outside 0..100"),
        ("0:120:3", "linear", "outside 0..100"),
        ("x", "linear", "invalid depth 'x'"),
        ("0:100", "linear", "min:max:count"),
        ("50:10:3", "linear", "minimum is above"),
        ("0:100:0", "sigmoid", "from 1 to 1000"),
        ("0:100:\u0663", "linear", "from 1 to 1000"),  # an Arabic-Indic 3 is not read as 3
        ("0:100:999999999999", "linear", "from 1 to 1000"),
        ("0,,5", "linear", "separated by commas"),
        ("0,50", "log", "unknown depth spacing 'log'"),
    ],
)
def test_parse_depths_errors(text, spacing, message):
    with pytest.raises(UsageError, match=message) as error:
        parse_depths(text, spacing)
    assert "\n" not in str(error.value)


# --------------------------------------------------------------------------------------------
# Needles and recall.
# --------------------------------------------------------------------------------------------


def test_classic_needle():
    assert CLASSIC.kind == "classic"
    assert CLASSIC.needles == [
        "\nThe best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day.\n"
    ]
    assert CLASSIC.question == "What is the best thing to do in San Francisco?"
    assert all(item in CLASSIC.needles[0] for item in CLASSIC.expected)


def test_ruler_needles_multi_key_value_query():
    needles = ruler_needles(keys=2, values=3, distractors=4, seed=11)
    assert needles.kind == "ruler" and len(needles.needles) == 10 and len(needles.expected) == 6
    pairs = [RULER_NEEDLE.fullmatch(needle).groups() for needle in needles.needles]
    keys = {key for key, _ in pairs}
    assert len(keys) == 2 + 4 and len({value for _, value in pairs}) == 10
    asked = [key for key in keys if key in needles.question]
    assert len(asked) == 2
    assert sorted(needles.expected) == sorted(value for key, value in pairs if key in asked)
    first, second = sorted(asked, key=needles.question.index)
    assert needles.question == (
        f"What are all the special magic numbers for {first}, and {second} mentioned in the provided text?"
    )


def test_ruler_needles_single_and_determinism():
    single = ruler_needles(seed=5)
    ((key, value),) = [RULER_NEEDLE.fullmatch(needle).groups() for needle in single.needles]
    assert single.question == f"What is the special magic number for {key} mentioned in the provided text?"
    assert single.expected == [value]
    two_values = ruler_needles(values=2, seed=5)
    ((key, _), _) = [RULER_NEEDLE.fullmatch(needle).groups() for needle in two_values.needles]
    assert two_values.question == f"What are all the special magic numbers for {key} mentioned in the provided text?"
    shape = {"keys": 3, "values": 2, "distractors": 5}
    assert ruler_needles(**shape, seed=9) == ruler_needles(**shape, seed=9)
    assert ruler_needles(**shape, seed=9) != ruler_needles(**shape, seed=10)
    # Shuffled: over seeds, the asked needles do not always come first.
    orders = set()
    for seed in range(20):
        needles = ruler_needles(keys=1, values=1, distractors=3, seed=seed)
        orders.add(next(i for i, needle in enumerate(needles.needles) if needles.expected[0] in needle))
    assert len(orders) > 1


@pytest.mark.parametrize(("keys", "values", "distractors"), [(0, 1, 0), (1, 0, 0), (1, 1, -1), (600, 1, 600)])
def test_ruler_needles_errors(keys, values, distractors):
    with pytest.raises(UsageError):
        ruler_needles(keys=keys, values=values, distractors=distractors)


def test_custom_needle():
    needle = custom_needle(" The secret code is Zebra-42. ", " What is the secret code? ", ["zebra-42"])
    assert needle == NeedleSet(
        needles=[" The secret code is Zebra-42. "],
        question="What is the secret code?",
        expected=["zebra-42"],
        kind="custom",
    )
    with pytest.raises(UsageError, match="does not occur in the needle"):
        custom_needle("The code is 42.", "Code?", ["43"])
    for needle, question, answers in [(" ", "Q?", ["a"]), ("a", "", ["a"]), ("a", "Q?", []), ("a", "Q?", ["a", " "])]:
        with pytest.raises(UsageError):
            custom_needle(needle, question, answers)


def test_recall_is_rulers_string_match_all():
    expected = ["1234567", "7654321", "Dolores Park"]
    assert recall("The numbers are 1234567 and 7654321; dolores park.", expected) == 1.0
    assert recall("1234567 only", expected) == pytest.approx(1 / 3)
    assert recall("", expected) == 0.0
    assert recall("Eat a SANDWICH.", CLASSIC.expected) == 0.5
    with pytest.raises(UsageError):
        recall("anything", [])


# --------------------------------------------------------------------------------------------
# The standard haystack.
# --------------------------------------------------------------------------------------------


def test_paul_graham_essays(enc):
    if not ESSAYS.is_dir():
        pytest.skip(f"the standard haystack is not at {ESSAYS}")
    haystack = load_haystack(ESSAYS, 1_000_000)
    essays = "".join(path.read_text(encoding="utf-8-sig") for path in sorted(ESSAYS.glob("*.txt")))
    one_pass = enc.encode_ordinary(essays)
    assert haystack == one_pass * math.ceil(1_000_000 / len(one_pass))
    for length, depth in [(2000, 50), (16_000, 10), (128_000, 100), (1_000_000, 37)]:
        context = build_context(haystack, CLASSIC.needles, length, depth)
        (placement,) = context.placements
        assert context.text.startswith(CLASSIC_NEEDLE, placement.char_offset)
        assert length - 201 <= context.tokens <= length - 200
        if depth < 100:
            trimmed = _trimmed(enc, haystack, CLASSIC.needles, length - 200)
            _assert_at_sentence_break(trimmed, placement.token_offset, depth)
