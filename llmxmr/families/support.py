"""Support: whether a quote found in the text holds an answer and is about what was asked.

A quote found in the text proves only that the text says it. It is evidence for an answer when:

- it says more than the question: a quote of the question's own words (and function words) is an
  echo, however exactly it is found ("The pass key" asked "What is the pass key?");
- it holds what a reader would check of the answer (its ``Claim``): every number and quoted
  string; for a short answer (at most ``SHORT_ANSWER_TERMS`` terms beyond the question) every one
  of its terms beyond the question's; for a longer one at least ``LONG_ANSWER_SHARED`` of them,
  with its numbers in the supporting quotes together;
- and it is about what the question asks: it, or the passage it sits in (its sentence and one on
  each side, in the document), names the question's subject: the question's rarer words, those
  that the document writes least often (``Asked``). "Lady Catherine's behaviour was most friendly"
  holds the words of "the new gardener is Lady Catherine's" but names no gardener. A word the
  document writes everywhere is its topic, not a subject (``TOPIC_SHARE``): in a README about
  llmxmr, a passage naming "llmxmr", or "llmxmr" and "model", is not thereby about "Which model
  does llmxmr run when no server is configured?".

When no quote supports an answer, a sentence of the chunk may: one that writes the answer's
distinctive content (numbers, names, long words, quoted strings: ``Claim.key``) and passes the
same test. An answer with nothing distinctive ("yes", "a blue one") is stated by no sentence: any
sentence on the topic would seem to state it.

Terms are those of ``grounding.terms``: English words stemmed, Chinese and Japanese by pairs of
characters. The function words and English inflections are rules of those languages, right for
every model; the words a family's model echoes from the prompt come in as ``ignoring``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..chunking import Chunk, sentence_spans
from ..grounding import Citation, DocumentIndex, citation_at, contains_phrase, distinctive_words, normalise, terms

# A question's word that the document writes more often than once in this many sentences (and more
# than TOPIC_FLOOR times, so a short text has no topic) is the document's topic.
TOPIC_SHARE = 10
TOPIC_FLOOR = 10
# A short answer ("Tobias Wrenfield", "in a blue tin", "4817") must be held whole by one quote.
SHORT_ANSWER_TERMS = 5
# A longer answer must share at least this many of its terms beyond the question with a quote.
LONG_ANSWER_SHARED = 2
# Words that frame an answer rather than state it ("according to the text", "it says", "yes"):
# English, for every model.
_FRAMING_WORDS = frozenset(
    "yes according say says said state states stated mention mentions mentioned answer answers".split()
)
# The words of a yes-or-no answer: it says something with no other word ("Yes."), unlike "the answer
# is that", which says nothing.
_POLAR = re.compile(r"\b(?:yes|no)\b", re.IGNORECASE)
# A statement cut off before its complement: it ends, with no full stop, on an article or a form
# of "be" ("The embedded default model is"). English, for every model: a string cap or a loop stop
# cuts any model's answer so. Lower case only: "Vitamin A" ends on a letter, not an article.
_CUT_OFF = re.compile(r"\b(?:a|an|the|is|are|was|were|am)\W*$")
# A string an answer puts in quotation marks must be in its quote as written.
_QUOTED = re.compile(r"\"([^\"]{2,})\"|“([^”]{2,})”|「([^」]+)」|『([^』]+)』")
# An option of a multiple-choice question, one per line ("B. The cellar"), and an answer that
# names one by its letter ("B", "B.", "(B) The cellar").
_OPTION = re.compile(r"^\s*\(?([A-H])[.)]\s+(\S.*)$", re.MULTILINE)
_WORD = re.compile(r"\w")
# What may close a question after its mark: quotes and brackets.
_CLOSING_MARKS = "\"'”’)]»」』）》"
_LETTER = re.compile(r"^\s*\(?([A-H])\)?(?=[.):\s]|$)[.):]?")


@dataclass(frozen=True)
class Asked:
    """What a question asks, as support reads it: its terms (a quote of nothing else is an echo),
    and ``subject``, the terms a passage about it names: the rarer half of those the document
    writes (ties kept), less its topic (``TOPIC_SHARE``) unless all of them are. Empty when the
    document writes none of them: no passage is about the question. None when every passage counts
    as about it: the question has no terms, or its family asks for an operation on the text (a sum,
    a return value) rather than about something the text names."""

    terms: frozenset[str]
    subject: frozenset[str] | None

    def named_in(self, found: set[str]) -> bool:
        return self.subject is None or bool(self.subject & found)


def asked(question: str, document: DocumentIndex, ignoring: frozenset[str], subject_in_text: bool = True) -> Asked:
    wanted = frozenset(terms(question, ignoring))
    if not wanted or not subject_in_text:
        return Asked(wanted, None)
    written = sorted((count, term) for term in wanted if (count := document.term_count(term)))
    if not written:
        return Asked(wanted, frozenset())
    cutoff = written[(len(written) + 1) // 2 - 1][0]
    rarer = [(count, term) for count, term in written if count <= cutoff]
    everywhere = max(TOPIC_FLOOR, document.sentence_count / TOPIC_SHARE)
    return Asked(
        wanted, frozenset(term for count, term in rarer if count <= everywhere) or frozenset(t for _, t in rarer)
    )


@dataclass(frozen=True)
class Claim:
    """What an answer states that a reader would check, beyond the question's own words."""

    terms: frozenset[str]
    numbers: frozenset[str]
    phrases: tuple[str, ...]  # quoted strings, normalised
    key: frozenset[str]  # its numbers, names, long words and quoted strings' terms: what a stating sentence must write
    restates: bool  # it has terms, all the question's: it says nothing a quote could hold ("the pass key")
    # It has no word at all ("] ,"), or none but function and framing words and is no yes or no
    # (", the answer is that"): nothing a quote could hold either.
    blank: bool
    # It is a question ("Which estate does Mr. Bingley rent?", copied from the text): it states
    # nothing, whatever quote holds its words.
    asks: bool
    cut_off: bool = False  # it stops before it says what ("The embedded default model is")

    @property
    def short(self) -> bool:
        return len(self.terms) <= SHORT_ANSWER_TERMS

    def held_by(self, found: set[str], text: str) -> int | None:
        """How much of the claim a text with these terms holds (None: too little to support it)."""
        if self.restates or self.blank or self.asks or self.cut_off:
            return None
        if not all(contains_phrase(text, phrase) for phrase in self.phrases):
            return None
        shared = self.terms & found
        if self.short:
            return len(shared) + len(self.phrases) if shared == self.terms else None
        return len(shared) if len(shared) >= LONG_ANSWER_SHARED else None


