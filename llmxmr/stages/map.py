"""Map: one call per chunk, returning what that chunk says about the question."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..chunking import Chunk
from ..config import GroundingSettings
from ..grounding import (
    WORD,
    Citation,
    DocumentIndex,
    content_words,
    locate_all,
    quotes_evidence,
    sentence_stating,
    sentences_of,
)
from ..prompts import ChatMessage, PromptSet
from ..schemas import MapOutput
from .partials import Partial, Support


# The tags the map prompts put around a chunk. A document that contains them (this README does)
# must not be able to close the quoted part early and speak as the prompt: inside a chunk, every
# spelling of them (any case, spaces inside the brackets) gets a zero-width space after "<",
# which keeps it readable and makes it another tag.
DOCUMENT_TAGS = ("<document_part>", "</document_part>")
_TAG_IN_TEXT = re.compile(r"<(\s*/?\s*document_part\s*)>", re.IGNORECASE)
_ZERO_WIDTH_SPACE = "\u200b"


def quote_as_data(chunk_text: str) -> str:
    """The chunk as the prompt quotes it: its copies of the delimiting tags defused."""
    return _TAG_IN_TEXT.sub(lambda m: f"<{_ZERO_WIDTH_SPACE}{m.group(1)}>", chunk_text)


def map_messages(prompts: PromptSet, question: str, chunk_text: str) -> list[ChatMessage]:
    """System message, then instructions and question, then the chunk: a prefix shared by all
    map calls of a run."""
    return prompts.messages("map", question=question, chunk=quote_as_data(chunk_text))


@dataclass(frozen=True)
class GroundedReply:
    """What a map reply contributes once its quotes were looked up (None: no information), and
    what grounding decided, for the trace (None: nothing to say)."""

    partial: Partial | None
    check: str | None


def ground_map_reply(
    output: MapOutput,
    chunk: Chunk,
    document: DocumentIndex,
    question: str,
    family: str,
    settings: GroundingSettings,
) -> GroundedReply:
    """Looks the reply's quotes up in the text around its chunk and applies ``settings.mode``."""
    retrieval = family == "retrieval" and settings.mode != "off"
    if not output.has_information and not (retrieval and output.extracted_information.strip()):
        return GroundedReply(None, None)
    if not quotes_evidence(family):
        return GroundedReply(Partial(chunk_indices=[chunk.index], answer=output), None)
    # The retrieval prompt asks for the sentence holding the value, copied exactly, as the
    # extracted information: it is a quote too.
    quotes = [*output.evidence, output.extracted_information] if family == "retrieval" else output.evidence
    citations = locate_all(quotes, chunk, document, settings.fuzzy_threshold)
    found = f"{len(citations)} quote(s) found in the text"
    if settings.mode == "off":
        return GroundedReply(Partial(chunk_indices=[chunk.index], answer=output, citations=citations), None)
    if retrieval:
        return _ground_retrieval(output, chunk, citations, question, found)
    if citations:
        return GroundedReply(_partial(output, chunk, citations, "verified"), found)
    # The quotes were paraphrased, not copied; the text may still state the answer itself.
    stated = sentence_stating(output.answer or "", question, chunk, document)
    if stated is not None:
        return GroundedReply(
            _partial(output, chunk, [stated], "verified"),
            f"{found}; a sentence of the chunk that names the question writes the answer: cited instead",
        )
    if settings.mode == "strict":
        return GroundedReply(None, f"{found}: unsupported, counts as no information")
    capped = output.model_copy(update={"confidence": min(output.confidence, settings.unsupported_confidence)})
    return GroundedReply(
        _partial(capped, chunk, [], "unverified"),
        f"{found}: unsupported, confidence capped at {settings.unsupported_confidence:g}",
    )


def _partial(output: MapOutput, chunk: Chunk, citations: list[Citation], support: Support) -> Partial:
    return Partial(chunk_indices=[chunk.index], answer=output, citations=citations, support=support)


def _ground_retrieval(
    output: MapOutput, chunk: Chunk, citations: list[Citation], question: str, found: str
) -> GroundedReply:
    """A retrieved value must be written in the found quotes that name what the request asks for
    (the pass key, the key of a pair); when the answer is not, or the reply gave none (a small
    model may copy the needle and still answer null), those quotes stand in for it; with no such
    quote the reply counts as no information. What the reply keeps as its extracted information
    is the found sentences, not its own text: a later stage must not read an invented sentence
    as the document's."""
    if not output.has_information and not citations:
        return GroundedReply(None, None)  # an empty reply with no quote: nothing was claimed
    if not citations:
        return GroundedReply(None, f"{found}: unsupported, counts as no information")
    naming = [citation for citation in citations if names_request(citation.quote, question)]
    # Within a quote of several sentences, only those naming the request may hold the value.
    quoted = "\n".join(
        sentence for c in naming for sentence in sentences_of(c.quote) if names_request(sentence, question)
    )
    if not quoted:
        return GroundedReply(None, f"{found}, none naming what the request asks for: counts as no information")
    if output.answer is None:
        answer, problem = quoted, "no value given; the found sentences naming the request stand in for it"
    else:
        answer, problem = checked_retrieval_answer(output.answer, quoted, question, quoted)
    if answer is None:
        return GroundedReply(None, f"{found}, but {problem}: counts as no information")
    supported = output.model_copy(update={"answer": answer, "extracted_information": quoted})
    return GroundedReply(_partial(supported, chunk, naming, "verified"), f"{found}; {problem}" if problem else found)


def names_request(text: str, request: str) -> bool:
    """Whether ``text`` shares a content word with ``request`` (any text does, for a request of
    stopwords only): a sentence that holds a requested value names what it is the value of."""
    wanted = content_words(request)
    return not wanted or bool(wanted & content_words(text))


def checked_retrieval_answer(answer: str, evidence: str, request: str, chunk_text: str) -> tuple[str | None, str | None]:
    """The answer a retrieval map reply may contribute, and what the check decided (None: kept).

    The requested value is written in the document, and the sentence that holds it names what the
    request asks for (the pass key, the key of a pair). So a reply counts only if every content
    word of its answer occurs in the chunk (any word with a digit; other words of three letters or
    more that are not stopwords, so "The answer is 71432" passes on "71432") and the answer or its
    evidence shares such a word with the request. When the answer fails but the evidence passes on
    its own (a small model copies "The pass key is 71432." as evidence, then writes a sentence of
    its own as the answer), the verified evidence stands in for the answer.
    """
    problem = _retrieval_problem(answer, evidence, request, chunk_text)
    if problem is None:
        return answer, None
    if evidence.strip() and _retrieval_problem(evidence, "", request, chunk_text) is None:
        return evidence, f"{problem}; its evidence, found in the text, stands in for it"
    return None, problem


def _retrieval_problem(answer: str, evidence: str, request: str, chunk_text: str) -> str | None:
    answer_words = content_words(answer, keep_digits=True)
    if answer_words - set(WORD.findall(chunk_text.casefold())) or (
        not answer_words and _normalised(answer) not in _normalised(chunk_text)
    ):
        return "the answer does not occur in the chunk"
    wanted = content_words(request)
    if wanted and not wanted & content_words(f"{answer} {evidence}"):
        return "neither the answer nor its evidence mentions what the request asks for"
    return None


def _normalised(text: str) -> str:
    return " ".join(text.split()).casefold()
