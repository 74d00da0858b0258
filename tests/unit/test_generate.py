"""Synthetic InfiniteBench generators: lengths, needles, answers recomputed by hand, determinism."""

from __future__ import annotations

import itertools
import json
import re
import statistics

import pytest

from llmxmr.bench.infinitebench.generate import (
    MATH_FIND_TARGETS,
    SYNTHETIC_TASKS,
    generate,
    parse_length,
    write_jsonl,
)
from llmxmr.errors import UsageError
from llmxmr.tokens import TiktokenCounter

from ..conftest import WordCounter

PASSKEY_NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key.\n"
NUMBER_STRING_NEEDLE = "The sequence of digits is {key}. Remember it. {key} is the sequence of digits.\n"
NEEDLES = {"passkey": PASSKEY_NEEDLE, "number_string": NUMBER_STRING_NEEDLE}
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.\n"
KV_PREFIX = "JSON data:\n"
KV_INPUT = re.compile(r'\nKey: "([0-9a-f-]{36})"\nThe value associated with the specified key is: \Z')


@pytest.fixture(scope="module")
def counter():
    return TiktokenCounter()


def _assert_lengths(examples, length, counter):
    for tokens in counter.count_batch([example["context"] for example in examples]):
        assert abs(tokens - length) <= 0.02 * length, (tokens, length)


# --------------------------------------------------------------------------------------------
# Schema, determinism, lengths.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", SYNTHETIC_TASKS)
def test_schema_and_determinism(task, counter):
    examples = generate(task, 2048, 3, seed=7, counter=counter)
    assert [example["id"] for example in examples] == [0, 1, 2]
    for example in examples:
        assert set(example) == {"id", "context", "input", "answer", "options"}
        assert example["options"] == [] and len(example["answer"]) == 1
    assert generate(task, 2048, 3, seed=7, counter=counter) == examples
    assert generate(task, 2048, 3, seed=8, counter=counter) != examples


def test_default_counter_is_cl100k(counter):
    assert generate("passkey", 2048, 2, seed=3) == generate("passkey", 2048, 2, seed=3, counter=counter)


@pytest.mark.parametrize("length", [2000, 2048, 16 * 1024])
@pytest.mark.parametrize("task", SYNTHETIC_TASKS)
def test_context_length_within_two_percent(task, length, counter):
    _assert_lengths(generate(task, length, 7, seed=1, counter=counter), length, counter)


@pytest.mark.parametrize("task", ["kv_retrieval", "math_find"])
def test_length_over_many_seeds_at_2k(task, counter):
    """Random units vary in cost: the fit holds for every seed, not a lucky one."""
    for seed in range(20):
        _assert_lengths(generate(task, 2000, 2, seed=seed, counter=counter), 2000, counter)


def test_length_at_128k(counter):
    _assert_lengths(generate("kv_retrieval", 128 * 1024, 1, counter=counter), 128 * 1024, counter)


@pytest.mark.parametrize("task", SYNTHETIC_TASKS)
def test_length_with_another_counter(task):
    counter = WordCounter()
    _assert_lengths(generate(task, 4096, 2, counter=counter), 4096, counter)


# --------------------------------------------------------------------------------------------
# passkey and number_string.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["passkey", "number_string"])
def test_needle_once_at_increasing_depths(task, counter):
    examples = generate(task, 4096, 5, seed=2, counter=counter)
    depths = []
    for example in examples:
        key = example["answer"][0]
        needle = NEEDLES[task].format(key=key)
        context = example["context"]
        assert context.count(needle) == 1
        assert context.count(key) == 2  # twice in the needle, nowhere else
        assert context.replace(needle, "") == NOISE * context.count(NOISE)
        depths.append(context.index(needle) / (len(context) - len(needle)))
    assert examples[0]["context"].startswith(NEEDLES[task].format(key=examples[0]["answer"][0]))
    assert examples[-1]["context"].endswith(NEEDLES[task].format(key=examples[-1]["answer"][0]))
    assert depths == sorted(depths) and depths[0] == 0 and depths[-1] == 1
    assert depths[2] == pytest.approx(0.5, abs=0.01)


def test_single_example_needle_in_the_middle(counter):
    (example,) = generate("passkey", 4096, 1, counter=counter)
    needle = PASSKEY_NEEDLE.format(key=example["answer"][0])
    context = example["context"]
    assert context.index(needle) / (len(context) - len(needle)) == pytest.approx(0.5, abs=0.01)


def test_passkey_keys_and_question(counter):
    examples = generate("passkey", 2048, 30, seed=4, counter=counter)
    keys = [example["answer"][0] for example in examples]
    assert all(re.fullmatch(r"\d{5}", key) for key in keys)
    assert len(set(keys)) > 25
    assert {example["input"] for example in examples} == {"What is the pass key?"}


def test_number_string_keys(counter):
    examples = generate("number_string", 2048, 30, seed=4, counter=counter)
    for example in examples:
        key = example["answer"][0]
        assert re.fullmatch(r"\d{10}", key)
        # Each of the five insertions doubles a digit in place: a repeated pair is always left.
        assert any(a == b for a, b in itertools.pairwise(key))
        assert example["input"] == "What is the sequence of digits?"


# --------------------------------------------------------------------------------------------
# kv_retrieval.
# --------------------------------------------------------------------------------------------


