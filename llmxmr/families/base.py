"""What a task family decides, and the default: families whose replies quote the text.

A family owns its prompt set, whether its replies quote their chunk (and which fields count as
quotes), how a map answer is checked against those quotes, what a collapse may carry forward, and
what a final answer must satisfy. The pipeline asks the family and never branches on its name;
the stages, below the families, know none.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..chunking import Chunk
from ..config import GroundingSettings
from ..grounding import (
    Citation,
    DocumentIndex,
    carried_forward,
    contains_phrase,
    locate_all,
    sentence_stating,
)
from ..partials import Partial, Support
from ..prompts import PromptSet, load_prompts
from ..schemas import CollapseOutput, FinalAnswer, MapOutput
from ..stages.collapse import fallback, merged_indices
from .workarounds import WORDS_ECHOED_FROM_THE_PROMPT


@dataclass(frozen=True)
class GroundedReply:
    """What a map reply contributes once its quotes were looked up (None: no information), and
    what grounding decided, for the trace (None: nothing to say)."""

    partial: Partial | None
    check: str | None


class QuotingFamily:
    """Families whose replies quote their chunk (qa, choice, code, math, zh): an answer is as good
    as the quotes of it that are found in the text. With none found, the text may still state the
    answer itself; failing that, ``grounding.mode`` decides (``cap``: kept at low confidence,
    ``strict``: no information)."""

    quotes = True
    # A merged answer that repeats no verified quote: kept with its inputs' verified quotes (False)
    # or set aside for the best verified input (True), whatever the grounding mode.
    merges_need_a_carried_quote = False

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def prompts(self) -> PromptSet:
        return load_prompts(self.name)

    @property
    def omitted_fields(self) -> tuple[str, ...]:
        """Fields left out of the reply schema sent to the model."""
        return () if self.quotes else ("evidence",)

    def quotes_of(self, output: MapOutput) -> list[str]:
        """What of a map reply is looked up in the text."""
        return output.evidence

    def ground_map(
        self, output: MapOutput, chunk: Chunk, document: DocumentIndex, question: str, settings: GroundingSettings
    ) -> GroundedReply:
        """Looks the reply's quotes up in the text around its chunk and applies ``settings.mode``."""
        if not output.has_information:
            return GroundedReply(None, None)
        citations = locate_all(self.quotes_of(output), chunk, document, settings.fuzzy_threshold)
        found = f"{len(citations)} quote(s) found in the text"
        if settings.mode == "off":
            return GroundedReply(partial_of(output, chunk, citations, "unchecked"), None)
        if citations:
            return GroundedReply(partial_of(output, chunk, citations, "verified"), found)
        # The quotes were paraphrased, not copied; the text may still state the answer itself.
        stated = sentence_stating(output.answer or "", question, chunk, document, ignoring=WORDS_ECHOED_FROM_THE_PROMPT)
        if stated is not None:
            return GroundedReply(
                partial_of(output, chunk, [stated], "verified"),
                f"{found}; a sentence of the chunk that names the question writes the answer: cited instead",
            )
        if settings.mode == "strict":
            return GroundedReply(None, f"{found}: unsupported, counts as no information")
        capped = output.model_copy(update={"confidence": min(output.confidence, settings.unsupported_confidence)})
        return GroundedReply(
            partial_of(capped, chunk, [], "unverified"),
            f"{found}: unsupported, confidence capped at {settings.unsupported_confidence:g}",
        )

    def ground_collapse(
        self, output: CollapseOutput, group: list[Partial], settings: GroundingSettings
    ) -> tuple[Partial, str | None]:
        """The merged partial answer with the verified quotes it carries forward, and what grounding
        decided (for the trace). A collapse cannot verify anything new: its quotes count when they
        repeat quotes of its inputs that were found in the text, or when its answer restates the
        answer of a verified input (whose quotes it then carries)."""
        indices = merged_indices(group)
        inputs = [citation for partial in group for citation in partial.citations]
        carried = carried_forward(output.evidence, inputs, settings.fuzzy_threshold)
        if not carried and output.answer:
            carried = [
                c for p in group if p.support != "unverified" and _restates(output.answer, p) for c in p.citations
            ]
        supports = {partial.support for partial in group}
        if output.answer is None and "verified" in supports and settings.mode != "off":
            return fallback(group), "the merged reply dropped the verified answers; the best verified input stands"
        if settings.mode == "off" or supports == {"unchecked"}:
            return Partial(chunk_indices=indices, answer=output, citations=_unique(carried or inputs)), None
        problem = self.merged_value_problem(output, carried) if carried else None
        if problem:
            return fallback(group), f"{problem}; the best verified input stands"
        if carried:
            return Partial(chunk_indices=indices, answer=output, citations=_unique(carried), support="verified"), None
        if "verified" in supports:
            if settings.mode == "strict" or self.merges_need_a_carried_quote:
                return fallback(group), "the merged answer repeats no verified quote; the best verified input stands"
            verified = [c for p in group if p.support == "verified" for c in p.citations]
            return (
                Partial(chunk_indices=indices, answer=output, citations=_unique(verified), support="verified"),
                "no quote carried forward; the verified quotes of its inputs stand",
            )
        capped = output.model_copy(update={"confidence": min(output.confidence, settings.unsupported_confidence)})
        return (
            Partial(chunk_indices=indices, answer=capped, support="unverified"),
            f"no input was verified: confidence capped at {settings.unsupported_confidence:g}",
        )

    def merged_value_problem(self, output: CollapseOutput, carried: list[Citation]) -> str | None:
        """Why a merged answer may not stand on the quotes it carries (None: it may)."""
        return None

    def checked_final(
        self, answer: FinalAnswer, partials: list[Partial], question: str
    ) -> tuple[FinalAnswer | None, str | None]:
        """The final answer to ``question`` as it may stand, or None (with why) when it must give
        way to the most confident partial answer."""
        return answer, None


class UnquotedFamily(QuotingFamily):
    """Families whose answers rest on the whole text rather than a few sentences (summaries): their
    replies carry no quotes, and every answer counts as the model gives it."""

    quotes = False

    def ground_map(
        self, output: MapOutput, chunk: Chunk, document: DocumentIndex, question: str, settings: GroundingSettings
    ) -> GroundedReply:
        if not output.has_information:
            return GroundedReply(None, None)
        return GroundedReply(Partial(chunk_indices=[chunk.index], answer=output), None)


def partial_of(output: MapOutput, chunk: Chunk, citations: list[Citation], support: Support) -> Partial:
    return Partial(chunk_indices=[chunk.index], answer=output, citations=citations, support=support)


def _restates(answer: str, partial: Partial) -> bool:
    """Whether one answer holds the other as whole words ("71432" restates "it is 71432", but
    "7143" does not restate "71432")."""
    theirs = partial.answer.answer or ""
    return bool(theirs.strip()) and (contains_phrase(answer, theirs) or contains_phrase(theirs, answer))


def _unique(citations: list[Citation]) -> list[Citation]:
    spans = {(c.start, c.end): c for c in citations}
    return [spans[span] for span in sorted(spans)]
