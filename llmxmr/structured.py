"""One logical LLM call that must return a valid pydantic object.

The schema goes to the server for constrained decoding; the reply is still parsed leniently and
validated, because not every server enforces schemas. A reply that fails is sent back with the
error (a "reask"), up to ``attempts`` replies in all. A reply cut off at the length limit is asked
again under a tighter schema (every string and list capped to fit ``max_tokens``) for the rest of
the call's attempts, and at least once. Every text a reply holds is cut where it starts repeating
itself (``llmxmr.loops``), for every stage and model; an answer that is nothing but a loop is no
answer. Everything the call cost is recorded in a ``CallRecord``, failures included.

Loops are also stopped as they start. Every request goes with a watch (``LoopStop``) that a client
able to stream calls as the reply grows: it reads the partial JSON (pydantic's ``from_json`` with
``allow_partial``) and gives each string, alone or in a list, its own ``loops.LoopWatch``; once one
repeats itself, the call is stopped at once. The reply is then closed at its last complete value,
the field that looped kept up to where it was stopped, and read as any other: the same loop rule
(``without_loops``) cuts that field at the very repetition the watch found, since a repetition found
in a prefix is the one found in the whole. A stopped reply that does not validate (a required field
never written) is rescued as a reply cut at the length limit is. One exception keeps what a small
model gets right: where that rescue would follow, a loop that the schema's cap ends within a few
hundred characters is let run to it, and the reply goes on to its answer (``LoopStop``). A reply
that does not loop streams to its end and is read as before.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Literal, NamedTuple, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import from_json

from .clients.base import SERVER_PRIORITY, WATCH_STOP, ChatReply, ChatRequest, LLMClient
from .errors import LLMCallError
from .loops import LoopWatch, cut_loop, is_only_loop
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
# How much a streamed reply grows between two readings of its partial JSON (about eight tokens): a
# loop is stopped within that many characters of where it shows, and a reply of n characters is
# read n / PARSE_EVERY_CHARS times.
PARSE_EVERY_CHARS = 32
# What loops the schema caps may add to a reply, all told, before one is stopped although the stop
# costs a rescue (``LoopStop``): about what the rescue's reply would decode. A small model looping
# in one quote up to its cap (MAX_QUOTE_CHARS) and then writing its answer is let finish.
LOOP_ALLOWANCE_CHARS = 300
# How far a loop that would cost a rescue may run past the start of its repeated copy before it is
# stopped: small models often write their value two or three times and then go on with the reply
# (SmolLM2 copying a pass key, measured in the replayed integration scenarios, escaped within about
# 200 characters and answered); a loop still going past this is a runaway, which would otherwise
# decode to max_tokens.
LOOP_GRACE_CHARS = 400


@dataclass(frozen=True)
class PartialReply:
    """A reply's fields as they stream in (``call_structured``'s ``on_partial``): its partial JSON
    as parsed, the string being written included as far as it goes, before any loop is cut or
    anything validated. ``attempt`` counts the call's replies from 1: a rescue or a reask starts
    a new reply, whose fields start again from nothing."""

    attempt: int
    fields: dict[str, Any]


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
    on_partial: Callable[[PartialReply], None] | None = None,
) -> tuple[Output | None, CallRecord]:
    """The validated output, or None with the reason in ``record.error`` when the call failed.

    A failed call (bad replies, or an LLM error that retries could not fix) is this call's problem
    and is only recorded; an unreachable server concerns the whole run and propagates. Fields in
    ``omit_fields`` are left out of the schema sent (they keep their defaults); with
    ``max_string_chars`` (``llm.max_string_chars``), every string without a cap of its own gets
    that one. ``on_partial`` is given each reply's fields as they grow, when the client streams
    (``PartialReply``; each time the text grows, from the client's worker thread where it has
    one); the output returned is what counts."""
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
            stop = LoopStop(output_type, schema, _shown_as(on_partial, record.attempts))
            reply = await client.chat(request, stop)
            add_usage(record, reply)
            read = None
            if reply.finish_reason == WATCH_STOP:
                record.loop_stops.append(stop.field or "")
                record.loop_stop_tokens.append(reply.completion_tokens)
                read = _validated(stop.closed(reply.text), None, output_type)
            cut: Literal["length", "loop"] | None = "length" if reply.finish_reason == "length" else None
            if read is not None and read.output is None:
                cut = "loop"
            if cut and record.rescue_max_chars is None:
                # Rescue: ask again from the start, under a schema whose strings cannot add up to
                # more than the reply may hold. The cut reply is not sent back: a model that loops
                # inside a string would read its loop and go on with it. A reply stopped in a loop
                # is asked again in the same words, so its request is the one a loop cut at the
                # length limit made (and a recorded one still answers it).
                record.rescue_max_chars = rescue_string_chars(max_tokens, reply)
                record.rescued_from = cut
                schema = capped_lengths(schema, record.rescue_max_chars, tighten=True)
                conversation = [*messages, ChatMessage(role="user", content=_cut_off(record.rescue_max_chars))]
                allowed = max(allowed, record.attempts + 1)  # the rescue is always tried
                continue
            read = read or _validated(reply.text, reply.finish_reason, output_type)
            record.loops_cut += [name for name in read.loops_cut if name not in record.loops_cut]
            problem = read.problem
            if reply.finish_reason == WATCH_STOP:
                problem = f"Your reply began repeating itself and was stopped there. {problem}"
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


def rescue_string_chars(max_tokens: int, cut: ChatReply | None = None) -> int:
    """The longest string the rescue schema allows: a reply has at most ``RESCUE_STRINGS`` strings
    (three text fields and three quotes), and at ``CHARS_PER_TOKEN`` characters a token they fit in
    ``max_tokens`` with room for the JSON around them; at fewer, if the ``cut`` reply was written
    so (a loop of short tokens, "1. 1. 1.", runs near one character a token: under caps sized for
    prose it is cut again, and the rescue would change nothing). Bounded by ``RESCUE_MAX_CHARS``,
    since llama.cpp's grammar converter fails on very large ``maxLength`` values."""
    rate = float(CHARS_PER_TOKEN)
    if cut is not None and cut.completion_tokens and cut.text:
        rate = min(rate, len(cut.text) / cut.completion_tokens)
    return max(RESCUE_MIN_CHARS, min(RESCUE_MAX_CHARS, int(max_tokens * rate / RESCUE_STRINGS)))


