"""What a run will cost, before it is paid (``--dry-run``): chunks, calls and prompt tokens per
stage, and how many of the map prompt tokens a prefix cache can serve.

Nothing here calls the model. The figures are a walk over the plan a run would follow
(``plan.plan_reading``: the client's token counter and context window, the token plans, the
chunks), with the run's map messages and its collapse rounds (``collapse.collapse_round``). So:

* **map** is exact: one call per chunk and question, and the prompt tokens of every one of them,
  counted as ``budget.prompt_tokens`` counts a prompt (a reask, after a reply that fails
  validation, is extra); but a call identical to an earlier one (the same chunk text and
  question: repeated text) is not made (``llmxmr.reuse``) and not counted. Within a document
  always; across documents with ``across_documents``, as a batch shares its calls.
* **collapse** and **reduce** are upper bounds: their prompts hold the map replies, unknown until
  the run. See ``_later_stages``.
* **cacheable** and **computed** split the map prompt tokens as a perfect prefix cache would, with
  the document-first layout: the map system message (the same for every map call of the family)
  is computed once, each chunk's prefix (that message, the opening tag and the chunk) once per
  chunk, and the rest of each prompt (the question and the short ask) once per call. Each part
  is the count of its own rendered text, not a share of a total.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel, computed_field

from .budget import (
    PARTIAL_HEADER_TOKENS,
    TEMPLATE_TOKENS_PER_MESSAGE,
    ModelWindow,
    TokenPlan,
    prompt_tokens,
    prompts_tokens,
)
from .clients.base import LLMClient
from .config import PipelineConfig
from .documents import read_text
from .errors import UsageError
from .plan import ReadingPlan, plan_reading
from .prompts import ChatMessage
from .stage_models import ModelUse, StageClients, short_model_name, stage_models
from .stages.collapse import collapse_messages, collapse_round
from .stages.map import map_messages, map_prefix
from .stages.reduce import reduce_messages
from .tokens import TokenCounter

if TYPE_CHECKING:
    from .batch import BatchItem

T = TypeVar("T")


class StageCost(BaseModel):
    """Calls of one stage and the prompt tokens they send."""

    calls: int
    prompt_tokens: int
    bound: bool  # True: at most this many (collapse, reduce); False: exactly (map)


def _summed(stages: Iterable[StageCost]) -> StageCost:
    """Stages added up: a bound if any of them is."""
    stages = list(stages)
    return StageCost(
        calls=sum(s.calls for s in stages),
        prompt_tokens=sum(s.prompt_tokens for s in stages),
        bound=any(s.bound for s in stages),
    )


class DocumentCost(BaseModel):
    """One document and the questions asked of it."""

    questions: int
    chunks: int
    chunk_tokens: int  # most document tokens per chunk (the token plan's)
    map: StageCost  # exact
    # Map calls not made, and not in ``map``: identical to an earlier one (repeated text).
    reused_calls: int = 0
    collapse: StageCost  # at most
    reduce: StageCost  # at most: one call per question, when some chunk finds something
    # Under a perfect prefix cache: each chunk's prefix beyond the map system message, summed over
    # the chunks (computed once per chunk), and the rest of each map prompt, summed over the calls
    # (computed once per call).
    chunk_prefix_tokens: int
    question_tokens: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def computed_tokens(self) -> int:
        """Map prompt tokens a perfect prefix cache still computes, the system message aside."""
        return self.chunk_prefix_tokens + self.question_tokens


class EstimatedModel(ModelUse):
    """A model of the run, with what sizes its stages' prompts."""

    window: int
    tokenizer: str
    exact_counts: bool


