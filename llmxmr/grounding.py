"""Grounding: the quotes a model gives as evidence, located in the document by code.

A map reply carries a few short verbatim quotes from its chunk. Each is looked for in the text
around the chunk: first exactly, after whitespace runs become one space and case is folded; then
approximately, with rapidfuzz's ``partial_ratio`` (the best-aligned window of the text, scored 0-100
by normalised Indel similarity) at or above ``grounding.fuzzy_threshold`` (default 90: a slip of a
word or two in a sentence passes) and only if every number of the quote is written the same in
the text (a different number in the same sentence is another fact). A located
quote becomes a ``Citation`` with its character span and line in the whole document; a quote that
cannot be located is unverified. Whether a located quote supports an answer (holds it, and is
about what was asked) is ``families.support``'s to decide, on the words this module reads:
``terms``, how often the document writes them, and the passage around a span.

The cost is linear in the chunk: the normalised text is built in one pass, exact search is
``str.find``, and the approximate search is bit-parallel in rapidfuzz with quotes capped at
``MAX_QUOTE_CHARS``.
"""

from __future__ import annotations

import bisect
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from itertools import pairwise
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
    # the chunk writes the answer's distinctive content and supports it (``SupportCheck.stating``)
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
    """The whole document, for turning spans into line numbers and quotes, and for what support
    asks of it: how often it writes a term, and the passage around a span."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._cjk_counts: dict[str, int] = {}

    @cached_property
    def _line_starts(self) -> list[int]:
        return [0] + [match.end() for match in re.finditer("\n", self.text)]

    def line_of(self, position: int) -> int:
        return bisect.bisect_right(self._line_starts, position)

    @cached_property
    def _word_counts(self) -> dict[str, int]:
        """How often the document writes each term of its spaced words (``terms``), counted once
        per document: one pass of a regular expression and a count of the distinct words."""
        counts: dict[str, int] = {}
        for word, times in Counter(_SPACED_WORD.findall(self.text.casefold())).items():
            for term in _word_terms(word, frozenset()):
                counts[term] = counts.get(term, 0) + times
        return counts

    @cached_property
    def sentence_count(self) -> int:
        return len(sentence_spans(self.text, 0, len(self.text)))

    def term_count(self, term: str) -> int:
        """How often the document writes ``term`` (a term as ``terms`` gives it)."""
        if not _CJK_CHARACTER.match(term):
            return self._word_counts.get(term, 0)
        if term not in self._cjk_counts:
            self._cjk_counts[term] = self.text.count(term)
        return self._cjk_counts[term]

    def passage_around(self, start: int, end: int) -> tuple[int, int]:
        """The span of the sentences that [start, end) touches and of one sentence on each side
        (within ``PASSAGE_REACH`` characters of it): where a quote sits."""
        low, high = max(start - PASSAGE_REACH, 0), min(end + PASSAGE_REACH, len(self.text))
        spans = sentence_spans(self.text, low, high)
        touched = [i for i, (first, last) in enumerate(spans) if last > start and first < end]
        if not touched:
            return start, end
        return spans[max(touched[0] - 1, 0)][0], spans[min(touched[-1] + 1, len(spans) - 1)][1]


# How far around a quote its passage (its sentence and the neighbouring ones) is looked for.
PASSAGE_REACH = 600


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
    return citation_at(chunk, document, start, end, match, score)


def citation_at(
    chunk: Chunk, document: DocumentIndex, start: int, end: int, match: CitationMatch, score: float
) -> Citation:
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


def in_document_order(citations: Iterable[Citation]) -> list[Citation]:
    """The citations once each (by span), in document order."""
    by_span = {(c.start, c.end): c for c in citations}
    return [by_span[span] for span in sorted(by_span)]


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


# English function words: they say nothing of what a question asks or an answer states, whoever
# wrote them, so the rule is right for every model. Words that only a family's model or requests
# make empty (``families.workarounds``) come in as ``ignoring``.
_FUNCTION_WORDS = frozenset(
    "the and for are was were what which who whom whose when where why how this that these those "
    "with from into about there their them they you your is his her hers him she its our ours had has "
    "have having been being did does doing done not but all any can could would should will shall may "
    "might must than then also just only some such each other more most many much own same upon over "
    "under after before again here out off whether while onto because very".split()
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


# What support compares (``terms``). English inflections are folded so that a question and the text
# that answers it meet ("keys" and "key", "married" and "marry", "named" and "name"): the suffixes
# are English, and other words are left as they are. Words ending in "ss" keep their "s" ("pass").
_SUFFIXES = (("ies", "y"), ("ied", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", ""))
_SPACED_WORD = re.compile(rf"[^\W{_CJK}]+")
_CJK_RUN = re.compile(rf"[{_CJK}]+")
_CJK_CHARACTER = re.compile(rf"[{_CJK}]")
_ORDINAL = re.compile(r"\d+(?:st|nd|rd|th)")
# Chinese and Japanese particles, pronouns and question words: a pair of characters holding one
# is no term of its own ("的父" in "张三的父亲"). A rule of those languages, right for every model.
_CJK_FUNCTION = frozenset(
    "的了是在和与及或也就都而有这那个之其着过被把给对从向于以为吗呢吧啊么什谁哪何怎他她它们我你您のはがをにでともへ"
)


# Irregular English verb forms that questions and answers trade ("who said", "what did she say").
_IRREGULAR = {
    form: base
    for base, forms in {
        "say": "said says",
        "tell": "told",
        "make": "made",
        "take": "took taken",
        "come": "came",
        "give": "gave given",
        "find": "found",
        "keep": "kept",
        "know": "knew known",
        "think": "thought",
        "write": "wrote written",
        "see": "saw seen",
        "meet": "met",
        "leave": "left",
        "feel": "felt",
        "hold": "held",
        "bring": "brought",
        "buy": "bought",
        "pay": "paid",
        "sell": "sold",
        "speak": "spoke spoken",
        "send": "sent",
        "build": "built",
        "lose": "lost",
        "win": "won",
        "begin": "began begun",
        "hide": "hid hidden",
        "steal": "stole stolen",
        "choose": "chose chosen",
        "forget": "forgot forgotten",
        "fight": "fought",
        "teach": "taught",
        "catch": "caught",
        "run": "ran",
        "eat": "ate eaten",
        "fall": "fell fallen",
        "die": "died",
    }.items()
    for form in forms.split()
}


def stem(word: str) -> str:
    """``word`` (case-folded) with an English inflection folded; other words as they are."""
    word = _IRREGULAR.get(word, word)
    if len(word) <= 3 or not (word.isascii() and word.isalpha()):
        return word
    for suffix, replacement in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not (suffix == "s" and word.endswith("ss")):
            word = word[: -len(suffix)] + replacement
            break
    return word[:-1] if word.endswith("e") and len(word) > 3 else word


def terms(text: str, ignoring: frozenset[str] = frozenset()) -> set[str]:
    """What ``text`` says that a reader could look for elsewhere: its numbers as digit runs ("9th"
    gives "9"; a word mixing letters and digits, "func_12", also whole), its words of three letters
    or more less function words and ``ignoring``, stemmed; and in Chinese and Japanese, which do
    not space their words, each pair of neighbouring characters without a particle (most Chinese
    words are two characters long), or a lone character."""
    found: set[str] = set()
    for word in _SPACED_WORD.findall(text.casefold()):
        found.update(_word_terms(word, ignoring))
    for run in _CJK_RUN.findall(text):
        if len(run) == 1 and run not in _CJK_FUNCTION:
            found.add(run)
        found.update(a + b for a, b in pairwise(run) if a not in _CJK_FUNCTION and b not in _CJK_FUNCTION)
    return found


def _word_terms(word: str, ignoring: frozenset[str]) -> list[str]:
    """The terms of one case-folded spaced word (see ``terms``)."""
    if any(ch.isdigit() for ch in word):
        numbers = _NUMBER.findall(word)
        mixed = not word.isdigit() and not _ORDINAL.fullmatch(word)
        return [*numbers, word] if mixed else numbers
    if len(word) < 3 or word in _FUNCTION_WORDS or word in ignoring:
        return []
    return [stem(word)]
