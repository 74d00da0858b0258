"""One logical LLM call that must return a valid pydantic object.

The schema goes to the server for constrained decoding; the reply is still parsed leniently and
validated, because not every server enforces schemas. A reply that fails is sent back with the
error (a "reask"), up to ``attempts`` replies in all. A reply cut off at the length limit is asked
again under a tighter schema (every string and list capped to fit ``max_tokens``) for the rest of
the call's attempts, and at least once. Every text a reply holds is cut where it starts repeating
itself (``llmxmr.loops``), for every stage and model; an answer that is nothing but a loop is no
answer. Everything the call cost is recorded in a ``CallRecord``, failures included.
"""

from __future__ import annotations

import json
import time
from typing import Any, Generic, NamedTuple, TypeVar

from pydantic import BaseModel, ValidationError

from .clients.base import SERVER_PRIORITY, ChatReply, ChatRequest, LLMClient
from .errors import LLMCallError
from .loops import cut_loop, is_only_loop
from .parsing import parse_reply
from .prompts import ChatMessage
from .schemas import capped_lengths, json_schema
from .trace import CallRecord

Output = TypeVar("Output", bound=BaseModel)

# The rescue of a reply cut at the length limit (see ``rescue_string_chars``).
RESCUE_STRINGS = 8
CHARS_PER_TOKEN = 3
RESCUE_MIN_CHARS = 40
RESCUE_MAX_CHARS = 400
# The field that holds a reply's answer: one that is nothing but a loop is left empty, and the
# schema's rule for an empty answer applies (no information, or a bad reply).
ANSWER_FIELD = "answer"
LOOP_ONLY = "Your answer only repeated itself; give the answer itself, once."


async def call_structured(
    client: LLMClient,
    messages: list[ChatMessage],
    output_type: type[Output],
    *,
    stage: str,
    chunk_indices: list[int],
    max_tokens: int,
    temperature: float,
    attempts: int,
    omit_fields: tuple[str, ...] = (),
    max_string_chars: int | None = None,
) -> tuple[Output | None, CallRecord]:
    """The validated output, or None with the reason in ``record.error`` when the call failed.

    A failed call (bad replies, or an LLM error that retries could not fix) is this call's problem
    and is only recorded; an unreachable server concerns the whole run and propagates. Fields in
    ``omit_fields`` are left out of the schema sent (they keep their defaults); with
    ``max_string_chars`` (``llm.max_string_chars``), every string without a cap of its own gets
    that one."""
    record = CallRecord(stage=stage, chunk_indices=chunk_indices)
    conversation = list(messages)
    schema = json_schema(output_type, omit_fields)
    if max_string_chars:
        schema = capped_lengths(schema, max_string_chars)
    started = time.perf_counter()
    try:
        allowed = attempts
        while record.attempts < allowed:
            request = ChatRequest(
                messages=conversation,
                max_tokens=max_tokens,
                temperature=temperature,
                schema_name=output_type.__name__,
                json_schema=schema,
                priority=SERVER_PRIORITY.get(stage, 0),
            )
            record.attempts += 1
            reply = await client.chat(request)
            add_usage(record, reply)
            cut = reply.finish_reason == "length"
            if cut and record.rescue_max_chars is None:
                # Rescue: ask again from the start, under a schema whose strings cannot add up to
                # more than the reply may hold. The cut reply is not sent back: a model that loops
                # inside a string would read its loop and go on with it.
                record.rescue_max_chars = rescue_string_chars(max_tokens)
                schema = capped_lengths(schema, record.rescue_max_chars, tighten=True)
                conversation = [*messages, ChatMessage(role="user", content=_cut_off(record.rescue_max_chars))]
                allowed = max(allowed, record.attempts + 1)  # the rescue is always tried
                continue
            read = _validated(reply.text, reply.finish_reason, output_type)
            record.loops_cut += [name for name in read.loops_cut if name not in record.loops_cut]
            problem = read.problem
            if read.output is not None:
                record.output = read.output.model_dump(mode="json")
                return read.output, record
            conversation = [
                *messages,
                ChatMessage(role="assistant", content=read.shown),
                ChatMessage(role="user", content=f"{problem} Reply again with only the corrected JSON object."),
            ]
        record.error = f"no valid {output_type.__name__} after {record.attempts} attempt(s): {problem}"
        record.error_kind = "invalid"
    except LLMCallError as exc:
        record.error = str(exc)
        record.error_kind = "transport"
        record.transport_retries += exc.transport_retries
    finally:
        record.latency_s = round(time.perf_counter() - started, 4)
    return None, record