def test_kv_context_is_json_and_the_key_maps_to_the_answer(counter):
    examples = generate("kv_retrieval", 4096, 5, seed=5, counter=counter)
    positions = []
    for example in examples:
        context = example["context"]
        assert context.startswith(KV_PREFIX + "{") and context.endswith('"}')
        data = json.loads(context[len(KV_PREFIX) :])
        assert len(data) == context.count('": "')  # no key repeats
        key = KV_INPUT.match(example["input"]).group(1)
        assert data[key] == example["answer"][0]
        keys = list(data)
        positions.append(keys.index(key) / (len(keys) - 1))
    assert positions == sorted(positions) and positions[0] == 0 and positions[-1] == 1


def test_kv_uuids_are_version_4(counter):
    (example,) = generate("kv_retrieval", 2048, 1, counter=counter)
    data = json.loads(example["context"][len(KV_PREFIX) :])
    uuid4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
    assert all(uuid4.fullmatch(text) for pair in data.items() for text in pair)


# --------------------------------------------------------------------------------------------
# math_find.
# --------------------------------------------------------------------------------------------


def _expected(target, values):
    distinct = sorted(set(values))
    return {
        "largest number": max(values),
        "second largest number": distinct[-2],
        "third largest number": distinct[-3],
        "smallest number": min(values),
        "second smallest number": distinct[1],
        "third smallest number": distinct[2],
        "median": statistics.median(values),
    }[target]


def test_math_find_answers_recomputed(counter):
    assert MATH_FIND_TARGETS == (
        "largest number",
        "second largest number",
        "third largest number",
        "smallest number",
        "second smallest number",
        "third smallest number",
        "median",
    )
    examples = generate("math_find", 2048, 14, seed=6, counter=counter)
    for i, example in enumerate(examples):
        target = MATH_FIND_TARGETS[i % 7]
        phrase = "median number" if target == "median" else target
        assert example["input"] == (
            f"You should answer with only one number, no other words. The {phrase} of the list is: "
        )
        values = json.loads(example["context"])
        assert example["context"] == str(values)
        assert all(isinstance(v, int) and 0 <= v <= 99 for v in values)
        (answer,) = example["answer"]
        assert answer == _expected(target, values)
        # As InfiniteBench: a float for the mean of two middle values, else an int.
        assert isinstance(answer, float) == (target == "median" and len(values) % 2 == 0)


def test_math_find_median_of_lists_of_both_parities(counter):
    """An even list's median is the mean of the middle two, always a float (50.0, 50.5); an odd
    list's is its middle value, an int. Short lists make both common."""
    medians = [generate("math_find", length, 7, seed=9, counter=counter)[6] for length in range(20, 60)]
    parities, answers = set(), []
    for example in medians:
        values = json.loads(example["context"])
        parities.add(len(values) % 2)
        (answer,) = example["answer"]
        assert answer == statistics.median(values)
        assert isinstance(answer, float) == (len(values) % 2 == 0)
        answers.append(answer)
    assert parities == {0, 1}
    assert any(isinstance(a, float) and a == int(a) for a in answers)  # a whole mean stays a float


def test_math_find_range_is_narrowed_on_the_asked_side(counter):
    """InfiniteBench caps the maximum for "largest" questions and raises the minimum for "smallest"
    ones: over many examples the extremes vary instead of always being 99 and 0."""
    examples = generate("math_find", 2048, 70, seed=10, counter=counter)
    largest = {example["answer"][0] for example in examples[0::7]}
    smallest = {example["answer"][0] for example in examples[3::7]}
    assert len(largest) > 3 and all(79 <= value <= 99 for value in largest)
    assert len(smallest) > 3 and all(0 <= value <= 19 for value in smallest)


# --------------------------------------------------------------------------------------------
# Errors, parse_length, write_jsonl.
# --------------------------------------------------------------------------------------------


def test_bad_requests_raise_usage_errors(counter):
    with pytest.raises(UsageError, match="unknown synthetic task 'math_calc'"):
        generate("math_calc", 2048, 1, counter=counter)
    with pytest.raises(UsageError, match="at least 1, got 0"):
        generate("passkey", 2048, 0, counter=counter)
    for task in ("passkey", "number_string", "kv_retrieval"):
        with pytest.raises(UsageError, match=f"length 20 is too small for {task}"):
            generate(task, 20, 1, counter=counter)
    with pytest.raises(UsageError, match="length 0 is too small for math_find"):
        generate("math_find", 0, 1, counter=counter)


@pytest.mark.parametrize(
    ("text", "tokens"),
    [("16k", 16384), ("16K", 16384), ("128k", 131072), ("1m", 1048576), ("1M", 1048576), ("2000", 2000)],
)
def test_parse_length(text, tokens):
    assert parse_length(text) == tokens


@pytest.mark.parametrize("text", ["", "k", "abc", "1.5k", "-5", "0", "0k", "16kb", "16 k", "1g"])
def test_parse_length_rejects(text):
    with pytest.raises(UsageError, match="invalid length") as info:
        parse_length(text)
    assert repr(text) in str(info.value) and "\n" not in str(info.value)


def test_write_jsonl_round_trip(tmp_path, counter):
    examples = generate("kv_retrieval", 2048, 2, counter=counter)
    examples.append({"id": 2, "context": "café 长", "input": "?", "answer": [1.5], "options": []})
    path = tmp_path / "kv.jsonl"
    write_jsonl(examples, path)
    text = path.read_text(encoding="utf-8")
    assert "café 长" in text  # not \u-escaped
    assert [json.loads(line) for line in text.splitlines()] == examples
