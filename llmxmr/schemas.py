"""Structured values exchanged with the model at each stage, and their JSON schemas.

Map and collapse share one protocol (the paper's "structured information protocol"), so a collapse
output can be collapsed again. The ``status`` field comes first: a chunk without relevant content
answers with the shortest valid object, and the pipeline drops it without parsing prose.
"""

from __future__ import annotations

import json
from enum import Enum
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_CONFIDENCE = 5.0


class Status(str, Enum):
    ANSWER = "answer"
    NO_INFORMATION = "no_information"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PartialAnswer(_Strict):
    """What one chunk (map) or one group of partial answers (collapse) says about the question."""

    status: Status = Field(
        description="'no_information' when the text holds nothing relevant to the question"
    )
    extracted_information: str = Field(
        description="the facts from the text that bear on the question, as close to the text as possible"
    )
    rationale: str = Field(description="how the information leads to the answer, with any inference named")
    answer: str = Field(description="the answer this text supports; empty when there is no information")
    confidence: float = Field(
        ge=0, le=MAX_CONFIDENCE, description="0 to 5: 5 only for an answer stated literally in the text"
    )

    @property
    def has_information(self) -> bool:
        return self.status is Status.ANSWER


class MapOutput(PartialAnswer):
    """The map stage's reply for one chunk."""


class CollapseOutput(PartialAnswer):
    """The collapse stage's reply for a group of consecutive partial answers."""


class FinalAnswer(_Strict):
    """The reduce stage's reply: one answer for the whole document."""

    rationale: str = Field(description="how the partial answers were weighed, conflicts included")
    answer: str = Field(description="the final answer to the question")
    confidence: float = Field(ge=0, le=MAX_CONFIDENCE, description="0 to 5")
    supporting_chunks: list[int] = Field(
        default_factory=list, description="indices of the chunks whose information the answer rests on"
    )

    @field_validator("supporting_chunks")
    @classmethod
    def _sorted_unique(cls, value: list[int]) -> list[int]:
        return sorted(set(value))


@cache
def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The schema sent for constrained decoding: all fields required, in declaration order."""
    schema = model.model_json_schema()
    schema["required"] = list(schema["properties"])
    return schema


@cache
def json_schema_text(model: type[BaseModel]) -> str:
    """Byte-identical schema text for every call of a run (servers cache compiled grammars by it)."""
    return json.dumps(json_schema(model), sort_keys=True, separators=(",", ":"))
