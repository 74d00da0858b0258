"""Split a long document into chunks that fit a token budget, at the most natural boundary.

Boundaries, best first: paragraph (a blank line), sentence (``sentence_spans``: the one sentence
splitter, which grounding uses too), line, word, and as a last resort a cut between tokens. A chunk
ends at the best boundary that still leaves it at least ``min_fill`` of the budget full, so chunks
are both natural and large; among such boundaries near the budget, the text decides which
(``ANCHOR_SHARE``), so that repeated text is cut into identical chunks.

The cost is linear in the document: the text is cut once into sentence-sized segments, each segment
is counted once (in one batch), chunks are packed from the counts, and each packed chunk is counted
once more to catch the rare case where tokens do not add up across segments. Segments may be
counted by a fast local ``estimator`` (a tokenizer that lives behind HTTP would take one request per
sentence): the estimate is then scaled by the ratio of the two counters on a sample of the text,
and the final count of each chunk is the exact counter's. Chunks concatenate back to the input
exactly; an optional overlap repeats whole sentences from the end of the previous chunk (as many as
fit in ``overlap_tokens``), but each character belongs to exactly one chunk's own span.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum

from pydantic import BaseModel, ConfigDict

from .errors import ContextTooSmallError
from .tokens import TokenCounter

# Where a sentence may end: Latin punctuation (with closing quotes or brackets) and the whitespace
# after it, which it needs ("3.14" and "U.S.Army" hold no end); or CJK punctuation, which needs none
# (Chinese puts no space after it; its full-width semicolon joins clauses long enough to count as
# sentences). ``_ends_sentence`` decides whether a Latin candidate is an end.
_SENTENCE_END = re.compile(
    r"(?P<latin>[.!?…]+)[\"'”’)\]»]*\s+"
    r"|(?P<cjk>[。！？；]+)[”’」』）》]*\s*"
)
# A sentence end, or any run of whitespace that contains a line break. Whether a sentence ended and
# how many line breaks the match holds decide the boundary's level.
_BOUNDARY = re.compile(rf"{_SENTENCE_END.pattern}|\s*\n\s*")
_WORD = re.compile(r"\s+")

# Shortened words whose period ends no sentence because a name follows them ("Mr. Darcy",
# "St. Paul", "Kramer vs. Kramer"), compared case-folded.
_TITLES = frozenset(
    "mr mrs ms mx messrs mme mlle dr prof rev hon st mt ft capt col gen lt sgt maj adm gov sen rep pres vs cf".split()
)
# Shortened words whose period ends no sentence when a number follows them ("No. 5", "Fig. 3").
_BEFORE_A_NUMBER = frozenset("no nos fig figs vol vols pp ch sec art eq".split())
# An initial or a dotted abbreviation: letters, each but the last followed by a period ("J" of
# "J.", "J.R.R", "U.S", "e.g", "p.m").
_DOTTED = re.compile(r"(?:[^\W\d_]\.)*[^\W\d_]")
# A longer word is taken for no abbreviation: this holds every title, and dotted ones of up to eight
# letters ("U.S.S.R").
_LONGEST_ABBREVIATION = 15
_OPENING_MARKS = "\"'“‘([«"


class Level(IntEnum):
    TOKEN = 0
    WORD = 1
    LINE = 2
    SENTENCE = 3
    PARAGRAPH = 4


class Chunk(BaseModel):
    """A chunk's own span is ``document[start:end]``; ``text`` also holds any overlap before it."""

    model_config = ConfigDict(frozen=True)

    index: int
    start: int
    end: int
    overlap_start: int
    text: str
    tokens: int


@dataclass(slots=True)
class _Segment:
    start: int
    end: int
    tokens: int
    level: Level  # the level of the boundary at the segment's end
    # A digest of the segment's text: where a chunk ends among the last boundaries that fit
    # (``ANCHOR_SHARE``) is decided by content, not position (``_pack``).
    anchor: int = 0


