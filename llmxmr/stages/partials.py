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
    first, last = chunk_indices[0], chunk_indices[-1]
    return f"Chunk {first}" if first == last else f"Chunks {first}-{last}"


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
