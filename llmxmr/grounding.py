"""Grounding: the quotes a model gives as evidence, located in the document by code.

A map reply carries a few short verbatim quotes from its chunk. Each is looked for in the text
around the chunk: first exactly, after whitespace runs become one space and case is folded; then
approximately, with rapidfuzz's ``partial_ratio`` (the best-aligned window of the text, scored 0-100
by normalised Indel similarity) at or above ``grounding.fuzzy_threshold`` (default 90: a slip of a
word or two in a sentence passes) and only if every number of the quote is written the same in
the text (a different number in the same sentence is another fact). A located
quote becomes a ``Citation`` with its character span and line in the whole document; a quote that
cannot be located is unverified.

The cost is linear in the chunk: the normalised text is built in one pass, exact search is
``str.find``, and the approximate search is bit-parallel in rapidfuzz with quotes capped at
``MAX_QUOTE_CHARS``.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Literal

from pydantic import BaseModel, ConfigDict
from rapidfuzz import fuzz

from .chunking import Chunk, sentence_spans
from .schemas import MAX_QUOTE_CHARS  # longer quotes (from servers that ignore maxLength) are cut to it

# A quote this short ("answer", "the key") would be found almost anywhere and proves nothing.
MIN_QUOTE_WORDS = 3
# A word: a run of letters or digits; in Chinese and Japanese, which do not space their words,
# each character (kana and Han).
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
_QUOTE_WORD = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")
# Characters that some text holds invisibly (the map prompt defuses tags with a zero-width space);
# a quote is compared without them.
_INVISIBLE = re.compile("[\u200b\u200c\u200d\u2060\ufeff]")
_RUN = re.compile(r"\S+")


CitationMatch = Literal["exact", "fuzzy", "stated"]


class Citation(BaseModel):
    """A quote found in the document: the chunk it came from, where it is, and the text there."""

    model_config = ConfigDict(frozen=True)

    chunk: int
    start: int  # character offsets in the whole document
    end: int
    line: int  # 1-based line of ``start``
    quote: str  # the document's own text at [start, end)
    # exact/fuzzy: a quote of the model's, found; stated: no quote was found, but this sentence of
    # the chunk writes the answer's distinctive content and names the question (``sentence_stating``)
    match: CitationMatch
    score: float  # 100 for an exact match or a stating sentence, else rapidfuzz's partial_ratio
    # Where ``start`` is in the original file, when it was read as a Document: its page (PDF) and
    # the chain of headings above it (EPUB, HTML, DOCX, Markdown); ``location`` as a person reads
    # it ("p. 143", "Chapter 12 › Netherfield"), None for plain text.
    page: int | None = None
    section: tuple[str, ...] = ()
    location: str | None = None


@dataclass(frozen=True)
class _Normalised:
    """Text with whitespace runs collapsed to one space, invisible characters dropped and case
    folded, and the way back: for each word (run of non-space characters), where it starts and
    ends in the normalised and in the original text."""

    text: str
    normalised_starts: list[int]
    normalised_ends: list[int]
    original_starts: list[int]
    original_ends: list[int]

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """The original span that the normalised span [start, end) covers. A span that starts or
        ends on a word's edge maps to that word's edge; inside a word it maps character for
        character, clamped to the word (exact unless folding or dropped characters changed the
        word's length, as ß or a zero-width space do)."""
        first = max(bisect.bisect_right(self.normalised_starts, start) - 1, 0)
        last = max(bisect.bisect_right(self.normalised_starts, max(end - 1, start)) - 1, 0)
        if start <= self.normalised_starts[first]:
            begin = self.original_starts[first]
        else:
            begin = min(
                self.original_starts[first] + (start - self.normalised_starts[first]), self.original_ends[first]
            )
        if end >= self.normalised_ends[last]:
            finish = self.original_ends[last]
        else:
            finish = min(self.original_starts[last] + (end - self.normalised_starts[last]), self.original_ends[last])
        return begin, max(finish, begin)


def normalise(text: str, offset: int = 0) -> _Normalised:
    """``text`` normalised for matching; spans map back to ``offset + position in text``."""
    pieces: list[str] = []
    normalised_starts: list[int] = []
    normalised_ends: list[int] = []
    original_starts: list[int] = []
    original_ends: list[int] = []
    position = 0
    for run in _RUN.finditer(text):
        word = run.group()
        if _INVISIBLE.search(word):
            word = _INVISIBLE.sub("", word)
            if not word:
                continue
        word = word.casefold()
        if pieces:
            position += 1  # the single space between words
        normalised_starts.append(position)
        original_starts.append(offset + run.start())
        original_ends.append(offset + run.end())
        pieces.append(word)
        position += len(word)
        normalised_ends.append(position)
    return _Normalised(" ".join(pieces), normalised_starts, normalised_ends, original_starts, original_ends)


class DocumentIndex:
    """The whole document, for turning spans into line numbers and quotes."""

    def __init__(self, text: str) -> None:
        self.text = text

    @cached_property
    def _line_starts(self) -> list[int]:
        return [0] + [match.end() for match in re.finditer("\n", self.text)]

    def line_of(self, position: int) -> int:
        return bisect.bisect_right(self._line_starts, position)


def _region(chunk: Chunk, document: DocumentIndex) -> _Normalised:
    """The chunk's text plus a quote's length on each side, normalised: a quote cut by the chunk's
    edge is still found there."""
    margin = MAX_QUOTE_CHARS + 16
    start = max(chunk.overlap_start - margin, 0)
    return normalise(document.text[start : chunk.end + margin], offset=start)


def _locate(
    quote: str, chunk: Chunk, region: Callable[[], _Normalised], document: DocumentIndex, threshold: float
) -> Citation | None:
    wanted = normalise(quote[:MAX_QUOTE_CHARS]).text
    if not long_enough(wanted):
        return None
    found = (
        _verbatim(quote.strip(), chunk, document)
        or _exact(wanted, region(), chunk)
        or _approximate(wanted, region(), chunk, threshold, document)
    )
    if found is None:
        return None
    (start, end), match, score = found
    return _cited(chunk, document, start, end, match, score)


def _cited(chunk: Chunk, document: DocumentIndex, start: int, end: int, match: CitationMatch, score: float) -> Citation:
    """The citation of the document's text at [start, end), found for ``chunk``."""
    return Citation(
        chunk=chunk.index,
        start=start,
        end=end,
        line=document.line_of(start),
        quote=document.text[start:end],
        match=match,
        score=score,
    )


Found = tuple[tuple[int, int], Literal["exact", "fuzzy"], float]


def long_enough(quote: str) -> bool:
    """Whether a quote is long enough to prove anything: at least ``MIN_QUOTE_WORDS`` words."""
    return len(_QUOTE_WORD.findall(quote)) >= MIN_QUOTE_WORDS


def _in_chunk(span: tuple[int, int], chunk: Chunk) -> bool:
    """At least partly inside the chunk: a quote found only beside it is not the chunk's."""
    return span[1] > chunk.overlap_start and span[0] < chunk.end


def _verbatim(quote: str, chunk: Chunk, document: DocumentIndex) -> Found | None:
    """The common case, found without normalising the chunk: the quote as it is in the text."""
    if len(quote) > MAX_QUOTE_CHARS:
        return None
    at = document.text.find(quote, chunk.overlap_start, chunk.end)
    return ((at, at + len(quote)), "exact", 100.0) if at >= 0 else None


def _exact(wanted: str, region: _Normalised, chunk: Chunk) -> Found | None:
    """The first occurrence that reaches into the chunk (an earlier one may sit in the margin)."""
    at = region.text.find(wanted)
    while at >= 0:
        span = region.original_span(at, at + len(wanted))
        if _in_chunk(span, chunk):
            return span, "exact", 100.0
        at = region.text.find(wanted, at + 1)
    return None


def _approximate(
    wanted: str, region: _Normalised, chunk: Chunk, threshold: float, document: DocumentIndex | None = None
) -> Found | None:
    """The best-aligned window, if it scores at least ``threshold``, lies in the chunk, and
    writes every number of the quote as the quote does: a quote that differs in a digit is about
    something else, however similar its words. When the best window lies in the margin beside the
    chunk, the chunk alone is searched once more (given the ``document``); when no window scores
    enough, no part of the region can."""
    if not region.text:
        return None
    alignment = fuzz.partial_ratio_alignment(wanted, region.text, score_cutoff=threshold)
    if alignment is None:
        return None
    span = region.original_span(alignment.dest_start, alignment.dest_end)
    if not _in_chunk(span, chunk):
        if document is None:
            return None
        alone = normalise(document.text[chunk.overlap_start : chunk.end], chunk.overlap_start)
        return _approximate(wanted, alone, chunk, threshold)
    if not same_numbers(wanted, region.text[alignment.dest_start : alignment.dest_end]):
        return None
    return span, "fuzzy", round(alignment.score, 1)


_NUMBER = re.compile(r"\d+")


def same_numbers(quote: str, text: str) -> bool:
    """Whether every digit run of ``quote`` is a whole digit run of ``text``."""
    present = set(_NUMBER.findall(text))
    return all(number in present for number in _NUMBER.findall(quote))


def contains_phrase(text: str, phrase: str) -> bool:
    """Whether ``phrase`` occurs in ``text`` as whole words, after normalising both: "7143" is
    not in "71432", "the key is 71432" is in "The key is 71432."."""
    wanted = normalise(phrase).text
    if not wanted:
        return False
    return re.search(rf"(?<!\w){re.escape(wanted)}(?!\w)", normalise(text).text) is not None


def locate_all(quotes: Sequence[str], chunk: Chunk, document: DocumentIndex, threshold: float) -> list[Citation]:
    """The quotes of a map reply that were found in or at the edge of its chunk, each span once,
    in document order."""
    region = cache(lambda: _region(chunk, document))  # built only when a quote is not verbatim
    found: dict[tuple[int, int], Citation] = {}
    for quote in quotes:
        whole = _locate(quote, chunk, region, document, threshold)
        # Not found whole, a quote of several sentences counts by the sentences that are in the
        # text: small models repeat the sentence they quote ("The pass key is 71432. The pass key
        # is 71432. ...") or run past its end, and an invented sentence among real ones proves
        # nothing by itself.
        parts = [whole] if whole else [_locate(part, chunk, region, document, threshold) for part in _sentences(quote)]
        for citation in parts:
            if citation is not None:
                found.setdefault((citation.start, citation.end), citation)
    return _outermost(sorted(found.values(), key=lambda citation: (citation.start, -citation.end)))


def _outermost(citations: list[Citation]) -> list[Citation]:
    """Citations (sorted by start, longest first) less those inside another one: a fragment of a
    cited sentence adds nothing."""
    kept: list[Citation] = []
    for citation in citations:
        if not kept or citation.end > kept[-1].end:
            kept.append(citation)
    return kept


def sentences_of(text: str) -> list[str]:
    """The sentences of ``text``, in order, cut where chunking cuts them (``sentence_spans``)."""
    return [text[start:end] for start, end in sentence_spans(text)]


def _sentences(quote: str) -> list[str]:
    """The distinct sentences of a quote of more than one (none for a single sentence)."""
    parts = sentences_of(quote[:MAX_QUOTE_CHARS])
    return list(dict.fromkeys(parts)) if len(parts) > 1 else []


def carried_forward(quotes: Sequence[str], citations: Sequence[Citation], threshold: float) -> list[Citation]:
    """The citations of a collapse's inputs that its quotes repeat (exactly or approximately):
    a collapse can only carry forward quotes that were already verified."""
    kept = []
    for citation in citations:
        cited = normalise(citation.quote).text
        for quote in quotes:
            wanted = normalise(quote[:MAX_QUOTE_CHARS]).text
            if long_enough(wanted) and (
                contains_phrase(cited, wanted)
                or contains_phrase(wanted, cited)
                or (
                    fuzz.ratio(wanted, cited) >= threshold
                    and same_numbers(wanted, cited)
                    and same_numbers(cited, wanted)
                )
            ):
                kept.append(citation)
                break
    return kept


def sentence_stating(
    answer: str, question: str, chunk: Chunk, document: DocumentIndex, ignoring: frozenset[str] = frozenset()
) -> Citation | None:
    """The first sentence of the chunk that writes every distinctive word of ``answer`` (numbers,
    names, long words) and shares a content word with ``question``: the text's own support for an
    answer whose quotes were paraphrased instead of copied. None when the answer has no
    distinctive word (a "yes", a choice letter) or none beyond the question's own ("Colonel
    Forster's regiment" asked about his regiment): any text on the topic would seem to state it.
    Words in ``ignoring`` count as function words (a family's workaround for what its model echoes)."""
    wanted = distinctive_words(answer, ignoring)
    asked = content_words(question, ignoring=ignoring)
    if not wanted - asked:
        return None
    for sentence_start, sentence_end in sentence_spans(document.text, chunk.overlap_start, chunk.end):
        words = set(WORD.findall(document.text[sentence_start:sentence_end].casefold()))
        if wanted <= words and (not asked or asked & words):
            return _cited(chunk, document, sentence_start, sentence_end, "stated", 100.0)
    return None


# English function words: they say nothing of what a question asks or an answer states, whoever
# wrote them, so the rule is right for every model. Words that only a family's model or requests
# make empty (``families.workarounds``) come in as ``ignoring``.
_FUNCTION_WORDS = frozenset(
    "the and for are was were what which who whom whose when where why how this that these those "
    "with from into about there their them they you your is".split()
)
WORD = re.compile(r"\w+")
# A word at least this long is rare enough to tell one sentence from another.
_LONG_WORD = 8


def content_words(text: str, keep_digits: bool = False, ignoring: frozenset[str] = frozenset()) -> set[str]:
    """The words of ``text`` (case-folded) that can say what it is about: three letters or more and
    neither a function word nor in ``ignoring``; with ``keep_digits``, also any word with a digit."""
    return {
        word
        for word in WORD.findall(text.casefold())
        if (keep_digits and any(ch.isdigit() for ch in word))
        or (len(word) >= 3 and word not in _FUNCTION_WORDS and word not in ignoring)
    }


def distinctive_words(answer: str, ignoring: frozenset[str] = frozenset()) -> set[str]:
    """The words of an answer that few sentences write (case-folded): those with a digit, names
    (capitalised after the first word), and long words; none a function word or in ``ignoring``.

    The pronoun "I" is no name: English capitalises it wherever it stands, so it tells no sentence
    from another. That is a rule of the language, right for every model (the bundled model's
    first-person replies showed the need: "Well, I am very glad ...")."""
    words = WORD.findall(answer)
    return {
        word.casefold()
        for position, word in enumerate(words)
        if word.casefold() not in _FUNCTION_WORDS
        and word.casefold() not in ignoring
        and (
            any(ch.isdigit() for ch in word)
            or (position > 0 and word != "I" and word[0].isupper())
            or len(word) >= _LONG_WORD
        )
    }