def chunk_text(
    text: str,
    budget: int,
    counter: TokenCounter,
    *,
    estimator: TokenCounter | None = None,
    overlap_tokens: int = 0,
    min_fill: float = 0.5,
) -> list[Chunk]:
    """Chunks of at most ``budget`` tokens of ``counter`` (overlap included), in document order."""
    own_budget = budget - overlap_tokens
    if own_budget < 1:
        raise ContextTooSmallError(f"no room for document text: chunk budget {budget} tokens, overlap {overlap_tokens}")
    if not text:
        return []
    scale = 1.0
    counter_for_segments: TokenCounter
    if estimator is not None:
        scale = _ratio(text[:CALIBRATION_CHARS], counter, estimator)
        counter_for_segments = _Scaled(estimator, scale)
    else:
        counter_for_segments = counter
    segments = _segments(text, own_budget, counter_for_segments)
    groups = _pack(segments, own_budget, min_fill)
    return _verified(text, segments, groups, budget, counter, overlap_tokens, min_fill)


# Characters of the document whose token counts calibrate an estimator against the exact counter.
CALIBRATION_CHARS = 20_000
# The share of a chunk's budget, at its end, within which its boundary is chosen by content
# (``_pack``): wide enough to hold a few sentences of a 2k-token chunk, small enough that chunks
# stay nearly full (2.5% smaller on average).
ANCHOR_SHARE = 0.05
# Re-packing rounds for chunks whose whole count exceeds their segments' sum (each round splits them).
MAX_REPACK_ROUNDS = 8


def _ratio(sample: str, counter: TokenCounter, estimator: TokenCounter) -> float:
    exact, estimate = counter.count_batch([sample])[0], estimator.count_batch([sample])[0]
    return exact / estimate if estimate else 1.0


class _Scaled:
    """An estimator's counts scaled to another tokenizer's. Rounded to nearest, not up: rounding
    each short sentence up would inflate a chunk's sum by a token a sentence, and the whole-chunk
    check with the exact counter catches what rounding misses."""

    def __init__(self, estimator: TokenCounter, scale: float) -> None:
        self._estimator = estimator
        self._scale = scale
        self.name = f"{estimator.name}*{scale:.3f}"
        self.exact = False

    def count_batch(self, texts: Sequence[str]) -> list[int]:
        return [round(n * self._scale) for n in self._estimator.count_batch(texts)]


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """The sentences of ``text[start:end]``, in order, as spans of ``text`` without the whitespace
    around them. The one sentence splitter: chunking cuts at the same ends. Linear in the length,
    and a function of ``text[start:end]`` alone."""
    end = len(text) if end is None else end
    spans: list[tuple[int, int]] = []
    position = start
    for match in _sentence_ends(text, start, end):
        _append_stripped(spans, text, position, match.end())
        position = match.end()
    _append_stripped(spans, text, position, end)
    return spans


def _sentence_ends(text: str, start: int, end: int) -> Iterator[re.Match[str]]:
    """The ends of the sentences of ``text[start:end]``: each match spans the punctuation and the
    whitespace after it."""
    for match in _SENTENCE_END.finditer(text, start, end):
        if _ends_sentence(text, match, start, end):
            yield match


def _append_stripped(spans: list[tuple[int, int]], text: str, start: int, end: int) -> None:
    piece = text[start:end]
    stripped = piece.strip()
    if stripped:
        left = start + len(piece) - len(piece.lstrip())
        spans.append((left, left + len(stripped)))


def _ends_sentence(text: str, match: re.Match[str], start: int, end: int) -> bool:
    """Whether a candidate end (a match of ``_SENTENCE_END`` in ``text[start:end]``) ends a sentence.

    CJK punctuation always does. Latin punctuation does not when the next word starts with a small
    letter ("e.g. apples", "Wait... then", "“Stop!” she said"), nor a period after an initial or a
    dotted abbreviation ("J.R.R. Tolkien", "U.S. Army"), after a title ("Mr. Darcy") or after "No."
    and its kind before a number ("No. 5"). The cost of a miss is a longer sentence; the cost of a
    false end is a name or a quote cut in two, so where the text leaves it open ("in the U.S. The
    Army"), no end is the answer. The pronoun "I" ends too many sentences ("So did I.") to count as
    an initial."""
    if match.group("cjk"):
        return True
    following = text[match.end()] if match.end() < end else ""
    if following.islower():
        return False
    if match.group("latin") != ".":
        return True
    word = _word_before(text, match.start(), start)
    if word != "I" and _DOTTED.fullmatch(word):
        return False
    folded = word.casefold()
    return folded not in _TITLES and not (folded in _BEFORE_A_NUMBER and following.isdigit())


