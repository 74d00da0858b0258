"""Retrieval (pass keys, key-value pairs, needles): the value asked for is written in the text.

So a value counts only if it is written in the found quotes that name what the request asks for
(the pass key, the key of a pair), and the final answer only if it comes from the checked partial
answers. The retrieval prompt asks for the sentence holding the value, copied exactly, as the
extracted information: it is looked up as a quote too.
"""

from __future__ import annotations

from ..chunking import Chunk
from ..config import GroundingSettings
from ..grounding import WORD, Citation, DocumentIndex, content_words, locate_all, normalise, sentences_of
from ..partials import Partial
from ..schemas import CollapseOutput, FinalAnswer, MapOutput
from .base import GroundedReply, QuotingFamily, partial_of
from .workarounds import WORDS_ECHOED_FROM_THE_PROMPT, evidence_for_an_unwritten_answer, sentences_for_a_null_answer


class RetrievalFamily(QuotingFamily):
    merges_need_a_carried_quote = True

    def quotes_of(self, output: MapOutput) -> list[str]:
        return [*output.evidence, output.extracted_information]

    def ground_map(
        self, output: MapOutput, chunk: Chunk, document: DocumentIndex, question: str, settings: GroundingSettings
    ) -> GroundedReply:
        if settings.mode == "off":
            return super().ground_map(output, chunk, document, question, settings)
        if not output.has_information and not output.extracted_information.strip():
            return GroundedReply(None, None)
        citations = locate_all(self.quotes_of(output), chunk, document, settings.fuzzy_threshold)
        found = f"{len(citations)} quote(s) found in the text"
        if not output.has_information and not citations:
            return GroundedReply(None, None)  # an empty reply with no quote: nothing was claimed
        guess = partial_of(output, chunk, [], "unverified", citations) if output.has_information else None
        if not citations:
            return GroundedReply(None, f"{found}: unsupported, counts as no information", guess)
        naming = [citation for citation in citations if names_request(citation.quote, question)]
        # Within a quote of several sentences, only those naming the request may hold the value.
        quoted = "\n".join(
            sentence for c in naming for sentence in sentences_of(c.quote) if names_request(sentence, question)
        )
        if not quoted:
            return GroundedReply(
                None, f"{found}, none naming what the request asks for: counts as no information", guess
            )
        answer: str | None
        problem: str | None
        if output.answer is None:
            answer, problem = sentences_for_a_null_answer(quoted)
        else:
            answer, problem = checked_value(output.answer, quoted, question, quoted)
        if answer is None:
            return GroundedReply(None, f"{found}, but {problem}: counts as no information", guess)
        # What the partial keeps as its information is the found sentences, not the reply's own
        # text: a later stage must not read an invented sentence as the document's. Its citations
        # are the found quotes naming the request that hold the value, the best first (all of them
        # naming it when the value is spread over several).
        supported = output.model_copy(update={"answer": answer, "extracted_information": quoted})
        holding = self.support(question, document).supporting(answer, naming) or naming
        related = [citation for citation in citations if citation not in holding]
        return GroundedReply(
            partial_of(supported, chunk, holding, "verified", related), f"{found}; {problem}" if problem else found
        )

    def merged_value_problem(self, output: CollapseOutput, carried: list[Citation]) -> str | None:
        if output.answer is None:
            return None
        quoted = "\n".join(citation.quote for citation in carried)
        if checked_value(output.answer, "", "", quoted)[0] is None:
            return "the merged value is not written in the quotes it carries"
        return None

    def checked_final(
        self, answer: FinalAnswer, partials: list[Partial], question: str, document: DocumentIndex
    ) -> tuple[FinalAnswer | None, str | None]:
        """The final value must come from the partial answers it was reduced from (checked against
        their chunks and the request) or their found quotes, and say more than the request."""
        if answer.answer is not None and only_names_request(answer.answer, question):
            return None, ONLY_NAMES_REQUEST
        source = "\n".join(
            [*(p.answer.answer or "" for p in partials), *(c.quote for p in partials for c in p.citations)]
        )
        kept, problem = checked_value(answer.answer, "", "", source)
        if kept is not None:
            return answer, None
        return None, f"{problem} (of the partial answers)"


ONLY_NAMES_REQUEST = "the answer only names what the request asks for, with no value"


def only_names_request(answer: str, request: str) -> bool:
    """Whether every content word of ``answer`` is one of the request's ("the pass key" asked for
    the pass key): such an answer holds no value."""
    answer_words = _content_words(answer, keep_digits=True)
    return bool(answer_words) and answer_words <= _content_words(request)


def names_request(text: str, request: str) -> bool:
    """Whether ``text`` shares a content word with ``request`` (any text does, for a request of
    function and prompt words only): a sentence that holds a requested value names what it is the
    value of."""
    wanted = _content_words(request)
    return not wanted or bool(wanted & _content_words(text))


def checked_value(answer: str, evidence: str, request: str, text: str) -> tuple[str | None, str | None]:
    """The value a retrieval reply may contribute, and what the check decided (None: kept as is).

    A value counts only if every content word of it occurs in ``text`` (any word with a digit;
    other words of three letters or more that are neither function nor prompt words, so "The answer
    is 71432" passes on "71432"), the value says more than the request's own words ("the pass key"
    is no pass key), and the value or its evidence shares such a word with the request."""
    problem = value_problem(answer, evidence, request, text)
    if problem is None:
        return answer, None
    return evidence_for_an_unwritten_answer(problem, evidence, value_problem(evidence, "", request, text) is None)


def value_problem(answer: str, evidence: str, request: str, text: str) -> str | None:
    answer_words = _content_words(answer, keep_digits=True)
    if answer_words - set(WORD.findall(text.casefold())) or (
        not answer_words and normalise(answer).text not in normalise(text).text
    ):
        return "the answer does not occur in the chunk"
    if only_names_request(answer, request):
        return ONLY_NAMES_REQUEST
    wanted = _content_words(request)
    if wanted and not wanted & _content_words(f"{answer} {evidence}"):
        return "neither the answer nor its evidence mentions what the request asks for"
    return None


def _content_words(text: str, keep_digits: bool = False) -> set[str]:
    """Grounding's content words, without the words a request or the bundled model's reply echoes
    from the prompt (``families.workarounds``)."""
    return content_words(text, keep_digits, ignoring=WORDS_ECHOED_FROM_THE_PROMPT)
