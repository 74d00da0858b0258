"""Where a text starts repeating itself: the loop a small model falls into when it decodes greedily
("58213. The pass key is 58213. The pass key is 58213. ...", "the answer that is the answer that
is ...").

Texts are compared word by word: a word is a run of letters, digits or underscores (``\\w+``),
case-folded, so case, punctuation and spacing do not count. Three rules find a repetition:

(a) a sentence of at least two words equal to an earlier sentence of the text (sentences as
    ``chunking.sentence_spans``, the one sentence splitter, splits them: "Mr. Bennet agreed." and
    "Mrs. Bennet agreed." stay whole and differ);
(b) a unit of three to seven words followed at once by itself, or a unit of one or two words three
    times in a row ("very very very" repeats itself; "that that" does not);
(c) a run of eight words that occurs a second time (this covers a longer unit repeated back to
    back too: its copy holds the run).

The repetition found first, reading on (the one whose repeated copy is complete first; at a tie, the
earlier copy), decides. The text is cut at the start of its repeated copy, so the first occurrence
is kept; when the copy begins inside a sentence that began after the first occurrence (a unit that
does not start at a sentence: "58213. The pass key is | 58213. The pass key is"), the cut moves back
to that sentence's start, so that what is kept ends at a sentence end ("58213.").

A growing text (a reply as it streams in) is read with ``complete=False``: a word then counts once
a character that is no part of it follows, and a sentence once the next one has begun, so nothing
found in a prefix is undone by what follows. That is the contract: if ``find_repetition(prefix,
complete=False)`` finds a repetition, ``find_repetition(text)`` finds the same one for every text
that extends the prefix, complete or not. Read as complete (the default), the end of the text also
ends its last word, and its last sentence if that ends with its punctuation. Each function reads
its text once, in time linear in its length; ``LoopWatch`` reads only what a growing text adds
(and its unfinished last sentence again).
"""

from __future__ import annotations

import bisect
import re
import string
from dataclasses import dataclass
from typing import Literal

from .chunking import sentence_spans

_WORD = re.compile(r"\w+")
# Rule (a): the shortest sentence that counts.
MIN_SENTENCE_WORDS = 2
# Rule (b): the shortest unit that repeats itself in one copy; shorter ones need this many copies.
MIN_TANDEM_WORDS = 3
SHORT_UNIT_COPIES = 3
# Rule (c): the run of words that may not occur twice. Rule (b) looks at units up to one word
# shorter: a longer unit repeated back to back holds such a run twice.
RUN_WORDS = 8
# A sentence that ends the text counts (read as complete) when it ends with its punctuation.
_CLOSED = re.compile(r"[.!?…。！？；][\"'”’)\]»」』）》]*\Z")
# What may dangle at the end of a cut text: spacing, separators and opening marks.
_DANGLING = string.whitespace + ",;:-–—([{“‘«"

Rule = Literal["sentence", "tandem", "run"]


@dataclass(frozen=True, slots=True)
class Repetition:
    """Where a text repeats itself, as offsets into it: ``text[first:copy]`` is the repeated unit
    (or, for a sentence or a run seen again later, all from the first occurrence to the copy),
    ``text[:cut]`` what is kept (``cut`` is ``copy``, or the start of the copy's sentence, see the
    module), and ``text[:found_at]`` the shortest prefix that shows it (read as unfinished; or the
    whole text, when only its end shows it)."""

    first: int
    copy: int
    cut: int
    found_at: int
    rule: Rule


def find_repetition(text: str, *, complete: bool = True) -> Repetition | None:
    """The first repetition of ``text`` (see the module), or None. With ``complete=False`` the text
    is read as the prefix of a longer one, and a repetition found stays the first of every text
    that extends it."""
    return LoopWatch().feed(text, complete=complete)


def first_repetition(text: str, *, complete: bool = True) -> int | None:
    """The offset at which ``text`` starts repeating itself (what is kept ends there), or None."""
    found = find_repetition(text, complete=complete)
    return None if found is None else found.cut


def cut_loop(text: str) -> str:
    """The text up to its first repetition, without the spacing, separators or opening marks left
    dangling there; the text itself when it does not repeat itself."""
    found = find_repetition(text)
    return text if found is None else _without_dangling(text[: found.cut])


def is_only_loop(text: str) -> bool:
    """Whether the text is nothing but a loop: it repeats itself, and what is kept before the
    repetition is longer than the repeated unit yet holds no word outside it, so the loop had begun
    before its first whole copy ("The answer is | the answer that is | the answer that is ...").
    No word list is needed. What states something once and then repeats it ("Paris. Paris.
    Paris.", "58213. The pass key is 58213. ...") keeps that statement and is no loop; so is, by
    this rule, a content-free unit said once and repeated ("the answer is the answer is ..."), which
    only the meaning of its words tells from an answer."""
    found = find_repetition(text)
    if found is None:
        return False
    kept = _words(text, 0, found.cut)
    unit = _words(text, found.first, found.copy)
    return len(kept) > len(unit) and set(kept) <= set(unit)