def _word_before(text: str, at: int, start: int) -> str:
    """The word of ``text[start:at]`` that ends at ``at``, without opening quotes or brackets; ""
    when whitespace ends there or the word is longer than any abbreviation."""
    window = text[max(start, at - _LONGEST_ABBREVIATION - 1) : at]
    if not window or window[-1].isspace():
        return ""
    word = window.split()[-1]
    # Filling the whole window, it may run on before it: too long either way.
    return "" if len(word) > _LONGEST_ABBREVIATION else word.lstrip(_OPENING_MARKS)


def _boundaries(text: str) -> list[tuple[int, Level]]:
    found: list[tuple[int, Level]] = []
    for match in _BOUNDARY.finditer(text):
        level = _level(text, match)
        if level is not None:
            found.append((match.end(), level))
    if not found or found[-1][0] != len(text):
        found.append((len(text), Level.PARAGRAPH))
    return found


def _level(text: str, match: re.Match[str]) -> Level | None:
    """The level of the boundary a match of ``_BOUNDARY`` makes; None for a period that ends no
    sentence and no line ("Mr. Darcy")."""
    piece = match.group()
    if piece.count("\n") >= 2:
        return Level.PARAGRAPH
    if (match.group("latin") or match.group("cjk")) and _ends_sentence(text, match, 0, len(text)):
        return Level.SENTENCE
    return Level.LINE if "\n" in piece else None


def _segments(text: str, budget: int, counter: TokenCounter) -> list[_Segment]:
    """Sentence-sized segments, each at most ``budget`` tokens (finer cuts only where needed)."""
    spans: list[tuple[int, int, Level]] = []
    start = 0
    for end, level in _boundaries(text):
        if end > start:
            spans.append((start, end, level))
            start = end
    counts = counter.count_batch([text[s:e] for s, e, _ in spans])
    segments: list[_Segment] = []
    for (s, e, level), tokens in zip(spans, counts, strict=True):
        if tokens <= budget:
            segments.append(_Segment(s, e, tokens, level))
        else:
            segments.extend(_split_oversized(text, _Segment(s, e, tokens, level), budget, counter))
    for segment in segments:
        segment.anchor = zlib.crc32(text[segment.start : segment.end].strip().encode())
    return segments


def _split_oversized(text: str, segment: _Segment, budget: int, counter: TokenCounter) -> list[_Segment]:
    """Cut a segment over budget at words, and words still over budget between tokens."""
    cuts = [m.end() for m in _WORD.finditer(text, segment.start, segment.end)]
    ends = [c for c in cuts if segment.start < c < segment.end] + [segment.end]
    starts = [segment.start] + ends[:-1]
    counts = counter.count_batch([text[s:e] for s, e in zip(starts, ends, strict=True)])
    pieces: list[_Segment] = []
    for s, e, tokens in zip(starts, ends, counts, strict=True):
        level = segment.level if e == segment.end else Level.WORD
        piece = _Segment(s, e, tokens, level)
        pieces.extend([piece] if tokens <= budget else _split_by_tokens(text, piece, budget, counter))
    return pieces


def _split_by_tokens(text: str, segment: _Segment, budget: int, counter: TokenCounter) -> list[_Segment]:
    """Even character cuts sized from the token count, halved again wherever a part is still over."""
    parts = math.ceil(segment.tokens / budget) + 1
    step = max(1, math.ceil((segment.end - segment.start) / parts))
    starts = list(range(segment.start, segment.end, step))
    ends = starts[1:] + [segment.end]
    counts = counter.count_batch([text[s:e] for s, e in zip(starts, ends, strict=True)])
    pieces: list[_Segment] = []
    for s, e, tokens in zip(starts, ends, counts, strict=True):
        level = segment.level if e == segment.end else Level.TOKEN
        piece = _Segment(s, e, tokens, level)
        if tokens <= budget or e - s == 1:
            pieces.append(piece)
        else:
            pieces.extend(_split_by_tokens(text, piece, budget, counter))
    return pieces


