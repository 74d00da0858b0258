"""Offline, seeded generators of InfiniteBench's four synthetic tasks, at any target length.

InfiniteBench released its synthetic tasks at fixed lengths. These generators rebuild them at a
length of our choosing, following how InfiniteBench constructed them (OpenBMB/InfiniteBench,
``data/construct_synthetic_dataset.py``):

* ``passkey``: the line "The grass is green. ... There and back again." repeated, with the needle
  "The pass key is {key}. Remember it. {key} is the pass key." inserted between two lines; the
  key is five random digits.
* ``number_string``: the same noise and layout, with a ten-digit key built as InfiniteBench builds
  it: five random digits, then five times a digit duplicated in place.
* ``kv_retrieval``: ``JSON data:\\n{"key": "value", ...}`` with random UUID-4 keys and values
  (InfiniteBench took them from lost-in-the-middle's generator; here they come from the seeded
  rng); the question asks for the value of one key.
* ``math_find``: a Python list of integers in 0..99, with InfiniteBench's narrowing of the range
  on the side the question looks at; the seven question types take turns.

The needle's depth (passkey, number_string) and the asked key's position (kv_retrieval) are evenly
spaced over the examples, from the very start of the context to its very end, as InfiniteBench
spaced them over its fixed grid.

Examples follow the released JSONL schema: ``{"id", "context", "input", "answer": [value],
"options": []}``. The context's length is fitted in tokens of the given counter (cl100k_base by
default): the cost of one repeated unit is measured on a sample of 64 units, then one count of a
full context corrects the estimate by whole units. That full count is made once per example for
kv_retrieval and math_find, once per task for passkey and number_string (whose contexts differ
only by the needle's digits and place), whatever the length. Everything is drawn from
``random.Random(seed)``: the same task, length, count and seed give the same examples.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from ...errors import UsageError
from ...tokens import TiktokenCounter, TokenCounter

SYNTHETIC_TASKS: tuple[str, ...] = ("passkey", "number_string", "kv_retrieval", "math_find")

# InfiniteBench's names of the math_find questions, in the order of its build_math_find().
MATH_FIND_TARGETS: tuple[str, ...] = (
    "largest number",
    "second largest number",
    "third largest number",
    "smallest number",
    "second smallest number",
    "third smallest number",
    "median",
)

_NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.\n"
_PASSKEY_NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key.\n"
_PASSKEY_QUESTION = "What is the pass key?"
_NUMBER_STRING_NEEDLE = "The sequence of digits is {key}. Remember it. {key} is the sequence of digits.\n"
_NUMBER_STRING_QUESTION = "What is the sequence of digits?"

_KV_PREFIX = "JSON data:\n{"
_KV_QUESTION = '\nKey: "{key}"\nThe value associated with the specified key is: '
_KV_ASKED = re.compile(r'Key: "([^"]+)"')

_MATH_MIN, _MATH_MAX = 0, 99
# InfiniteBench's ``inputs`` dict: the text after the list, which the model completes.
_MATH_FIND_ASK = "You should answer with only one number, no other words. "
_MATH_FIND_INPUTS: dict[str, str] = {
    "largest number": _MATH_FIND_ASK + "The largest number of the list is: ",
    "second largest number": _MATH_FIND_ASK + "The second largest number of the list is: ",
    "third largest number": _MATH_FIND_ASK + "The third largest number of the list is: ",
    "smallest number": _MATH_FIND_ASK + "The smallest number of the list is: ",
    "second smallest number": _MATH_FIND_ASK + "The second smallest number of the list is: ",
    "third smallest number": _MATH_FIND_ASK + "The third smallest number of the list is: ",
    "median": _MATH_FIND_ASK + "The median number of the list is: ",
}
# Where each rank question looks in the sorted distinct values: InfiniteBench removes every copy
# of the maximum before taking the next one, so "second largest" is the second distinct value.
_MATH_FIND_RANKS: dict[str, int] = {
    "largest number": -1,
    "second largest number": -2,
    "third largest number": -3,
    "smallest number": 0,
    "second smallest number": 1,
    "third smallest number": 2,
}

# Units (noise lines, pairs, numbers) in the sample that measures one unit's token cost: enough to
# average out the fixed parts and the variation of random units, small enough to count at once.
_SAMPLE_UNITS = 64

_LENGTH = re.compile(r"(\d+)([km]?)", re.IGNORECASE)
_LENGTH_UNITS = {"": 1, "k": 1024, "m": 1024 * 1024}

T = TypeVar("T")
Example = dict[str, Any]


def parse_length(text: str) -> int:
    """A token count written as InfiniteBench names its lengths: "2000", "16k" (16 × 1024), "1m"."""
    match = _LENGTH.fullmatch(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise UsageError(f"invalid length {text!r}: expected a positive token count such as 2000, 16k or 1m")
    return int(match.group(1)) * _LENGTH_UNITS[match.group(2).lower()]


def generate(task: str, length: int, n: int, seed: int = 0, counter: TokenCounter | None = None) -> list[Example]:
    """``n`` examples of a synthetic task whose contexts have about ``length`` tokens each."""
    if task not in SYNTHETIC_TASKS:
        raise UsageError(f"unknown synthetic task {task!r}: expected one of {', '.join(SYNTHETIC_TASKS)}")
    if n < 1:
        raise UsageError(f"the number of examples must be at least 1, got {n}")
    rng = random.Random(seed)
    counter = counter if counter is not None else TiktokenCounter()
    if task == "passkey":
        keys = ["".join(_digits(rng, 5)) for _ in range(n)]
        return _needle_examples(task, _PASSKEY_NEEDLE, _PASSKEY_QUESTION, keys, length, counter)
    if task == "number_string":
        keys = [_digit_sequence(rng) for _ in range(n)]
        return _needle_examples(task, _NUMBER_STRING_NEEDLE, _NUMBER_STRING_QUESTION, keys, length, counter)
    if task == "kv_retrieval":
        return [_kv_example(i, n, rng, length, counter) for i in range(n)]
    return [_math_find_example(i, rng, length, counter) for i in range(n)]


def without_answer(task: str, example: Example) -> Example:
    """The same example with what answers it taken out of the context: the needle line (passkey,
    number_string) or the asked pair (kv_retrieval). The haystack is otherwise untouched, so a
    run on it shows what a system answers when the document holds no answer."""
    key = str(example["answer"][0])
    if task == "passkey":
        removed = _PASSKEY_NEEDLE.format(key=key)
    elif task == "number_string":
        removed = _NUMBER_STRING_NEEDLE.format(key=key)
    elif task == "kv_retrieval":
        asked = _KV_ASKED.search(example["input"])
        assert asked is not None, "a generated kv_retrieval question names its key"
        removed = f'"{asked.group(1)}": "{key}"'
    else:
        raise UsageError(f"{task} has no single needle to take out")
    context = example["context"]
    if removed not in context:
        raise UsageError(f"{task} example {example['id']}: its answer is not in its context")
    if task == "kv_retrieval":  # keep the JSON valid: drop the pair with one separator
        context = context.replace(f"{removed}, ", "").replace(f", {removed}", "").replace(removed, "")
    else:
        context = context.replace(removed, "")
    return {**example, "context": context, "answer": [None]}


def write_jsonl(examples: list[Example], path: str | Path) -> None:
    """One JSON object a line, UTF-8, non-ASCII characters kept as they are (as the released data)."""
    with Path(path).open("w", encoding="utf-8") as out:
        out.writelines(json.dumps(example, ensure_ascii=False) + "\n" for example in examples)


# --------------------------------------------------------------------------------------------
# Fitting a context to a token length.
# --------------------------------------------------------------------------------------------


def _count(counter: TokenCounter, text: str) -> int:
    return counter.count_batch([text])[0]


def _fit_units(task: str, length: int, counter: TokenCounter, render: Callable[[int], str]) -> int:
    """How many units (at least one, which must fit) bring ``render(units)`` closest to ``length``
    tokens.

    One small count gives a unit's cost, one full count corrects the first guess by whole units:
    exact up to half a unit when tokens add up unit by unit (as cl100k's do at line, pair and list
    item boundaries), and otherwise off only by the variation over the few units of the step."""
    unit_tokens = _count(counter, render(_SAMPLE_UNITS)) / _SAMPLE_UNITS
    guess = max(1, round(length / unit_tokens))
    units = guess + round((length - _count(counter, render(guess))) / unit_tokens)
    if units > 1:
        return units
    # Rounding may keep one unit that does not fit: the length must hold the needle at least.
    shortest = _count(counter, render(1))
    if shortest > length:
        raise UsageError(f"length {length} is too small for {task}: its shortest context has {shortest} tokens")
    return 1


def _spread(i: int, n: int, last: int) -> int:
    """Position of example ``i`` of ``n`` on 0..last: evenly spaced from 0 to ``last`` (the middle
    when there is one example), rounded half up."""
    numerator, denominator = (i, n - 1) if n > 1 else (1, 2)
    return (2 * numerator * last + denominator) // (2 * denominator)


class _Drawn(Generic[T]):
    """The random units of one example, drawn from the rng as the fitting asks for more; units
    drawn for a guess beyond the final count are left out of the example."""

    def __init__(self, draw: Callable[[], T]) -> None:
        self._draw = draw
        self._items: list[T] = []

    def first(self, count: int) -> list[T]:
        while len(self._items) < count:
            self._items.append(self._draw())
        return self._items[:count]


def _example(i: int, context: str, question: str, answer: object) -> Example:
    return {"id": i, "context": context, "input": question, "answer": [answer], "options": []}


# --------------------------------------------------------------------------------------------
# passkey and number_string: a needle line among noise lines.
# --------------------------------------------------------------------------------------------


def _digits(rng: random.Random, count: int) -> list[str]:
    return [str(rng.randint(0, 9)) for _ in range(count)]


def _digit_sequence(rng: random.Random) -> str:
    """InfiniteBench's number_string key: five digits, then five times one digit doubled in place,
    which gives ten digits with at least one run of a repeated digit."""
    digits = _digits(rng, 5)
    for size in range(5, 10):
        position = rng.randint(0, size - 1)
        digits.insert(position, digits[position])
    return "".join(digits)


def _needle_examples(
    task: str, needle: str, question: str, keys: list[str], length: int, counter: TokenCounter
) -> list[Example]:
    def context(lines: int, depth: int, key: str) -> str:
        return _NOISE * depth + needle.format(key=key) + _NOISE * (lines - depth)

    # Every context has the same lines and a needle of the same digit count: one fit serves all.
    lines = _fit_units(task, length, counter, lambda count: context(count, 0, keys[0]))
    n = len(keys)
    return [_example(i, context(lines, _spread(i, n, lines), key), question, key) for i, key in enumerate(keys)]


# --------------------------------------------------------------------------------------------
# kv_retrieval: one key of a JSON object of UUIDs.
# --------------------------------------------------------------------------------------------


def _uuid4(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _pair_drawer(rng: random.Random) -> Callable[[], tuple[str, str]]:
    """Draws key-value pairs whose keys never repeat, so the asked key has a single value."""
    keys: set[str] = set()

    def draw() -> tuple[str, str]:
        key = _uuid4(rng)
        while key in keys:
            key = _uuid4(rng)
        keys.add(key)
        return key, _uuid4(rng)

    return draw


def _kv_context(pairs: list[tuple[str, str]]) -> str:
    # InfiniteBench appends '"key": "value", ' per pair and then swaps the last ", " for "}".
    return _KV_PREFIX + ", ".join(f'"{key}": "{value}"' for key, value in pairs) + "}"


def _kv_example(i: int, n: int, rng: random.Random, length: int, counter: TokenCounter) -> Example:
    pairs = _Drawn(_pair_drawer(rng))
    count = _fit_units("kv_retrieval", length, counter, lambda units: _kv_context(pairs.first(units)))
    chosen = pairs.first(count)
    key, value = chosen[_spread(i, n, count - 1)]
    return _example(i, _kv_context(chosen), _KV_QUESTION.format(key=key), value)


# --------------------------------------------------------------------------------------------
# math_find: one order statistic of a list of integers.
# --------------------------------------------------------------------------------------------


def _math_value_range(target: str, rng: random.Random) -> tuple[int, int]:
    """InfiniteBench's range for a question: it raises the minimum (to 0..19) for the smallest
    values, lowers the maximum (to 79..99) for the largest, and picks a side at random for the
    median, so the answer is not simply 0 or 99."""
    if "smallest" in target or (target == "median" and rng.random() > 0.5):
        return rng.randint(_MATH_MIN, int(_MATH_MAX * 0.2)), _MATH_MAX
    return _MATH_MIN, rng.randint(int(_MATH_MAX * 0.8), _MATH_MAX)


def _median(values: list[int]) -> int | float:
    """The middle value (an int), or the mean of the two middle ones (a float, whole or not), as
    InfiniteBench computes it. A float label is what lets the official scorer accept both "50"
    and "50.0"; an int label would refuse "50.0"."""
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def _math_find_answer(target: str, values: list[int], length: int) -> int | float:
    if target == "median":
        return _median(values)
    rank = _MATH_FIND_RANKS[target]
    distinct = sorted(set(values))
    if len(distinct) < (-rank if rank < 0 else rank + 1):
        raise UsageError(
            f"length {length} is too small for math_find: its list of {len(values)} numbers has no {target}"
        )
    return distinct[rank]


def _math_find_example(i: int, rng: random.Random, length: int, counter: TokenCounter) -> Example:
    target = MATH_FIND_TARGETS[i % len(MATH_FIND_TARGETS)]
    low, high = _math_value_range(target, rng)
    numbers = _Drawn(lambda: rng.randint(low, high))
    count = _fit_units("math_find", length, counter, lambda units: str(numbers.first(units)))
    values = numbers.first(count)
    return _example(i, str(values), _MATH_FIND_INPUTS[target], _math_find_answer(target, values, length))