def _cut_off(max_chars: int) -> str:
    return (
        "Your previous reply was cut off at the length limit. Reply again with only the JSON object, "
        f"every text field under {max_chars} characters."
    )


def add_usage(record: CallRecord, reply: ChatReply) -> None:
    """Adds what one reply cost to its call's record."""
    record.prompt_tokens += reply.prompt_tokens
    record.prompt_tokens_estimated += reply.prompt_tokens_estimated
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


class LoopStop:
    """The watch (``clients.base.ReplyWatch``) of one reply as it streams in: every
    ``PARSE_EVERY_CHARS`` characters it reads the partial JSON and feeds each string field (alone
    or in a list, each item on its own) to its own ``LoopWatch``. When one repeats itself it says
    stop (``field`` then names it), unless stopping would cost more than the loop: the reply closed
    there would not validate (a required field is still to come, so a rescue would follow), and
    either the schema sent ends the looping string within what is left of ``LOOP_ALLOWANCE_CHARS``
    (the loop is let run to its cap, the grammar's end of it, and the reply goes on) or the loop has
    not yet run ``LOOP_GRACE_CHARS`` past its repeated copy's start (a model may still go on). ``on_fields`` is
    given the fields parsed when they changed, read each time the text grows (a reply shown as it
    is written: the reduce's; the loops are still read every ``PARSE_EVERY_CHARS`` characters)."""

    def __init__(
        self,
        output_type: type[BaseModel] | None = None,
        schema: dict[str, Any] | None = None,
        on_fields: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.field: str | None = None
        self._output_type = output_type
        self._schema = schema
        self._on_fields = on_fields
        self._read_to = 0
        self._allowance = LOOP_ALLOWANCE_CHARS
        self._watches: dict[tuple[str, int | None], tuple[LoopWatch, str]] = {}
        self._let_run: dict[tuple[str, int | None], int] = {}  # loops left to their cap, and the cap
        self._shown: dict[str, Any] | None = None

    def __call__(self, text: str) -> bool:
        if self.field is not None:
            return True
        if len(text) < self._read_to:  # the client asked again after a stream broke off
            self._read_to, self._allowance, self._watches, self._let_run = 0, LOOP_ALLOWANCE_CHARS, {}, {}
        if len(text) - self._read_to < PARSE_EVERY_CHARS:
            if self._on_fields is not None:  # shown as it grows; read for loops every so often
                self._show(_partial_json(text, "trailing-strings"))
            return False
        self._read_to = len(text)
        fields = _partial_json(text, "trailing-strings")
        self._show(fields)
        if not fields:
            return False
        for name, value in fields.items():
            for index, item in _strings(value):
                if self._repeats((name, index), item) and not self._let_run_to_cap((name, index), item, text):
                    self.field = name
                    return True
        return False

    def _show(self, fields: dict[str, Any] | None) -> None:
        if self._on_fields is not None and fields and fields != self._shown:
            self._shown = fields
            self._on_fields(fields)

    def _repeats(self, key: tuple[str, int | None], text: str) -> bool:
        """Whether the string at ``key``, which has grown (or else is not read again), repeats."""
        watch, fed = self._watches.get(key, (None, ""))
        if watch is not None and text == fed:
            return False
        if watch is None or not text.startswith(fed):  # a value that did not just grow: read anew
            watch = LoopWatch()
        self._watches[key] = (watch, text)
        return watch.feed(text) is not None

    def _let_run_to_cap(self, key: tuple[str, int | None], value: str, text: str) -> bool:
        if key in self._let_run:  # unless the server does not hold the reply to the cap after all
            return len(value) <= self._let_run[key]
        if (
            self._output_type is not None
            and _validated(self.closed(text, key[0]), None, self._output_type).output is not None
        ):
            return False  # stopped, nothing is lost
        cap = _string_cap(self._schema, *key) if self._schema is not None else None
        if cap is not None and cap - len(value) <= self._allowance:
            self._allowance -= max(cap - len(value), 0)
            self._let_run[key] = cap
            return True
        return len(value) - self._repeated_from(key) < LOOP_GRACE_CHARS  # not a runaway yet

    def _repeated_from(self, key: tuple[str, int | None]) -> int:
        watch, _ = self._watches[key]
        assert watch.found is not None  # read by ``_repeats``, which found the loop
        return watch.found.copy

    def closed(self, text: str, field: str | None = None) -> str:
        """The JSON of a reply stopped at ``text``: closed at its last complete value, the field
        that looped (``field``, else ``self.field``; it may be the one being written) kept as far
        as it went."""
        fields = _partial_json(text, True)
        field = field or self.field
        if fields is None:
            return text
        if field is not None:
            written = _partial_json(text, "trailing-strings") or {}
            if field in written:
                fields[field] = written[field]
        return json.dumps(fields, ensure_ascii=False)


def _string_cap(schema: dict[str, Any], field: str, index: int | None) -> int | None:
    """The ``maxLength`` the schema sets on the string ``field`` (on its list's items, given an
    index), looked for in the object's properties and in each ``anyOf`` branch."""
    for branch in [schema, *(schema.get("anyOf") or [])]:
        spec = (branch.get("properties") or {}).get(field)
        if not isinstance(spec, dict):
            continue
        if index is not None:
            spec = spec.get("items") or {}
        for option in [spec, *(spec.get("anyOf") or [])]:
            if option.get("type") == "string" and isinstance(option.get("maxLength"), int):
                return int(option["maxLength"])
    return None


def _partial_json(text: str, partial: Literal[True, "trailing-strings"]) -> dict[str, Any] | None:
    """The object a reply's JSON holds so far (from its first brace), or None."""
    start = text.find("{")
    if start < 0:
        return None
    try:
        value = from_json(text[start:], allow_partial=partial)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _strings(value: Any) -> Iterator[tuple[int | None, str]]:
    """The strings of a field: the field itself (index None), or each item of a list."""
    if isinstance(value, str):
        yield None, value
    elif isinstance(value, list):
        yield from ((index, item) for index, item in enumerate(value) if isinstance(item, str))


def _shown_as(
    on_partial: Callable[[PartialReply], None] | None, attempt: int
) -> Callable[[dict[str, Any]], None] | None:
    if on_partial is None:
        return None
    return lambda fields: on_partial(PartialReply(attempt, fields))


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