class SupportCheck:
    """Support for answers to one question about one document (``question`` less any options,
    which come in as ``options``: an answer naming an option's letter claims the option's text)."""

    def __init__(
        self,
        question: str,
        document: DocumentIndex,
        ignoring: frozenset[str] = frozenset(),
        *,
        options: dict[str, str] | None = None,
        subject_in_text: bool = True,
    ) -> None:
        self.document = document
        self.ignoring = ignoring
        self.options = options or {}
        self.asked = asked(question, document, ignoring, subject_in_text)

    def claim(self, answer: str) -> Claim:
        letter = _LETTER.match(answer)
        if letter and letter.group(1) in self.options:
            answer = f"{self.options[letter.group(1)]} {answer[letter.end() :]}"
        phrases = [next(group for group in match.groups() if group) for match in _QUOTED.finditer(answer)]
        own = terms(answer, self.ignoring | _FRAMING_WORDS)
        beyond = frozenset(own - self.asked.terms)
        distinctive = set().union(*(terms(word) for word in distinctive_words(answer, self.ignoring | _FRAMING_WORDS)))
        quoted = set().union(*(terms(phrase) for phrase in phrases))
        return Claim(
            terms=beyond,
            numbers=frozenset(term for term in beyond if term.isdigit()),
            phrases=tuple(normalise(phrase).text for phrase in phrases),
            key=frozenset((distinctive | quoted) & beyond),
            restates=bool(own) and not beyond and not phrases,
            blank=not _WORD.search(answer) or not (own or phrases or _POLAR.search(answer)),
            asks=answer.rstrip().rstrip(_CLOSING_MARKS).endswith(("?", "？")),
            cut_off=bool(_CUT_OFF.search(answer)) and not answer.rstrip().endswith((".", "!", "。")),
        )

    def strength(self, citation: Citation, claim: Claim) -> tuple[int, int] | None:
        """How well a located quote supports a claim (more held first, then a quote that names
        the subject itself before one whose passage does), or None when it does not."""
        found = terms(citation.quote, self.ignoring)
        if not found - self.asked.terms:
            return None  # an echo of the question, or nothing to check
        held = claim.held_by(found, citation.quote)
        if held is None:
            return None
        if self.asked.named_in(found):
            return held, 1
        start, end = self.document.passage_around(citation.start, citation.end)
        return (held, 0) if self.asked.named_in(terms(self.document.text[start:end], self.ignoring)) else None

    def about(self, citations: Sequence[Citation]) -> list[Citation]:
        """The quotes that are information about what is asked, with no answer to hold: each says
        more than the question and names every term of its subject itself. None for a question
        whose subject no passage names (an operation on the text): with no answer to check, any
        passage would pass."""
        subject = self.asked.subject
        if not subject:
            return []
        about = []
        for citation in citations:
            found = terms(citation.quote, self.ignoring)
            if found - self.asked.terms and subject <= found:
                about.append(citation)
        return about

    def supporting(self, answer: str, citations: Sequence[Citation]) -> list[Citation]:
        """The citations that support ``answer``, the best supported first (then the higher match
        score, then document order); none when a longer answer's numbers are not all in them."""
        claim = self.claim(answer)
        scored = [(found, citation) for citation in citations if (found := self.strength(citation, claim)) is not None]
        scored.sort(key=lambda pair: (-pair[0][0], -pair[0][1], -pair[1].score, pair[1].start))
        chosen = [citation for _, citation in scored]
        if chosen and not claim.numbers <= set().union(*(terms(c.quote) for c in chosen)):
            return []
        return chosen

    def stating(self, answer: str, chunk: Chunk) -> Citation | None:
        """The first sentence of the chunk that writes the answer's distinctive content and
        supports it as a quote would: the text's own support for an answer whose quotes were
        paraphrased. None for an answer with nothing distinctive beyond the question."""
        claim = self.claim(answer)
        if not claim.key:
            return None
        text = self.document.text
        for start, end in sentence_spans(text, chunk.overlap_start, chunk.end):
            if claim.key <= terms(text[start:end], self.ignoring):
                sentence = citation_at(chunk, self.document, start, end, "stated", 100.0)
                if self.strength(sentence, claim) is not None:
                    return sentence
        return None

    def closest(self, answer: str, citations: Sequence[Citation]) -> list[Citation]:
        """Passages nearest to what was asked and guessed: most terms shared with the question and
        the answer first, then document order."""
        wanted = self.asked.terms | self.claim(answer).terms
        return sorted(citations, key=lambda c: (-len(wanted & terms(c.quote, self.ignoring)), c.start))


def split_options(question: str) -> tuple[str, dict[str, str]]:
    """A multiple-choice question as its stem (what it asks) and its options by letter; a question
    without at least two options is all stem."""
    options = {match.group(1): match.group(2).strip() for match in _OPTION.finditer(question)}
    if len(options) < 2:
        return question, {}
    return _OPTION.sub("", question).strip(), options