class CostEstimate(BaseModel):
    """What a run over these documents will cost, before any call is made."""

    model: str  # the client, or each stage's (``StageModels.describe``)
    # The model profile whose settings apply (PipelineConfig.for_model), when every stage's model
    # has the same one.
    model_profile: str | None
    task_type: str
    tokenizer: str  # the map model's, as ``exact_counts`` and ``window``: they size the chunks
    exact_counts: bool  # the counter counts the served model's own tokens (else: tiktoken's estimate)
    window: int
    instructions_tokens: int  # the map system message, shared by every map call: computed once
    documents: list[DocumentCost]
    # Each model of the run and its stages (one, unless stages have models of their own).
    models: list[EstimatedModel] = []

    @computed_field  # type: ignore[prop-decorator]
    @property
    def questions(self) -> int:
        return sum(d.questions for d in self.documents)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def chunks(self) -> int:
        return sum(d.chunks for d in self.documents)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def map(self) -> StageCost:
        return _summed(d.map for d in self.documents)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def reused_calls(self) -> int:
        """Map calls not made: identical to an earlier one."""
        return sum(d.reused_calls for d in self.documents)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def collapse(self) -> StageCost:
        return _summed(d.collapse for d in self.documents)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def reduce(self) -> StageCost:
        return _summed(d.reduce for d in self.documents)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total(self) -> StageCost:
        return _summed((self.map, self.collapse, self.reduce))

    @computed_field  # type: ignore[prop-decorator]
    @property
    def by_model(self) -> dict[str, StageCost]:
        """The calls and prompt tokens of each model (``CallRecord.model``): its stages' figures."""
        stages: dict[str, list[str]] = {}
        for use in self.models:
            stages.setdefault(use.model, []).extend(use.stages)
        return {model: _summed(getattr(self, stage) for stage in named) for model, named in stages.items()}

    @computed_field  # type: ignore[prop-decorator]
    @property
    def computed_tokens(self) -> int:
        """Map prompt tokens a perfect prefix cache computes: the system message once, each
        chunk's prefix once, each question's part per call."""
        return self.instructions_tokens + sum(d.computed_tokens for d in self.documents)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cacheable_tokens(self) -> int:
        """Map prompt tokens a perfect prefix cache serves from an earlier call."""
        return self.map.prompt_tokens - self.computed_tokens


async def estimate_cost(
    config: PipelineConfig,
    client: LLMClient | StageClients,
    documents: Iterable[tuple[str, Sequence[str]]],
    *,
    across_documents: bool = False,
) -> CostEstimate:
    """The cost of answering each document's questions with ``MapReducePipeline.arun_many`` (one
    reading per document), without calling the model. The client (each stage's, given
    ``StageClients``) gives the context window and the token counter, as in a run; it is left
    open. Documents are taken one at a time, so an iterator that reads each when its turn comes
    holds one at once. A map call identical to an earlier one is not counted: within its document,
    and ``across_documents`` too (a batch's runs share their calls; separate runs do not)."""
    models = await stage_models(config, client if isinstance(client, StageClients) else StageClients.every(client))
    config = models.map.config
    costs: list[DocumentCost] = []
    instructions: int | None = None
    sampled = config.llm.temperature > 0 and not config.llm.cache_sampled  # every call a draw of its own
    seen = _SeenCalls(sharing=not sampled)
    for text, questions in documents:
        plan = await plan_reading(models, questions, text)
        if instructions is None:  # the map system message: the same for every document
            instructions = _prefix_tokens(map_prefix(plan.prompts), plan.counter)
        if not across_documents:
            seen = _SeenCalls(sharing=not sampled)
        costs.append(await asyncio.to_thread(_document_cost, plan, instructions, seen))
    if instructions is None:
        raise UsageError("no document to estimate")
    estimated = []
    sized_by: dict[str, ModelWindow] = {stage: window for stage, window in plan.models.items()}
    for use in models.uses():
        sizing = sized_by[use.stages[0]]
        counter = sizing.counter
        estimated.append(
            EstimatedModel(**use.model_dump(), window=sizing.window, tokenizer=counter.name, exact_counts=counter.exact)
        )
    return CostEstimate(
        model=models.describe(),
        model_profile=models.profile,
        task_type=config.task_type,
        tokenizer=plan.counter.name,
        exact_counts=plan.counter.exact,
        window=plan.window,
        instructions_tokens=instructions,
        documents=costs,
        models=estimated,
    )


def _prefix_tokens(messages: list[ChatMessage], counter: TokenCounter) -> int:
    """The tokens of messages that every prompt extending them begins with: ``prompt_tokens``
    without the generation prompt, which only a whole prompt ends with."""
    return prompt_tokens(messages, counter) - TEMPLATE_TOKENS_PER_MESSAGE


