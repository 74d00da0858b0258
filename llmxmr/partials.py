"""Partial answers as they travel from map through collapse to reduce."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from .grounding import Citation
from .schemas import PartialAnswer

# verified: quotes found in the document (or a sentence of it) support it; unverified: none does (it
# can only pass with its confidence capped); unchecked: grounding is off, or the family does not quote.
Support = Literal["verified", "unverified", "unchecked"]


class Partial(BaseModel):
    """A partial answer, the chunks it speaks for (one after map, several after collapse), the
    quotes of the document it rests on (the best supporting first), and the other quotes found in
    the text that do not support it (``related``: passages, never its citations)."""

    model_config = ConfigDict(frozen=True)

    chunk_indices: list[int]
    answer: PartialAnswer
    citations: list[Citation] = []
    support: Support = "unchecked"
    related: list[Citation] = []

    @property
    def answers(self) -> bool:
        """Whether it gives an answer."""
        return self.answer.has_information

    @property
    def informs(self) -> bool:
        """Whether it bears on the question: it gives an answer, or, with none, it carries quotes
        of the text about what is asked (``QuotingFamily.information``), from which a later stage
        may answer, as the paper's extracted information is read whatever the part concluded."""
        return self.answers or (self.support == "verified" and bool(self.citations))


def standing_order(partial: Partial) -> tuple[bool, bool, float]:
    """Which partial stands when a merged or final answer may not: a supported one before a guess,
    then one with an answer before one carrying information only, then the more confident."""
    return partial.support != "unverified", partial.answers, partial.answer.confidence


def label(chunk_indices: list[int]) -> str:
    """The label "Chunk 3", "Chunks 3-5", or "Chunks 3, 5, 9" when chunks without information fell out."""
    first, last = chunk_indices[0], chunk_indices[-1]
    if first == last:
        return f"Chunk {first}"
    if last - first + 1 == len(chunk_indices):
        return f"Chunks {first}-{last}"
    return "Chunks " + ", ".join(str(index) for index in chunk_indices)


# How a partial that carries information but no answer shows its answer to later stages.
NO_ANSWER_GIVEN = "none given (the quotes above are what this part found about the question)"

_SUPPORT_NOTE = {
    "verified": "; quoted from the text",
    "unverified": "; unverified: no quote of the text supports it",
    "unchecked": "",
}


def render_partial(partial: Partial) -> str:
    """A partial answer as later prompts show it: with the verified quotes (the text's own words),
    so that a collapse can carry them forward, and whether any were found."""
    answer = partial.answer
    quotes = "".join(f'\nQuote: "{citation.quote}"' for citation in partial.citations)
    return (
        f"### {label(partial.chunk_indices)} (confidence {answer.confidence:g}{_SUPPORT_NOTE[partial.support]})\n"
        f"Information: {answer.extracted_information}{quotes}\n"
        f"Rationale: {answer.rationale}\n"
        f"Answer: {answer.answer if partial.answers else NO_ANSWER_GIVEN}"
    )


def render_partials(partials: list[Partial]) -> str:
    return "\n\n".join(render_partial(partial) for partial in partials)