def rescue_string_chars(max_tokens: int) -> int:
    """The longest string the rescue schema allows: a reply has at most ``RESCUE_STRINGS`` strings
    (three text fields and three quotes), and at ``CHARS_PER_TOKEN`` characters a token they fit in
    ``max_tokens`` with room for the JSON around them. Bounded by ``RESCUE_MAX_CHARS``, since
    llama.cpp's grammar converter fails on very large ``maxLength`` values."""
    return max(RESCUE_MIN_CHARS, min(RESCUE_MAX_CHARS, int(max_tokens * CHARS_PER_TOKEN / RESCUE_STRINGS)))


def _cut_off(max_chars: int) -> str:
    return (
        "Your previous reply was cut off at the length limit. Reply again with only the JSON object, "
        f"every text field under {max_chars} characters."
    )


def add_usage(record: CallRecord, reply: ChatReply) -> None:
    """Adds what one reply cost to its call's record."""
    record.prompt_tokens += reply.prompt_tokens
    record.completion_tokens += reply.completion_tokens
    record.transport_retries += reply.transport_retries
    record.cache_hits += reply.from_cache
    if reply.cached_tokens is not None:
        record.cached_tokens = (record.cached_tokens or 0) + reply.cached_tokens


def without_loops(fields: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The fields of a parsed reply with every string, alone or in a list, cut at its first
    repetition (``loops.cut_loop``), and the names of the fields cut, in order."""
    kept: dict[str, Any] = {}
    for name, value in fields.items():
        if isinstance(value, str):
            kept[name] = cut_loop(value)
        elif isinstance(value, list):
            kept[name] = [cut_loop(item) if isinstance(item, str) else item for item in value]
        else:
            kept[name] = value
    return kept, [name for name in fields if kept[name] != fields[name]]


class _Reading(NamedTuple, Generic[Output]):
    output: Output | None
    problem: str  # why there is no output, said to the model
    loops_cut: list[str]  # the fields cut at a loop
    shown: str  # the reply as it was read, for a reask: without the loops it held


def _validated(text: str, finish_reason: str | None, output_type: type[Output]) -> _Reading[Output]:
    if finish_reason == "length":
        return _Reading(None, "Your reply was cut off at the length limit; keep every field shorter.", [], text)
    fields = parse_reply(text)
    if fields is None:
        return _Reading(None, "Your reply was not a JSON object.", [], text)
    known = {key: value for key, value in fields.items() if key in output_type.model_fields}
    only_loop = isinstance(known.get(ANSWER_FIELD), str) and is_only_loop(known[ANSWER_FIELD])
    kept, cut = without_loops(known)
    shown = json.dumps(kept, ensure_ascii=False) if cut else text  # a loop read again goes on
    try:
        return _Reading(output_type.model_validate({**kept, ANSWER_FIELD: ""} if only_loop else kept), "", cut, shown)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'reply'}: {error['msg']}"
            for error in exc.errors()
            if not (only_loop and error["loc"] == (ANSWER_FIELD,))
        )
        problem = f"Your reply did not match the required fields ({problems})." if problems else ""
        return _Reading(None, f"{LOOP_ONLY} {problem}".strip() if only_loop else problem, cut, shown)
