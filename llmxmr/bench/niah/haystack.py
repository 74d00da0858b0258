"""The haystack of the needle-in-a-haystack test: load it, cut it to a length, hide needles in it.

This follows gkamradt/LLMTest_NeedleInAHaystack (``needlehaystack/llm_needle_haystack_tester.py``
and ``llm_multi_needle_haystack_tester.py``), working in cl100k_base tokens as it does:

* The haystack is a folder of ``.txt`` files (Paul Graham's essays in the reference) concatenated
  and repeated until it is long enough. The files are taken in name order, where the reference
  took them in ``glob`` order, which depends on the file system: the same folder gives the same
  haystack everywhere. Their text is encoded once and its token list repeated, where the
  reference re-encoded the growing string after every file (quadratic at a million tokens).
* A context of ``context_length`` tokens keeps ``buffer`` tokens free for the prompt around it and
  the reply (200 as in the reference), so haystack + needles fill ``context_length - buffer``.
* A needle goes at ``int(len(haystack) * depth / 100)``, moved back to just after the nearest
  preceding "." token so that it starts a sentence; at depth 100 it is appended at the very end.
  Unlike the reference, which pasted a needle straight after the period ("...back again.The pass
  key is ..."), a needle that does not start with whitespace gets a space before it, so that it
  never glues onto the sentence before (or onto the needle before, where several meet); the needle
  that starts the context is inserted as given. The space is part of the needle's tokens.
  With several needles, the first goes at ``depth`` and the others follow every
  ``(100 - depth) / len(needles)`` percent, as the reference's multi-needle test spaces them.
  Unlike the reference, which measured each depth on the context grown by the needles already
  inserted, every depth is measured on the haystack alone, so a placement's depth means the same
  thing whatever came before it.

The context is built as token lists, exactly ``context_length - buffer`` tokens long, and decoded
once. Counting the decoded text again does not always give that number back: where a needle meets
the haystack, the tokenizer may merge their edge characters (the classic needle starts with "\\n",
which joins the "." before it into one ".\\n" token), and the haystack's last token, cut from a
longer word or character, may count differently on its own. ``Context.tokens`` is the honest count of
the returned text. Measured: RULER's needles (which start with a space and end with ".") count
exactly after a "." (at depth 0 the needle's "." may join the haystack's first word: one short);
the classic needle one short after a "." and exact at depth 0 and 100; in general, from two
tokens short per needle to one token over.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import tiktoken
from pydantic import BaseModel

from ...errors import UsageError
from ...tokens import OFFLINE_CL100K
from ..infinitebench.generate import parse_length

# The reference's sentence break: ".", whose token ids (one token in cl100k_base) end a sentence.
_SENTENCE_END = "."

# The reference's logistic for sigmoid-spaced depths: L / (1 + exp(-k (x - x0))).
_LOGISTIC_L, _LOGISTIC_X0, _LOGISTIC_K = 100.0, 50.0, 0.1
DEPTH_SPACINGS: tuple[str, ...] = ("linear", "sigmoid")
# The most values a min:max:count range may give.
MAX_RANGE_COUNT = 1000


class Placement(BaseModel):
    """Where one needle went."""

    needle: int  # index into the needle list
    depth_percent: float  # the depth asked for this needle
    # The needle's first token in the context's token list, the space that keeps it apart included.
    token_offset: int
    char_offset: int  # the needle's own first character in Context.text (after that space)


class Context(BaseModel):
    """A haystack with its needles, ready to be put in a prompt."""

    text: str
    tokens: int  # cl100k_base tokens of ``text``, counted again after decoding
    placements: list[Placement]


@functools.cache
def haystack_encoding() -> tiktoken.Encoding:
    """cl100k_base from the offline copy: the tokenizer the reference measured lengths with."""
    return tiktoken.get_encoding(OFFLINE_CL100K)


# --------------------------------------------------------------------------------------------
# Loading.
# --------------------------------------------------------------------------------------------


def load_haystack(path: str | Path, min_tokens: int) -> list[int]:
    """The token ids of a folder's ``*.txt`` files (in name order) or of one file, repeated whole
    until there are at least ``min_tokens``."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"haystack not found: {path}")
    files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
    if not files:
        raise UsageError(f"haystack folder {path} has no .txt files")
    # The files' text is encoded once, as one string: encoding them one by one would split tokens
    # that span two files (a file ending in "." and the next starting with a letter), and the
    # haystack's tokens would no longer be what its text counts when encoded again.
    one_pass = haystack_encoding().encode_ordinary("".join(_read_text(file) for file in files))
    if not one_pass:
        raise UsageError(f"haystack {path} is empty")
    return one_pass * max(1, math.ceil(min_tokens / len(one_pass)))