class _SeenCalls:
    """The map calls an estimate has counted (by digests of their chunk text and question), and
    the chunk texts whose prefix it has: an identical call is not made (``llmxmr.reuse``), and a
    perfect prefix cache computes a chunk's prefix once. Without ``sharing``, every call counts."""

    def __init__(self, *, sharing: bool) -> None:
        self.sharing = sharing
        self._calls: set[tuple[bytes, str]] = set()
        self._texts: set[bytes] = set()

    def new_calls(self, chunk_text: str, questions: Sequence[str]) -> tuple[list[str], bool]:
        """The questions whose call of this chunk is made, and whether its prefix is new."""
        if not self.sharing:
            return list(questions), True
        text = hashlib.sha256(chunk_text.encode("utf-8", "surrogatepass")).digest()
        asked = [q for q in dict.fromkeys(questions) if (text, q) not in self._calls]
        self._calls.update((text, q) for q in asked)
        new_text = text not in self._texts
        self._texts.add(text)
        return asked, new_text


def _document_cost(plan: ReadingPlan, instructions: int, seen: _SeenCalls) -> DocumentCost:
    prompts, counter, questions, chunks = plan.prompts, plan.counter, plan.questions, plan.chunks
    map_calls = map_tokens = chunk_prefixes = question_parts = 0
    for chunk in chunks:  # one chunk at a time: a long document's prompts are never all held at once
        asked, new_text = seen.new_calls(chunk.text, questions)
        if not asked:
            continue
        *calls, prefix = prompts_tokens(
            [*(map_messages(prompts, question, chunk.text) for question in asked), map_prefix(prompts, chunk.text)],
            counter,
        )
        prefix -= TEMPLATE_TOKENS_PER_MESSAGE  # the chunk's prefix ends before any generation prompt
        map_calls += len(calls)
        map_tokens += sum(calls)
        chunk_prefixes += prefix - instructions if new_text else 0
        question_parts += sum(calls) - prefix * len(calls)
    later = [
        _later_stages(plan, question, token_plan)
        for question, token_plan in zip(questions, plan.token_plans, strict=True)
    ]
    return DocumentCost(
        questions=len(questions),
        chunks=len(chunks),
        chunk_tokens=plan.chunk_tokens,
        map=StageCost(calls=map_calls, prompt_tokens=map_tokens, bound=False),
        reused_calls=len(chunks) * len(questions) - map_calls,
        collapse=StageCost(
            calls=sum(calls for calls, _, _ in later), prompt_tokens=sum(t for _, t, _ in later), bound=True
        ),
        reduce=StageCost(calls=len(questions), prompt_tokens=sum(t for _, _, t in later), bound=True),
        chunk_prefix_tokens=chunk_prefixes,
        question_tokens=question_parts,
    )


def _later_stages(plan: ReadingPlan, question: str, token_plan: TokenPlan) -> tuple[int, int, int]:
    """At most how many collapse calls one question makes, their prompt tokens, and the prompt
    tokens of its reduce call.

    The collapse rounds are ``collapse.collapse_round``'s, as the pipeline's schedulers make them,
    with every chunk answering and every partial answer as large as its reply may be:
    ``generation.map_max_tokens`` plus the header after the map, and the larger of that and
    ``generation.collapse_max_tokens`` plus the header after a collapse (the token plan's own
    assumption). Smaller partials only do better: greedy grouping of consecutive
    partials under a budget closes a group only when it holds at least as many as a group of the
    largest ones, so no round of a run has more partials or merges than the simulated round, and
    a run stops collapsing no later. A round's collapse prompts hold at most all of its partials,
    and the reduce prompt at most the reduce budget or the largest round's partials, whichever is
    smaller.

    The assumption is the token plan's, and a merged partial can break it: it also shows the
    verified quotes it carries forward from its inputs (``QuotingFamily.ground_collapse``), so
    when many chunks answer, merged partials grow with their groups and a run can take more
    rounds than simulated."""
    collapsing, reducing = plan.models["collapse"], plan.models["reduce"]
    collapse_fixed = prompt_tokens(collapse_messages(plan.prompts, question, []), collapsing.counter)
    reduce_fixed = prompt_tokens(reduce_messages(plan.prompts, question, []), reducing.counter)
    sizes = [plan.models["map"].config.generation.map_max_tokens + PARTIAL_HEADER_TOKENS] * len(plan.chunks)
    merged_size = max(collapsing.config.generation.collapse_max_tokens + PARTIAL_HEADER_TOKENS, sizes[0])
    calls = tokens = 0
    reduce_input = min(sum(sizes), token_plan.reduce_tokens)
    while (groups := collapse_round(sizes, token_plan.collapse_tokens, token_plan.reduce_tokens)) is not None:
        merges = sum(len(group) > 1 for group in groups)
        calls += merges
        tokens += merges * collapse_fixed + sum(sizes)
        sizes = [merged_size] * len(groups)
        reduce_input = max(reduce_input, min(sum(sizes), token_plan.reduce_tokens))
    return calls, tokens, reduce_fixed + reduce_input