class LoopWatch:
    """Finds the first repetition of a text that grows, such as a reply while it streams in.

    ``feed`` takes the whole text so far, each time an extension of the text it took before, and
    reads only what is new (the sentence split reads the unfinished last sentence again). Once a
    repetition is found it is the answer for good; ``feed(..., complete=True)`` is the last call."""

    def __init__(self) -> None:
        self.found: Repetition | None = None
        self._length = 0
        self._complete = False
        self._words: list[str] = []
        self._word_starts: list[int] = []
        self._next_word = 0  # where the first word not yet read may start
        self._runs: dict[tuple[str, ...], int] = {}  # rule (c): run -> index of its first word
        self._sentences: dict[tuple[str, ...], int] = {}  # rule (a): words -> start of the first
        self._sentence_starts: list[int] = []  # of the sentences read, in order
        self._open_sentence: int | None = None  # the start of the sentence not yet finished

    def feed(self, text: str, *, complete: bool = False) -> Repetition | None:
        if self.found is not None:
            return self.found
        if len(text) < self._length or (self._complete and len(text) > self._length):
            raise ValueError("LoopWatch.feed takes a text that extends the one it took before")
        self._length, self._complete = len(text), complete
        found = [f for f in (self._read_words(text, complete), self._read_sentences(text, complete)) if f]
        if found:
            first = min(found, key=lambda f: (f.found_at, f.copy))
            self.found = first if first.rule == "sentence" else self._at_sentence(first)
        return self.found

    def _read_words(self, text: str, complete: bool) -> Repetition | None:
        for match in _WORD.finditer(text, self._next_word):
            if match.end() == len(text) and not complete:
                self._next_word = match.start()  # the word may go on
                return None
            self._words.append(match.group().casefold())
            self._word_starts.append(match.start())
            self._next_word = match.end()
            found = self._repeated_words(min(match.end() + 1, len(text)))
            if found is not None:
                return found
        self._next_word = len(text)
        return None

    def _repeated_words(self, found_at: int) -> Repetition | None:
        """Rules (b) and (c) at the word just read: the repetition with the earliest copy."""
        words, last = self._words, len(self._words) - 1
        best: tuple[int, int, Rule] | None = None  # first word, copy's first word, rule
        for size in range(1, RUN_WORDS):
            copies = SHORT_UNIT_COPIES if size < MIN_TANDEM_WORDS else 2
            first = last + 1 - copies * size
            if first < 0:
                break
            if words[last] != words[last - size]:
                continue
            unit = words[first : first + size]
            repeated = all(words[first + n * size : first + (n + 1) * size] == unit for n in range(1, copies))
            if repeated and (best is None or first + size < best[1]):
                best = (first, first + size, "tandem")
        if last + 1 >= RUN_WORDS:
            start = last + 1 - RUN_WORDS
            seen = self._runs.setdefault(tuple(words[start:]), start)
            if seen != start and (best is None or start < best[1]):
                best = (seen, start, "run")
        if best is None:
            return None
        first, copy, rule = best
        return Repetition(self._word_starts[first], self._word_starts[copy], self._word_starts[copy], found_at, rule)

    def _read_sentences(self, text: str, complete: bool) -> Repetition | None:
        found: Repetition | None = None
        spans = sentence_spans(text, self._open_sentence or 0)
        for index, (start, end) in enumerate(spans):
            if index + 1 < len(spans):
                found_at = spans[index + 1][0] + 1  # a sentence is finished once the next begins
            elif complete and _CLOSED.search(text, start, end):
                found_at = len(text)
            else:
                self._open_sentence = start
                break
            self._sentence_starts.append(start)
            self._open_sentence = None
            words = tuple(_words(text, start, end))
            if len(words) < MIN_SENTENCE_WORDS:
                continue
            seen = self._sentences.setdefault(words, start)
            if seen != start and found is None:
                found = Repetition(seen, start, start, found_at, "sentence")
        return found

    def _at_sentence(self, found: Repetition) -> Repetition:
        """The cut moved back to the start of the copy's sentence, when that began after the first
        occurrence (see the module)."""
        starts = self._sentence_starts + ([self._open_sentence] if self._open_sentence is not None else [])
        at = bisect.bisect_right(starts, found.copy) - 1
        if at < 0 or starts[at] == found.copy or starts[at] <= found.first:
            return found
        return Repetition(found.first, found.copy, starts[at], found.found_at, found.rule)


def _words(text: str, start: int, end: int) -> list[str]:
    return [word.casefold() for word in _WORD.findall(text, start, end)]


def _without_dangling(text: str) -> str:
    while True:
        text = text.rstrip(_DANGLING)
        # A straight quote after a space opens a quotation that was cut away.
        if text[-1:] in ("'", '"') and (len(text) == 1 or text[-2].isspace()):
            text = text[:-1]
            continue
        return text