def _read_text(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError(f"haystack file {file} is not UTF-8 text") from None
    except OSError as error:
        raise UsageError(f"cannot read haystack file {file}: {error.strerror or error}") from None


# --------------------------------------------------------------------------------------------
# Building a context.
# --------------------------------------------------------------------------------------------


def build_context(
    haystack: list[int], needles: list[str], context_length: int, depth_percent: float, buffer: int = 200
) -> Context:
    """``needles`` hidden in the start of ``haystack``, in ``context_length - buffer`` tokens, the
    first at ``depth_percent`` and the others evenly spaced after it, each kept apart from the
    text before it."""
    if not 0 <= depth_percent <= 100:  # also refuses NaN
        raise UsageError(f"depth {depth_percent} is outside 0..100")
    if not needles:
        raise UsageError("at least one needle is needed")
    apart = [_kept_apart(needle) for needle in needles]
    layout = _layout(haystack, apart, context_length, depth_percent, buffer)
    if layout.points[0] == 0 and apart[0] != needles[0]:
        # The first needle starts the context: no text before it to keep apart from. Without the
        # space it may take another number of tokens, which changes the haystack's room and, in
        # rare cases, moves the point off the start; then the space stays.
        as_given = _layout(haystack, [needles[0], *apart[1:]], context_length, depth_percent, buffer)
        if as_given.points[0] == 0:
            layout = as_given
    return _assemble(layout, needles)


def _kept_apart(needle: str) -> str:
    """The needle as it goes in after text: with a space before it unless it starts with
    whitespace, so that it starts a sentence of its own ("back again. The pass key is ...")."""
    return needle if needle[:1].isspace() else f" {needle}"


def check_lengths(lengths: list[int], needles: list[str], buffer: int) -> None:
    """Refuses, before anything runs, a grid whose shortest length has no room for the needles."""
    needle_tokens = sum(len(haystack_encoding().encode_ordinary(_kept_apart(needle))) for needle in needles)
    haystack_room(min(lengths), needle_tokens, buffer)


def haystack_room(context_length: int, needle_tokens: int, buffer: int) -> int:
    """Tokens of haystack in a context of ``context_length``: what the buffer and needles leave."""
    target = context_length - buffer
    room = target - needle_tokens
    if room < 0:
        raise UsageError(
            f"context length {context_length} minus the buffer of {buffer} leaves {target} tokens, "
            f"too few for needles of {needle_tokens} tokens"
        )
    return room


@dataclass(frozen=True)
class _Layout:
    """The needles as inserted and their tokens, the haystack trimmed to leave room for them, and
    each needle's depth and insertion point in the trimmed haystack."""

    needles: list[str]
    needle_tokens: list[list[int]]
    haystack: list[int]
    depths: list[float]
    points: list[int]


def _layout(haystack: list[int], needles: list[str], context_length: int, depth_percent: float, buffer: int) -> _Layout:
    needle_tokens = [haystack_encoding().encode_ordinary(needle) for needle in needles]
    room = haystack_room(context_length, sum(len(tokens) for tokens in needle_tokens), buffer)
    if len(haystack) < room:
        raise UsageError(
            f"the haystack has {len(haystack)} tokens, fewer than the {room} a context of "
            f"{context_length} needs: load it with at least {context_length} tokens"
        )
    trimmed = haystack[:room]
    depths = _needle_depths(depth_percent, len(needles))
    points = [_insertion_point(trimmed, depth, _sentence_end_tokens()) for depth in depths]
    return _Layout(needles, needle_tokens, trimmed, depths, points)


def _needle_depths(first: float, count: int) -> list[float]:
    """The reference's multi-needle spacing: ``first``, then every ``(100 - first) / count``."""
    step = (100 - first) / count
    return [first + i * step for i in range(count)]


@functools.cache
def _sentence_end_tokens() -> frozenset[int]:
    return frozenset(haystack_encoding().encode_ordinary(_SENTENCE_END))


def _insertion_point(haystack: list[int], depth: float, sentence_ends: frozenset[int]) -> int:
    """Where a needle at ``depth`` percent goes: the end at 100, otherwise the depth's token moved
    back to just after a sentence end (to the very start when no sentence ends before it)."""
    if depth >= 100:
        return len(haystack)
    point = int(len(haystack) * depth / 100)
    while point > 0 and haystack[point - 1] not in sentence_ends:
        point -= 1
    return point


def _assemble(layout: _Layout, given: list[str]) -> Context:
    """Joins the haystack's pieces and the needles as inserted, decoding each piece once; each
    placement's character offset is that of the needle as ``given`` (after any space added).

    The pieces cut the haystack at the start, after a "." token or at its end, all character
    boundaries but the end, which may split a UTF-8 character when the trim fell inside one; its
    partial bytes become one U+FFFD whether decoded alone or before the needle (which starts a new
    character), so the pieces' texts join into what decoding everything at once gives, and their
    lengths give exact character offsets."""
    encoding = haystack_encoding()
    haystack = layout.haystack
    parts: list[str] = []
    placements: list[Placement] = []
    chars = tokens = previous = 0
    for index, (point, depth) in enumerate(zip(layout.points, layout.depths, strict=True)):
        piece = encoding.decode(haystack[previous:point])
        chars += len(piece)
        tokens += point - previous
        parts.append(piece)
        needle = layout.needles[index]
        own_start = chars + len(needle) - len(given[index])
        placements.append(Placement(needle=index, depth_percent=depth, token_offset=tokens, char_offset=own_start))
        parts.append(needle)
        chars += len(needle)
        tokens += len(layout.needle_tokens[index])
        previous = point
    parts.append(encoding.decode(haystack[previous:]))
    text = "".join(parts)
    return Context(text=text, tokens=len(encoding.encode_ordinary(text)), placements=placements)


# --------------------------------------------------------------------------------------------
# The grid: lengths and depths.
# --------------------------------------------------------------------------------------------


def parse_lengths(text: str) -> list[int]:
    """Context lengths: "1k,2k,4000" (k = 1024, as InfiniteBench names lengths) or a range
    "1k:128k:8" (count lengths from min to max, evenly spaced and rounded, as the reference's
    ``np.round(np.linspace(...))``); items of both kinds may be mixed. Sorted, without repeats."""
    lengths: set[int] = set()
    for item in _items(text, "lengths"):
        if ":" in item:
            low, high, count = _range(item, "length", parse_length)
            lengths.update(round(value) for value in _linspace(low, high, count))
        else:
            lengths.add(parse_length(item))
    return sorted(lengths)


def parse_depths(text: str, spacing: str = "linear") -> list[float]:
    """Needle depths in percent: "0,25,50,100" or a range "0:100:5" (min:max:count). A linear range
    is rounded to whole percents, as the reference rounds its grid; a sigmoid range goes through the
    reference's logistic (100 / (1 + e^(-0.1 (x - 50))), 0 and 100 kept, 3 decimals), which packs
    the depths near the start and the end. Sorted, without repeats.

    The reference's own logistic falls where this one rises (it maps 25 to 92.414); over a range
    symmetric about 50, such as its default 0..100, both give the same depths."""
    if spacing not in DEPTH_SPACINGS:
        raise UsageError(f"unknown depth spacing {spacing!r}: expected one of {', '.join(DEPTH_SPACINGS)}")
    depths: set[float] = set()
    for item in _items(text, "depths"):
        if ":" in item:
            low, high, count = _range(item, "depth", _parse_depth)
            values = _linspace(low, high, count)
            depths.update(_logistic(value) if spacing == "sigmoid" else float(round(value)) for value in values)
        else:
            depths.add(_parse_depth(item))
    return sorted(depths)


def _items(text: str, what: str) -> list[str]:
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise UsageError(f"invalid {what} {text!r}: expected values separated by commas, or min:max:count")
    return items


def _parse_depth(text: str) -> float:
    try:
        depth = float(text)
    except ValueError:
        raise UsageError(f"invalid depth {text!r}: expected a percentage from 0 to 100") from None
    if not 0 <= depth <= 100:
        raise UsageError(f"depth {text} is outside 0..100")
    # Three decimals, as sigmoid depths have: cells are named by their depth, so depths that
    # differ further down would share a cell.
    return round(depth, 3)


def _range(item: str, what: str, parse: Callable[[str], float]) -> tuple[float, float, int]:
    parts = item.split(":")
    if len(parts) != 3:
        raise UsageError(f"invalid {what} range {item!r}: expected min:max:count")
    low, high = parse(parts[0]), parse(parts[1])
    count = parts[2].strip()
    if not re.fullmatch(r"[0-9]+", count) or not 1 <= int(count) <= MAX_RANGE_COUNT:
        raise UsageError(f"invalid {what} range {item!r}: the count must be a whole number from 1 to {MAX_RANGE_COUNT}")
    if low > high:
        raise UsageError(f"invalid {what} range {item!r}: the minimum is above the maximum")
    return low, high, int(count)


def _linspace(low: float, high: float, count: int) -> list[float]:
    """``count`` values from ``low`` to ``high``, both included (numpy.linspace without numpy)."""
    if count == 1:
        return [low]
    step = (high - low) / (count - 1)
    return [low + i * step for i in range(count - 1)] + [high]


def _logistic(depth: float) -> float:
    if depth in (0, 100):
        return float(depth)
    return round(_LOGISTIC_L / (1 + math.exp(-_LOGISTIC_K * (depth - _LOGISTIC_X0))), 3)