def _pack(segments: list[_Segment], budget: int, min_fill: float) -> list[range]:
    """Group consecutive segments; each group ends at the best boundary past ``min_fill``: of the
    best level, the last one, or, among those in the last ``ANCHOR_SHARE`` of the budget, the one
    whose segment's digest is least. Deciding by content makes repeated text give identical chunks:
    once a chunk has ended inside a repeated block, the next one starts where it did and ends where
    it did (a repeated haystack, page headers, logs), and identical chunks are read once
    (``reuse``, the reply cache)."""
    groups: list[range] = []
    floor = budget * min_fill
    anchored = max(floor, budget * (1 - ANCHOR_SHARE))
    first = 0
    while first < len(segments):
        total = 0
        best_end: dict[Level, int] = {}
        anchors: dict[Level, list[int]] = {}
        last = first
        while last < len(segments) and total + segments[last].tokens <= budget:
            total += segments[last].tokens
            if total >= floor:
                best_end[segments[last].level] = last
            if total >= anchored:
                anchors.setdefault(segments[last].level, []).append(last)
            last += 1
        if last == len(segments):
            end = last - 1
        elif last == first:  # a single segment over budget (only with a counter that is not additive)
            end = first
        elif best_end:
            level = max(best_end)
            candidates = anchors.get(level)
            end = min(candidates, key=lambda i: (segments[i].anchor, -i)) if candidates else best_end[level]
        else:
            end = last - 1
        groups.append(range(first, end + 1))
        first = end + 1
    return groups


def _with_overlap(text: str, segments: list[_Segment], groups: list[range], overlap_tokens: int) -> list[Chunk]:
    chunks: list[Chunk] = []
    for index, group in enumerate(groups):
        start, end = segments[group.start].start, segments[group.stop - 1].end
        overlap_start, spent = start, 0
        position = group.start - 1
        while position >= 0 and spent + segments[position].tokens <= overlap_tokens:
            spent += segments[position].tokens
            overlap_start = segments[position].start
            position -= 1
        own_tokens = sum(segments[i].tokens for i in group)
        chunks.append(
            Chunk(
                index=index,
                start=start,
                end=end,
                overlap_start=overlap_start,
                text=text[overlap_start:end],
                tokens=own_tokens + spent,
            )
        )
    return chunks


def _verified(
    text: str,
    segments: list[_Segment],
    groups: list[range],
    budget: int,
    counter: TokenCounter,
    overlap_tokens: int,
    min_fill: float,
) -> list[Chunk]:
    """Count each chunk whole; re-pack the rare ones whose segment counts under-estimated them.
    Only re-packed chunks are counted again, and every round makes them strictly smaller."""
    chunks = _with_overlap(text, segments, groups, overlap_tokens)
    actual = counter.count_batch([chunk.text for chunk in chunks])
    for _ in range(MAX_REPACK_ROUNDS):
        over = [
            i
            for i, (group, tokens) in enumerate(zip(groups, actual, strict=True))
            if tokens > budget and len(group) > 1
        ]
        if not over:
            break
        new_groups: list[range] = []
        new_actual: list[int | None] = []
        for i, (group, tokens) in enumerate(zip(groups, actual, strict=True)):
            parts = _repacked(segments, group, tokens, budget, overlap_tokens, min_fill) if i in over else [group]
            new_groups.extend(parts)
            new_actual.extend([tokens] if i not in over else [None] * len(parts))
        groups = new_groups
        chunks = _with_overlap(text, segments, groups, overlap_tokens)
        todo = [i for i, tokens in enumerate(new_actual) if tokens is None]
        for i, tokens in zip(todo, counter.count_batch([chunks[i].text for i in todo]), strict=True):
            new_actual[i] = tokens
        actual = [tokens or 0 for tokens in new_actual]
    return [chunk.model_copy(update={"tokens": tokens}) for chunk, tokens in zip(chunks, actual, strict=True)]


def _repacked(
    segments: list[_Segment], group: range, tokens: int, budget: int, overlap_tokens: int, min_fill: float
) -> list[range]:
    """A group over budget, packed again with a budget scaled down by how far over it was, and
    always below the group's own segment sum, so that it splits."""
    segment_sum = sum(segments[i].tokens for i in group)
    smaller = min(int((budget - overlap_tokens) * budget / tokens * 0.95), segment_sum - 1)
    sub = _pack(segments[group.start : group.stop], max(1, smaller), min_fill)
    return [range(group.start + part.start, group.start + part.stop) for part in sub]
