"""What a task family decides, and the default: families whose replies quote the text.

A family owns its prompt set, whether its replies quote their chunk (and which fields count as
quotes), how a map answer is checked against those quotes (which of them support it: ``support``),
what a collapse may carry forward, what a final answer must satisfy, and which quotes the result
cites. The pipeline asks the family and never branches on its name;
the stages, below the families, know none.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..chunking import Chunk
from ..config import GroundingSettings, MapReplyShape
from ..grounding import Citation, DocumentIndex, carried_forward, contains_phrase, in_document_order, locate_all
from ..partials import Partial, Support
from ..prompts import PromptSet, load_prompts
from ..schemas import CollapseOutput, FinalAnswer, MapOutput, NothingFirstMapOutput
from ..stages.collapse import fallback, merged_indices
from ..stages.reduce import citations_for
from .support import SupportCheck, split_options
from .workarounds import WORDS_ECHOED_FROM_THE_PROMPT


@dataclass(frozen=True)
class GroundedReply:
    """What a map reply contributes once its quotes were looked up (None: no information), what
    grounding decided, for the trace (None: nothing to say), and, when an answer it gave counts as
    no information, that answer as an unsupported guess (with the quotes found as its related
    passages)."""

    partial: Partial | None
    check: str | None
    rejected: Partial | None = None


class QuotingFamily:
    """Families whose replies quote their chunk (qa, choice, code, math, zh): an answer is as good
    as the quotes of it that are found in the text and support it (``support``: they hold the
    answer and are about what the question asks). With none, a sentence of the chunk may state the
    answer itself; failing that, ``grounding.mode`` decides (``cap``: kept at low confidence,
    ``strict``: no information)."""

    quotes = True
    # A merged answer that repeats no verified quote: kept with its inputs' verified quotes that
    # hold it (False) or set aside for the best verified input (True), whatever the grounding mode.
    merges_need_a_carried_quote = False

    def __init__(self, name: str, *, subject_in_text: bool = True) -> None:
        self.name = name
        # Whether a question names what it asks about in the text's words (prose), so that a
        # supporting quote must be about it; math and code questions ask for an operation on the
        # text (the largest number, a return value), which no passage names.
        self.subject_in_text = subject_in_text

    @property
    def prompts(self) -> PromptSet:
        return load_prompts(self.name)

    def map_reply(self, shape: MapReplyShape) -> tuple[PromptSet, type[MapOutput]]:
        """The prompts and the reply type of map calls in ``shape`` (``llm.map_reply``): the
        nothing-first reply is for families whose chunks may hold nothing; a summary's always
        hold something to summarise."""
        if shape == "nothing-first" and self.quotes:
            return load_prompts(self.name, nothing_first=True), NothingFirstMapOutput
        return self.prompts, MapOutput

    @property
    def omitted_fields(self) -> tuple[str, ...]:
        """Fields left out of the reply schema sent to the model."""
        return () if self.quotes else ("evidence",)

    def quotes_of(self, output: MapOutput) -> list[str]:
        """What of a map reply is looked up in the text."""
        return output.evidence

    def support(self, question: str, document: DocumentIndex) -> SupportCheck:
        """The support check for answers to ``question`` (its options, if it lists some, stand for
        their letters)."""
        asked, options = split_options(question)
        return SupportCheck(
            asked, document, WORDS_ECHOED_FROM_THE_PROMPT, options=options, subject_in_text=self.subject_in_text
        )

    def ground_map(
        self, output: MapOutput, chunk: Chunk, document: DocumentIndex, question: str, settings: GroundingSettings
    ) -> GroundedReply:
        """Looks the reply's quotes up in the text around its chunk, keeps those that support its
        answer, and applies ``settings.mode`` when none does. A reply with no answer may still
        carry information (``information``)."""
        if not output.has_information:
            return self.information(output, chunk, document, question, settings)
        located = locate_all(self.quotes_of(output), chunk, document, settings.fuzzy_threshold)
        found = f"{len(located)} quote(s) found in the text"
        if settings.mode == "off":
            return GroundedReply(partial_of(output, chunk, located, "unchecked"), None)
        check = self.support(question, document)
        cited = check.supporting(output.answer or "", located)
        related = [citation for citation in located if citation not in cited]
        if cited:
            return GroundedReply(
                partial_of(output, chunk, cited, "verified", related), f"{found}, {len(cited)} {SUPPORTING}"
            )
        found = f"{found}, none {SUPPORTING}" if located else found
        # The quotes were paraphrased, not copied; the text may still state the answer itself.
        stated = check.stating(output.answer or "", chunk)
        if stated is not None:
            return GroundedReply(
                partial_of(output, chunk, [stated], "verified", related),
                f"{found}; a sentence of the chunk holding it and about what is asked is cited instead",
            )
        guess = partial_of(output, chunk, [], "unverified", located)
        if settings.mode == "strict":
            return GroundedReply(None, f"{found}: unsupported, counts as no information", guess)
        capped = output.model_copy(update={"confidence": min(output.confidence, settings.unsupported_confidence)})
        return GroundedReply(
            partial_of(capped, chunk, [], "unverified", located),
            f"{found}: unsupported, confidence capped at {settings.unsupported_confidence:g}",
        )

    def information(
        self, output: MapOutput, chunk: Chunk, document: DocumentIndex, question: str, settings: GroundingSettings
    ) -> GroundedReply:
        """A reply with no answer whose extracted information is found in the text and is about
        what is asked: carried forward as information, cited by the text's own words, so that a
        later stage may answer from it (the paper reads every part's extracted information, not
        only its answer). It is never an answer by itself. Nothing, otherwise; and nothing without
        grounding, which cannot tell information found from information made up."""
        if settings.mode == "off" or not output.extracted_information.strip():
            return GroundedReply(None, None)
        located = locate_all([output.extracted_information], chunk, document, settings.fuzzy_threshold)
        about = self.support(question, document).about(located)
        if not about:
            return GroundedReply(None, None)
        return GroundedReply(
            partial_of(output, chunk, about, "verified"),
            "no answer; its information is found in the text and is about what is asked: carried as information",
        )

    def ground_collapse(
        self,
        output: CollapseOutput,
        group: list[Partial],
        question: str,
        document: DocumentIndex,
        settings: GroundingSettings,
    ) -> tuple[Partial, str | None]:
        """The merged partial answer with the verified quotes it carries forward, and what grounding
        decided (for the trace). A collapse cannot verify anything new: its quotes count when they
        repeat quotes of its inputs that supported them, or when its answer restates the answer of
        a verified input (whose quotes it then carries); and they count only if they support the
        merged answer as they supported their own."""
        indices = merged_indices(group)
        inputs = [citation for partial in group for citation in partial.citations]
        nearby = [citation for partial in group for citation in partial.related]
        carried = carried_forward(output.evidence, inputs, settings.fuzzy_threshold)
        if not carried and output.answer:
            carried = [
                c for p in group if p.support != "unverified" and _restates(output.answer, p) for c in p.citations
            ]
        supports = {partial.support for partial in group}
        if output.answer is None and "verified" in supports and settings.mode != "off":
            if not any(partial.answers for partial in group):
                return fallback(group), "no answer yet: the quoted information of the inputs is carried"
            return fallback(group), "the merged reply dropped the verified answers; the best verified input stands"
        if settings.mode == "off" or supports == {"unchecked"}:
            return Partial(chunk_indices=indices, answer=output, citations=in_document_order(carried or inputs)), None
        problem = self.merged_value_problem(output, carried) if carried else None
        if problem:
            return fallback(group), f"{problem}; the best verified input stands"
        check = self.support(question, document)
        held = check.supporting(output.answer or "", in_document_order(carried))
        if held:
            return self._merged(indices, output, held, inputs + nearby), None
        if "verified" in supports:
            verified = in_document_order([c for p in group if p.support == "verified" for c in p.citations])
            if settings.mode == "strict" or self.merges_need_a_carried_quote:
                return fallback(
                    group
                ), "the merged answer repeats no verified quote that holds it; the best verified input stands"
            held = check.supporting(output.answer or "", verified)
            if not held:
                return fallback(group), "no verified quote holds the merged answer; the best verified input stands"
            return (
                self._merged(indices, output, held, inputs + nearby),
                "no quote carried forward holds it; the verified quotes of its inputs that do stand",
            )
        capped = output.model_copy(update={"confidence": min(output.confidence, settings.unsupported_confidence)})
        return (
            Partial(chunk_indices=indices, answer=capped, support="unverified", related=in_document_order(nearby)),
            f"no input was verified: confidence capped at {settings.unsupported_confidence:g}",
        )

    @staticmethod
    def _merged(indices: list[int], output: CollapseOutput, held: list[Citation], seen: list[Citation]) -> Partial:
        related = in_document_order([citation for citation in seen if citation not in held])
        return Partial(chunk_indices=indices, answer=output, citations=held, support="verified", related=related)

    def merged_value_problem(self, output: CollapseOutput, carried: list[Citation]) -> str | None:
        """Why a merged answer may not stand on the quotes it carries (None: it may)."""
        return None

    def checked_final(
        self, answer: FinalAnswer, partials: list[Partial], question: str, document: DocumentIndex
    ) -> tuple[FinalAnswer | None, str | None]:
        """The final answer to ``question`` as it may stand, or None (with why) when it must give
        way to the most confident partial answer: with verified partial answers, one of their
        quotes must support it."""
        verified = in_document_order([c for p in partials if p.support == "verified" for c in p.citations])
        if not verified or self.support(question, document).supporting(answer.answer, verified):
            return answer, None
        return None, f"no quote of the partial answers {SUPPORTING_FINAL}"

    def cited(
        self, answer: FinalAnswer, partials: list[Partial], question: str, document: DocumentIndex
    ) -> tuple[list[Citation], list[Citation]]:
        """The citations of the final answer, the best supported first, and the other passages the
        partial answers found (the closest to the question and answer first): related passages,
        never the answer's citations. Unchecked answers (grounding off, or no quotes) are cited by
        the quotes of the partial answers they rest on, as found."""
        located = in_document_order([c for p in partials for c in (*p.citations, *p.related)])
        if all(p.support == "unchecked" for p in partials):
            citations = citations_for(answer, partials)
            return citations, [c for c in located if c not in citations]
        check = self.support(question, document)
        verified = in_document_order([c for p in partials if p.support == "verified" for c in p.citations])
        citations = check.supporting(answer.answer, verified)
        if verified and not citations:  # a family's own check let it stand (retrieval): as its partials cite it
            citations = citations_for(answer, [p for p in partials if p.support == "verified"])
        return citations, check.closest(answer.answer, [c for c in located if c not in citations])


# What the trace says of the quotes that support an answer.
SUPPORTING = "holding the answer and about what is asked"
SUPPORTING_FINAL = "holds the final answer and is about what is asked"


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


def partial_of(
    output: MapOutput, chunk: Chunk, citations: list[Citation], support: Support, related: list[Citation] | None = None
) -> Partial:
    return Partial(
        chunk_indices=[chunk.index], answer=output, citations=citations, support=support, related=related or []
    )


def _restates(answer: str, partial: Partial) -> bool:
    """Whether one answer holds the other as whole words ("71432" restates "it is 71432", but
    "7143" does not restate "71432")."""
    theirs = partial.answer.answer or ""
    return bool(theirs.strip()) and (contains_phrase(answer, theirs) or contains_phrase(theirs, answer))
