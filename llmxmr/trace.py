"""What a run did: one record per LLM call, plus totals."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, computed_field

# The stages of a map-reduce run. Other code labels its own calls (``llmxmr.direct``'s "direct",
# a harness's "judge"): the core needs no list of them.
CallStage = Literal["map", "collapse", "reduce"]


class CallRecord(BaseModel):
    """One logical call (all its attempts): where it belongs, what it cost, what it returned."""

    stage: str  # a CallStage, or the label of a call made outside a map-reduce run
    chunk_indices: list[int]
    attempts: int = 0
    transport_retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int | None = None
    cache_hits: int = 0  # replies the reply cache gave (--cache) instead of the model
    latency_s: float = 0.0
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
        )
