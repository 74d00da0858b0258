"""Workarounds for small models, in one place.

Each one answers a habit measured on the bundled SmolLM2-135M. The reply workarounds (a capable
model does not trigger them) turn a reply that would otherwise be thrown away into one the text
supports; none of them lets through a value that is not written in the found quotes: they only
choose which of the text's own words stand for the answer. The prompt workaround, the string cap
and the chunk size are switched on by the bundled model's profile (``configs/default.yaml``:
``model_profiles``), wherever that model runs.

Grounding sits below the families and cannot import them: a workaround it applies comes in as an
argument from the family (``WORDS_ECHOED_FROM_THE_PROMPT`` as ``ignoring``). What grounding keeps
for itself is right for every model (English function words, "I" is no name, numbers must match).
"""

from __future__ import annotations

from ..prompts import PromptSet

# Words of the prompts and of requests written as instructions ("Please extract the value
# corresponding to the specified key in the JSON object below"), which say nothing of what is asked
# or found. SmolLM2 writes its value as a sentence about the task ("The answer is 71432"), so a
# value check that read them would look for "answer" in the text; and a request's "text" or
# "below" would let any sentence holding them name the request. The retrieval family reads
# requests and replies without them; grounding's own rules do not know them.
WORDS_ECHOED_FROM_THE_PROMPT = frozenset(
    "please tell give find provide extract answer question text document below above following "
    "specified corresponding".split()
)


def maps_for_the_model(prompts: PromptSet, question_first: bool) -> PromptSet:
    """The prompts a run's map calls use. Small models need to know what they look for before they
    read. On 8 pass-key haystacks of 2k tokens (embedded SmolLM2, greedy, the needle's chunk), it
    copied the key into its reply 8 times of 8 with the question-first template, 0 of 8 with the
    document first, and 1 of 8 with the document first and the request also stated before it:
    being told the request before the instructions on what to copy is what it needs. Where the
    configuration asks for it (``llm.map_question_first``, which the bundled model's profile in
    ``configs/default.yaml`` turns on wherever it runs), a family that ships a question-first map template
    (``map_question_first.md``: retrieval) uses it. That gives up the reuse of each chunk's prefix
    by the next question, so it stays off for models that read the question after the document
    well."""
    return prompts.question_first() if question_first and prompts.map_question_first is not None else prompts


def sentences_for_a_null_answer(quoted: str) -> tuple[str, str]:
    """A retrieval reply that copies the needle into its quotes and still answers null (SmolLM2
    with the NIAH needle at 8k tokens, depth 100): the found sentences that name the request stand
    in for the value."""
    return quoted, "no value given; the found sentences naming the request stand in for it"


def evidence_for_an_unwritten_answer(problem: str, evidence: str, evidence_checks: bool) -> tuple[str | None, str]:
    """A retrieval reply that copies "The pass key is 71432." as its evidence and then writes a
    sentence of its own as the answer (SmolLM2, often): when the answer fails the check
    (``problem``) but the evidence passes it on its own, the evidence stands in for the answer."""
    if evidence.strip() and evidence_checks:
        return evidence, f"{problem}; its evidence, found in the text, stands in for it"
    return None, problem
