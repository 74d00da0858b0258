"""The needles of the needle-in-a-haystack test, the question that asks for them, and their scoring.

Three kinds:

* ``classic``: the reference's needle (gkamradt/LLMTest_NeedleInAHaystack, ``needlehaystack/run.py``)
  about San Francisco, asked with its question. The reference has an LLM judge grade the reply from
  1 to 10; here the reply is scored by the strings a right answer must contain, "sandwich" and
  "Dolores Park" (the two things the needle says to do; "San Francisco" is in the question, so it
  proves nothing). Neither occurs in the Paul Graham essays, so only the needle can supply them.
* ``custom``: a needle, a question and the answer strings the user gives.
* ``ruler``: NVIDIA/RULER's needles (``scripts/data/synthetic/niah.py``): "One of the special magic
  numbers for {key} is: {value}." with 7-digit values, several keys asked at once (multi-query),
  several values per key (multi-value) and needles of keys that are not asked (multi-key
  distractors). RULER draws its keys as adjective-noun pairs from the wonderwords lists; here they
  come from a small built-in list, so nothing is downloaded.

Scoring is RULER's ``string_match_all`` (``scripts/eval/synthetic/constants.py``): the fraction of
the expected strings that occur in the answer, ignoring case. No judge model is needed, and a reply
that names two of three magic numbers scores 2/3.
"""

from __future__ import annotations

import random

from pydantic import BaseModel

from ...errors import UsageError

CLASSIC_NEEDLE = "\nThe best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day.\n"
CLASSIC_QUESTION = "What is the best thing to do in San Francisco?"
CLASSIC_EXPECTED = ["sandwich", "Dolores Park"]

# A leading space makes the needle a new sentence after the "." it is inserted behind (RULER joins
# its sentences with spaces), and keeps the needle's tokens apart from the haystack's.
_RULER_NEEDLE = " One of the special magic numbers for {key} is: {value}."
_RULER_QUESTION_ONE = "What is the special magic number for {query} mentioned in the provided text?"
_RULER_QUESTION_ALL = "What are all the special magic numbers for {query} mentioned in the provided text?"
_VALUE_DIGITS = 7

# Keys are "adjective-noun". No word is a part of another (no "old" beside "bold"), so no key is
# hidden inside another key and a question names exactly one key.
# fmt: off
_ADJECTIVES: tuple[str, ...] = (
    "amber", "brave", "calm", "dusty", "eager", "faint", "gentle", "hollow", "icy", "jolly",
    "keen", "lively", "misty", "noble", "orange", "plain", "quiet", "rapid", "silent", "tidy",
    "upbeat", "vivid", "wooden", "young", "zesty", "bitter", "clever", "dark", "empty", "fuzzy",
    "grand", "humble",
)
_NOUNS: tuple[str, ...] = (
    "anchor", "badger", "canyon", "dolphin", "engine", "falcon", "garden", "harbor", "island", "jacket",
    "kettle", "lantern", "meadow", "nickel", "orchard", "pebble", "quarry", "river", "saddle", "tunnel",
    "umbrella", "valley", "walrus", "yacht", "zebra", "beacon", "cactus", "desert", "ember", "forest",
    "glacier", "hammer",
)
# fmt: on


class NeedleSet(BaseModel):
    """What to hide, what to ask, and what a right answer contains."""

    needles: list[str]  # texts to insert, in insertion order
    question: str
    expected: list[str]  # strings whose presence in the answer is scored
    kind: str  # "classic", "custom" or "ruler"

    @property
    def asks_for_several(self) -> bool:
        """Whether a right answer lists several values (RULER multi-key or multi-value)."""
        return self.kind == "ruler" and len(self.expected) > 1


CLASSIC = NeedleSet(needles=[CLASSIC_NEEDLE], question=CLASSIC_QUESTION, expected=CLASSIC_EXPECTED, kind="classic")


def custom_needle(needle: str, question: str, answers: list[str]) -> NeedleSet:
    """A user's needle and question, scored by ``answers``, each of which the needle must contain."""
    if not needle.strip():
        raise UsageError("the needle is empty")
    if not question.strip():
        raise UsageError("the question is empty")
    answers = [answer.strip() for answer in answers]
    if not answers or not all(answers):
        raise UsageError("give at least one answer, and no empty one")
    for answer in answers:
        # An answer the needle does not hold could only be scored by what the model knows.
        if answer.lower() not in needle.lower():
            raise UsageError(f"the answer {answer!r} does not occur in the needle")
    return NeedleSet(needles=[needle], question=question.strip(), expected=answers, kind="custom")


def ruler_needles(keys: int = 1, values: int = 1, distractors: int = 0, seed: int = 0) -> NeedleSet:
    """RULER's magic-number needles: ``keys`` asked keys with ``values`` numbers each, plus
    ``distractors`` needles of keys that are not asked, in an order shuffled by ``seed``."""
    if keys < 1 or values < 1 or distractors < 0:
        raise UsageError(
            f"RULER needles need at least 1 key and 1 value and no negative distractors, "
            f"got keys={keys}, values={values}, distractors={distractors}"
        )
    if keys + distractors > len(_ADJECTIVES) * len(_NOUNS):
        raise UsageError(f"at most {len(_ADJECTIVES) * len(_NOUNS)} keys and distractors together")
    rng = random.Random(seed)
    names = _draw_keys(rng, keys + distractors)
    # Distinct values of the same length: none is another's substring, so recall counts each once.
    draws = rng.sample(range(10 ** (_VALUE_DIGITS - 1), 10**_VALUE_DIGITS), keys * values + distractors)
    numbers = [str(number) for number in draws]
    asked = names[:keys]
    asked_values = [numbers[i * values : (i + 1) * values] for i in range(keys)]
    pairs = [(key, value) for key, key_values in zip(asked, asked_values, strict=True) for value in key_values]
    pairs += list(zip(names[keys:], numbers[keys * values :], strict=True))
    needles = [_RULER_NEEDLE.format(key=key, value=value) for key, value in pairs]
    rng.shuffle(needles)
    return NeedleSet(
        needles=needles,
        question=_ruler_question(asked, one_answer=keys * values == 1),
        expected=[value for key_values in asked_values for value in key_values],
        kind="ruler",
    )


def recall(answer: str, expected: list[str]) -> float:
    """RULER's string_match_all for one answer: the fraction of ``expected`` found in ``answer``,
    ignoring case (1.0 when all are there, 0.0 when none is)."""
    if not expected:
        raise UsageError("nothing to score: the list of expected strings is empty")
    found = answer.lower()
    return sum(item.lower() in found for item in expected) / len(expected)


def _draw_keys(rng: random.Random, count: int) -> list[str]:
    """``count`` distinct adjective-noun keys."""
    nouns = len(_NOUNS)
    picks = rng.sample(range(len(_ADJECTIVES) * nouns), count)
    return [f"{_ADJECTIVES[i // nouns]}-{_NOUNS[i % nouns]}" for i in picks]


def _ruler_question(keys: list[str], one_answer: bool) -> str:
    # RULER's wording, with its list of keys "a, b, and c" (and "a, and b" for two), and its
    # singular question when a single number is asked for.
    query = keys[0] if len(keys) == 1 else ", ".join(keys[:-1]) + ", and " + keys[-1]
    return (_RULER_QUESTION_ONE if one_answer else _RULER_QUESTION_ALL).format(query=query)
