"""Structured values exchanged with the model at each stage, and their JSON schemas.

Map and collapse share one protocol (the paper's "structured information protocol"), so a collapse
output can be collapsed again. "No information" is explicit: ``answer`` is null (the paper writes
"[NO INFORMATION]"). It is decided after the model has copied what it found, never before: asked to
declare a status first, small models declare "no information" and then quote the answer anyway.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

MAX_CONFIDENCE = 5.0
MAX_QUOTES = 3
# Longest quote the schema lets a model write. Quotes are a sentence or less; the cap also ends a
# small model's loop inside a quote ("The pass key is 71432. The pass key is 71432. ...") before it
# eats the reply's max_tokens, on servers as well as in the embedded model.
MAX_QUOTE_CHARS = 300
NO_INFORMATION_MARK = "[NO INFORMATION]"


def _clamp_confidence(value: object) -> object:
    """Scores off the 0-5 scale are read as its ends: servers that constrain JSON structure do not
    all constrain number ranges, and a model that writes 10 or 100 means "certain"."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return value  # not a number: validation says so
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return min(max(float(value), 0.0), MAX_CONFIDENCE)
    return value


def _first_quotes(value: object) -> object:
    """Quotes past the first ``MAX_QUOTES`` are dropped rather than failing the reply: the answer
    rests on the first ones, and not every server enforces ``maxItems``."""
    if isinstance(value, str):
        value = [value] if value.strip() else []
    if isinstance(value, list):
        return [quote for quote in value if not isinstance(quote, str) or quote.strip()][:MAX_QUOTES]
    return value


# A 0-5 score: the schema states the range, validation clamps values off it.
Confidence = Annotated[
    float,
    BeforeValidator(_clamp_confidence),
    Field(json_schema_extra={"minimum": 0, "maximum": MAX_CONFIDENCE}),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PartialAnswer(_Strict):
    """What one chunk (map) or one group of partial answers (collapse) says about the question."""

    extracted_information: str = Field(
        description="the facts from the text that bear on the question, as close to the text as possible"
    )
    # Checked by code against the document (``llmxmr.grounding``); families that do not quote
    # (summaries) leave it out of the schema they send.
    evidence: Annotated[list[str], BeforeValidator(_first_quotes)] = Field(
        default_factory=list,
        description=f"up to {MAX_QUOTES} short quotes copied word for word from the text that support the answer",
        json_schema_extra={"maxItems": MAX_QUOTES, "items": {"type": "string", "maxLength": MAX_QUOTE_CHARS}},
    )
    rationale: str = Field(description="how the information leads to the answer, with any inference named")
    answer: str | None = Field(description="the answer this text supports; null when it holds no relevant information")
    confidence: Confidence = Field(description="0 to 5: 5 only for an answer stated literally in the text")

    @field_validator("answer")
    @classmethod
    def _no_information_is_null(cls, value: str | None) -> str | None:
        if value is None or not value.strip() or value.strip().upper() == NO_INFORMATION_MARK:
            return None
        return value

    @property
    def has_information(self) -> bool:
        return self.answer is not None


class MapOutput(PartialAnswer):
    """The map stage's reply for one chunk."""


class NothingFirstMapOutput(MapOutput):
    """The map reply shaped so that "nothing here" is said first, and is all that is said: its
    schema (``json_schema``) is either ``{"relevant": false}`` or ``{"relevant": true, ...}``
    followed by the fields of ``MapOutput`` in their extract-then-decide order. A chunk that holds
    nothing costs a handful of decoded tokens instead of a page of extracted text; one that holds
    something is read as before (``llm.map_reply``)."""

    relevant: bool = Field(default=True, description="false when this part holds nothing that bears on the question")

    @model_validator(mode="before")
    @classmethod
    def _nothing_here(cls, data: Any) -> Any:
        # "Nothing here" ends the reply: whatever a server that does not enforce the schema let
        # the model write after it is not part of the answer.
        if isinstance(data, dict) and data.get("relevant") is False:
            return {"relevant": False, "extracted_information": "", "rationale": "", "answer": None, "confidence": 0}
        return data


class CollapseOutput(PartialAnswer):
    """The collapse stage's reply for a group of consecutive partial answers."""


class FinalAnswer(_Strict):
    """The reduce stage's reply: one answer for the whole document."""

    rationale: str = Field(description="how the partial answers were weighed, conflicts included")
    answer: str = Field(description="the final answer to the question")
    confidence: Confidence = Field(description="0 to 5")
    supporting_chunks: list[int] = Field(
        default_factory=list, description="indices of the chunks whose information the answer rests on"
    )

    @field_validator("answer")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        # The reduce runs only when some chunk held information, so an empty answer is a bad reply;
        # so is one that is nothing but a loop, which ``structured`` leaves empty.
        if not value.strip():
            raise ValueError("the answer is empty")
        return value

    @field_validator("supporting_chunks")
    @classmethod
    def _sorted_unique(cls, value: list[int]) -> list[int]:
        return sorted(set(value))


@cache
def json_schema(model: type[BaseModel], without: tuple[str, ...] = ()) -> dict[str, Any]:
    """The schema sent for constrained decoding: all fields required, in declaration order, less
    the fields named in ``without`` (their defaults apply)."""
    if issubclass(model, NothingFirstMapOutput):
        return _nothing_first(json_schema(MapOutput, without))
    schema = model.model_json_schema()
    schema["properties"] = {name: spec for name, spec in schema["properties"].items() if name not in without}
    schema["required"] = list(schema["properties"])
    return schema


def _nothing_first(reply: dict[str, Any]) -> dict[str, Any]:
    """Either ``{"relevant": false}`` and nothing more, or ``reply`` with ``"relevant": true``
    first: a constrained decoder lets the model end a reply about nothing after its first value."""
    nothing = {
        "type": "object",
        "properties": {"relevant": {"const": False}},
        "required": ["relevant"],
        "additionalProperties": False,
    }
    something = {
        **reply,
        "properties": {"relevant": {"const": True}, **reply["properties"]},
        "required": ["relevant", *reply["required"]],
    }
    something.pop("title", None)
    return {"title": NothingFirstMapOutput.__name__, "anyOf": [nothing, something]}


# Small models decoding greedily repeat themselves inside a string until max_tokens; a length cap in
# the grammar turns that loop into a short, valid reply (``llm.max_string_chars``). Longest list a
# reply may hold (the reduce's supporting chunk numbers), for the same reason.
MAX_LIST_ITEMS = 32


def capped_lengths(schema: Any, max_chars: int, *, tighten: bool = False) -> Any:
    """A copy of a JSON schema in which every string without a ``maxLength`` gets ``max_chars``
    and every array without ``maxItems`` gets ``MAX_LIST_ITEMS``; with ``tighten``, caps already
    there are lowered to these too (the rescue of a reply cut off at the length limit)."""
    if isinstance(schema, list):
        return [capped_lengths(item, max_chars, tighten=tighten) for item in schema]
    if not isinstance(schema, dict):
        return schema
    capped = {key: capped_lengths(value, max_chars, tighten=tighten) for key, value in schema.items()}
    for kind, key, cap in (("string", "maxLength", max_chars), ("array", "maxItems", MAX_LIST_ITEMS)):
        if capped.get("type") == kind:
            capped[key] = min(capped.get(key, cap), cap) if tighten else capped.get(key, cap)
    return capped
