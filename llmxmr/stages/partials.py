"""Partial answers as they travel from map through collapse to reduce."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from ..schemas import PartialAnswer


class Partial(BaseModel):
    """A partial answer and the chunks it speaks for (one after map, several after collapse)."""

    model_config = ConfigDict(frozen=True)

    chunk_indices: list[int]
    answer: PartialAnswer


def label(chunk_indices: list[int]) -> str:
    """"Chunk 3", "Chunks 3-5", or "Chunks 3, 5, 9" when chunks without information fell out."""
    first, last = chunk_indices[0], chunk_indices[-1]
    if first == last:
        return f"Chunk {first}"
    if last - first + 1 == len(chunk_indices):
        return f"Chunks {first}-{last}"
    return "Chunks " + ", ".join(str(index) for index in chunk_indices)


def render_partial(partial: Partial) -> str:
    answer = partial.answer
    return (
        f"### {label(partial.chunk_indices)} (confidence {answer.confidence:g})\n"
        f"Information: {answer.extracted_information}\n"
        f"Rationale: {answer.rationale}\n"
        f"Answer: {answer.answer}"
    )


def render_partials(partials: list[Partial]) -> str:
    return "\n\n".join(render_partial(partial) for partial in partials)
