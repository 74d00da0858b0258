"""Workarounds for small models, in one place.

Each one answers a habit measured on the bundled SmolLM2-135M (a capable model does not trigger
them) and turns a reply that would otherwise be thrown away into one the text supports. None of
them lets through a value that is not written in the found quotes: they only choose which of the
text's own words stand for the answer.
"""

from __future__ import annotations

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
