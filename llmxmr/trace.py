"""What a run did: one record per LLM call, plus totals."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, Field, computed_field

# The stages of a map-reduce run. Other code labels its own calls (``llmxmr.direct``'s "direct",
# a harness's "judge"): the core needs no list of them.
CallStage = Literal["map", "collapse", "reduce"]


class CallRecord(BaseModel):
    """One logical call (all its attempts): where it belongs, what it cost, what it returned."""

    stage: str  # a CallStage, or the label of a call made outside a map-reduce run
    chunk_indices: list[int]
    # The model that answered (``LLMClient.model_name``: the id its server lists, or the embedded
    # GGUF's path): each stage may have its own (``stages`` in configs/default.yaml).
    model: str | None = None
    attempts: int = 0
    transport_retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int | None = None
    cache_hits: int = 0  # replies the reply cache gave (--cache) instead of the model
    latency_s: float = 0.0  # from its first request sent to its last reply, all attempts
    # When its first request was sent, in seconds from the start of its run (the pipeline's
    # clock, which ``Trace.wall_time_s`` ends), and how long it had waited before that for a slot
    # of the call budget (a map also for the call that warms its prefix). None for a call not
    # made (an identical call's reply, ``llmxmr.reuse``) and for calls made outside a run.
    sent_s: float | None = None
    queued_s: float | None = None
    # Replies whose prompt tokens the server did not report (a stream without usage), counted in
    # ``prompt_tokens`` by the client's estimate (``ChatReply.prompt_tokens_estimated``).
    prompt_tokens_estimated: int = 0
    # Set when a reply was cut off at the length limit, or stopped in a loop without the fields it
    # needs, and the call went on under a schema whose strings are capped at this many characters
    # (``structured.rescue_string_chars``); ``rescued_from`` says which.
    rescue_max_chars: int | None = None
    rescued_from: Literal["length", "loop"] | None = None
    # The fields of its replies cut where they started repeating themselves, in the order met
    # (``structured.without_loops``); an answer that was nothing but a loop was left empty.
    loops_cut: list[str] = Field(default_factory=list)
    # Replies stopped as they streamed in, when a field began to repeat itself
    # (``structured.LoopStop``): that field of each, and the completion tokens each had decoded.
    loop_stops: list[str] = Field(default_factory=list)
    loop_stop_tokens: list[int] = Field(default_factory=list)
    output: dict[str, Any] | None = None
    # What a check of the output against the text decided, when it did not simply pass (a
    # retrieval answer absent from its chunk is set aside, or replaced by verified evidence).
    check: str | None = None
    error: str | None = None
    # "transport": the server could not be made to answer (retrying later may help); "invalid":
    # it answered, but never with a valid reply (the model's failure, part of its score).
    error_kind: Literal["transport", "invalid"] | None = None


class ModelTotals(BaseModel):
    """The calls one model answered, and their tokens."""

    stages: list[str]  # the stages of its calls, in the order met
    calls: int
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cache_hits: int


# The key of calls whose model is not recorded (traces written before calls named it).
UNKNOWN_MODEL = "unknown"


def by_model(records: list[CallRecord]) -> dict[str, ModelTotals]:
    """The calls and tokens of each model, in the order met."""
    grouped: dict[str, list[CallRecord]] = {}
    for record in records:
        grouped.setdefault(record.model or UNKNOWN_MODEL, []).append(record)
    return {
        model: ModelTotals(
            stages=list(dict.fromkeys(record.stage for record in calls)),
            calls=len(calls),
            requests=sum(record.attempts for record in calls),
            prompt_tokens=sum(record.prompt_tokens for record in calls),
            completion_tokens=sum(record.completion_tokens for record in calls),
            cache_hits=sum(record.cache_hits for record in calls),
        )
        for model, calls in grouped.items()
    }


def summed_models(each: Iterable[dict[str, ModelTotals]]) -> dict[str, ModelTotals]:
    """Per-model totals added up (of a batch's results), each model in the order met."""
    summed: dict[str, ModelTotals] = {}
    for totals in each:
        for model, add in totals.items():
            have = summed.get(model)
            summed[model] = (
                add
                if have is None
                else ModelTotals(
                    stages=list(dict.fromkeys([*have.stages, *add.stages])),
                    calls=have.calls + add.calls,
                    requests=have.requests + add.requests,
                    prompt_tokens=have.prompt_tokens + add.prompt_tokens,
                    completion_tokens=have.completion_tokens + add.completion_tokens,
                    cache_hits=have.cache_hits + add.cache_hits,
                )
            )
    return summed


class Totals(BaseModel):
    calls: int  # logical calls: one per chunk mapped, group collapsed, reduce
    requests: int  # replies asked of the model: calls plus re-asks after invalid replies
    failed_calls: int
    prompt_tokens: int
    completion_tokens: int
    # Prompt tokens the server took from its prefix cache, where it says so (SGLang with
    # --enable-cache-report, vLLM, llama.cpp's timings, the embedded model's reused prefix), and
    # the rest, which it computed.
    cached_tokens: int
    computed_tokens: int
    cache_hits: int
    wall_time_s: float
    by_model: dict[str, ModelTotals] = {}  # the same, per model that answered (``CallRecord.model``)


class Trace(BaseModel):
    calls: list[CallRecord] = Field(default_factory=list)
    wall_time_s: float = 0.0
    # Texts whose tokens the server did not count in time, estimated instead (on the large side):
    # see ``clients.tokenize.ServerTokenCounter``.
    estimated_token_counts: int = 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def totals(self) -> Totals:
        return Totals(
            calls=len(self.calls),
            requests=sum(record.attempts for record in self.calls),
            failed_calls=sum(1 for record in self.calls if record.error),
            prompt_tokens=sum(record.prompt_tokens for record in self.calls),
            completion_tokens=sum(record.completion_tokens for record in self.calls),
            cached_tokens=sum(record.cached_tokens or 0 for record in self.calls),
            computed_tokens=sum(record.prompt_tokens - (record.cached_tokens or 0) for record in self.calls),
            cache_hits=sum(record.cache_hits for record in self.calls),
            wall_time_s=round(self.wall_time_s, 3),
            by_model=by_model(self.calls),
        )