def questions_by_document(
    items: Iterable[T], document: Callable[[T], str], question: Callable[[T], str]
) -> list[tuple[T, list[str]]]:
    """Items grouped by the document they ask about (``document`` gives a key: a path, a hash of
    the text), in order of first appearance: each group's first item and all its questions."""
    groups: dict[str, tuple[T, list[str]]] = {}
    for item in items:
        groups.setdefault(document(item), (item, []))[1].append(question(item))
    return list(groups.values())


def batch_documents(items: Sequence[BatchItem], max_bytes: int) -> Iterator[tuple[str, list[str]]]:
    """The documents of a batch and their questions, for ``estimate_cost``: items about the same
    document (the same file, or the same text) are one document, read once when its turn comes,
    as ``batch.run_batch`` groups them."""
    for first, questions in questions_by_document(items, lambda item: item.document_key, lambda item: item.question):
        yield (first.document if first.document is not None else read_text(first.path or "", max_bytes)), questions


def format_estimate(estimate: CostEstimate) -> str:
    """The estimate as ``--dry-run`` prints it: a table of stages, then the prefix cache's share."""
    sizes = sorted({d.chunk_tokens for d in estimate.documents})
    size = f"{sizes[0]:,}" if len(sizes) == 1 else f"{sizes[0]:,}-{sizes[-1]:,}"
    tokenizer = estimate.tokenizer + ("" if estimate.exact_counts else " (estimated counts)")
    profile = f" (profile {estimate.model_profile})" if estimate.model_profile else ""
    lines = [
        f"{_count(len(estimate.documents), 'document')}, {_count(estimate.questions, 'question')}, "
        f"{_count(estimate.chunks, 'chunk')} of at most {size} tokens · window {estimate.window:,} · "
        f"{estimate.task_type} · {tokenizer} · {estimate.model}{profile}",
        "",
        f"{'stage':<10}{'calls':>16}{'prompt tokens':>22}",
    ]
    for name, stage in (
        ("map", estimate.map),
        ("collapse", estimate.collapse),
        ("reduce", estimate.reduce),
        ("total", estimate.total),
    ):
        lines.append(
            f"{name:<10}{_figure(stage.calls, stage.bound):>16}{_figure(stage.prompt_tokens, stage.bound):>22}"
        )
    if len(estimate.models) > 1:
        lines += ["", f"{'model':<40}{'calls':>16}{'prompt tokens':>22}"]
        for model, cost in estimate.by_model.items():
            stages = ", ".join(stage for use in estimate.models if use.model == model for stage in use.stages)
            name = f"{short_model_name(model)} ({stages})"
            calls, tokens = _figure(cost.calls, cost.bound), _figure(cost.prompt_tokens, cost.bound)
            lines.append(f"{name:<40}{calls:>16}{tokens:>22}")
        lines += [
            f"  {use.model}: {' '.join(use.stages)} · {use.client} · window {use.window:,} · {use.tokenizer}"
            + ("" if use.exact_counts else " (estimated counts)")
            + (f" (profile {use.profile})" if use.profile else "")
            for use in estimate.models
        ]
    map_tokens = estimate.map.prompt_tokens
    share = estimate.cacheable_tokens / map_tokens if map_tokens else 0.0
    if estimate.reused_calls:
        lines.append(
            f"{_count(estimate.reused_calls, 'map call')} not made, and not counted: "
            "identical to an earlier one (repeated text)"
        )
    lines += [
        "",
        f"map prompt tokens under a perfect prefix cache: {estimate.cacheable_tokens:,} cacheable ({share:.0%}), "
        f"{estimate.computed_tokens:,} computed",
        "  (the part the calls' prompts share is computed once: the map instructions, and each chunk",
        "  where its questions follow it; what differs is computed per call)",
        "no LLM call was made; collapse and reduce are bounds (every chunk answering at full length)",
    ]
    return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _figure(value: int, bound: bool) -> str:
    if not value:
        return "0"
    return f"{'at most' if bound else 'exactly'} {value:,}"
