"""Cost before paying: the ``--dry-run`` figures against the calls a run with the same config and
client then makes (maps exact, collapse and reduce within their bounds), the prefix cache's split
of the map prompt tokens, and the commands, which make no LLM call."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from click.testing import CliRunner

from llmxmr import MapReducePipeline, PipelineConfig
from llmxmr.budget import prompt_tokens
from llmxmr.clients.base import ChatRequest
from llmxmr.clients.fake import ScriptedClient
from llmxmr.estimate import CostEstimate, estimate_cost, format_estimate
from llmxmr.families import family
from llmxmr.stages.map import map_messages

from ..conftest import WordCounter, final_reply, partial_reply

WORDS = WordCounter()
QUESTIONS = ["What does each part report?", "Which colour is named?", "Who wrote the note?"]
# Every part states a fact of its own, so every chunk answers and the partials must collapse.
DOCUMENT = "\n\n".join(
    f"Part {n} reports that the lamp number {n} is lit. " + "The grass is green and the sky is blue. " * 12
    for n in range(1, 25)
)


def respond(rationale_words: int | None):
    """Replies no longer than their ``max_tokens`` (a model's reply cannot be): a map reply quotes
    its chunk's fact and gives a rationale of ``rationale_words`` words, or (None) as many as fill
    the reply to its ``max_tokens``."""

    def reply(request: ChatRequest) -> str:
        user = request.messages[-1].content
        if request.schema_name == "MapOutput":
            fact = re.search(r"Part \d+ reports that the lamp number \d+ is lit\.", user)
            assert fact is not None
            text = partial_reply("lit", 4, info=fact.group(), rationale=why(request, rationale_words, fact.group()))
        elif request.schema_name == "CollapseOutput":
            text = partial_reply("lit", 4, info="merged lamps", rationale=why(request, rationale_words, "merged lamps"))
        else:
            text = final_reply("lit", chunks=[0])
        assert len(text.split()) <= request.max_tokens
        return text

    return reply


def why(request: ChatRequest, words: int | None, info: str) -> str:
    if words is None:
        words = request.max_tokens - len(partial_reply("lit", 4, info=info, rationale="").split())
    return " ".join(f"why{n}" for n in range(words))  # none repeated: a reply that repeats itself is cut


def config(**overrides) -> PipelineConfig:
    """A small window and short replies: the partial answers of 24 chunks do not fit one reduce."""
    settings = {
        "llm.context_window": 1000,
        "llm.concurrency": 4,
        "chunking.chunk_tokens": 120,
        "generation.map_max_tokens": 60,
        "generation.collapse_max_tokens": 60,
        "generation.reduce_max_tokens": 60,
    }
    return PipelineConfig.load(**{**settings, **overrides})


def client(rationale_words: int | None = 30) -> ScriptedClient:
    return ScriptedClient(responder=respond(rationale_words), counter=WordCounter())


def estimate(cfg: PipelineConfig, documents) -> CostEstimate:
    return asyncio.run(estimate_cost(cfg, client(), documents))


def sent(scripted: ScriptedClient, schema: str) -> tuple[int, int]:
    """The calls of one stage the client received, and their prompt tokens."""
    requests = [r for r in scripted.requests if r.schema_name == schema]
    return len(requests), sum(prompt_tokens(r.messages, WORDS) for r in requests)


@pytest.mark.parametrize("scheduler", ["streaming", "barrier"])
@pytest.mark.parametrize("questions", [QUESTIONS[:1], QUESTIONS])
@pytest.mark.parametrize("rationale_words", [2, 30])
def test_the_figures_hold_for_the_calls_the_run_then_makes(scheduler, questions, rationale_words):
    cfg = config(scheduler=scheduler)
    figures = estimate(cfg, [(DOCUMENT, questions)])
    scripted = client(rationale_words)
    results = MapReducePipeline(cfg, client=scripted).run_many(DOCUMENT, questions)

    assert figures.chunks == len(results[0].chunks) > 1
    assert (figures.map.calls, figures.map.prompt_tokens) == sent(scripted, "MapOutput")  # exact
    collapse_calls, collapse_tokens = sent(scripted, "CollapseOutput")
    reduce_calls, reduce_tokens = sent(scripted, "FinalAnswer")
    assert 0 < collapse_calls <= figures.collapse.calls
    assert collapse_tokens <= figures.collapse.prompt_tokens
    assert reduce_calls == figures.reduce.calls == len(questions)  # every question finds something here
    assert reduce_tokens <= figures.reduce.prompt_tokens
    assert figures.total.prompt_tokens >= sum(prompt_tokens(r.messages, WORDS) for r in scripted.requests)


def test_the_map_figures_hold_for_a_model_whose_profile_changes_its_prompts():
    """The bundled model's profile asks retrieval questions before each chunk too: the estimate
    applies it as the run does."""

    def bundled() -> ScriptedClient:
        return ScriptedClient(responder=respond(30), counter=WordCounter(), model="/m/SmolLM2-135M-Instruct.Q4_1.gguf")

    cfg = config(task_type="retrieval")
    figures = asyncio.run(estimate_cost(cfg, bundled(), [(DOCUMENT, QUESTIONS[:2])]))
    scripted = bundled()
    MapReducePipeline(cfg, client=scripted).run_many(DOCUMENT, QUESTIONS[:2])
    assert (figures.map.calls, figures.map.prompt_tokens) == sent(scripted, "MapOutput")
    assert figures.model_profile == "smollm2-135m" and "(profile smollm2-135m)" in format_estimate(figures)


@pytest.mark.parametrize("scheduler", ["streaming", "barrier"])
def test_the_dry_run_counts_the_calls_of_the_run_it_plans(scheduler):
    """The rule of ``--dry-run``: it walks the plan the run follows (``plan.plan_reading``) and
    makes the collapse rounds the run's schedulers make (``collapse.collapse_round``). So with
    replies as long as the plan allows, its map, collapse and reduce calls are the run's own."""
    cfg = config(scheduler=scheduler)
    figures = estimate(cfg, [(DOCUMENT, QUESTIONS)])
    scripted = client(rationale_words=None)
    MapReducePipeline(cfg, client=scripted).run_many(DOCUMENT, QUESTIONS)
    calls = {schema: sent(scripted, schema)[0] for schema in ("MapOutput", "CollapseOutput", "FinalAnswer")}
    assert calls["CollapseOutput"] >= len(QUESTIONS)  # the partials had to collapse before the reduce
    assert (figures.map.calls, figures.collapse.calls, figures.reduce.calls) == tuple(calls.values())


def test_partials_as_large_as_the_plan_allows_still_fit_the_bounds():
    """Replies close to ``map_max_tokens`` words: the run's collapse comes near its bound."""
    cfg = config()
    figures = estimate(cfg, [(DOCUMENT, QUESTIONS[:1])])
    scripted = client(rationale_words=None)
    MapReducePipeline(cfg, client=scripted).run(DOCUMENT, QUESTIONS[0])
    calls, tokens = sent(scripted, "CollapseOutput")
    assert calls == figures.collapse.calls
    assert figures.collapse.prompt_tokens * 0.8 <= tokens <= figures.collapse.prompt_tokens


def test_cacheable_and_computed_split_the_map_prompt_tokens():
    figures = estimate(config(), [(DOCUMENT, QUESTIONS)])
    assert figures.cacheable_tokens + figures.computed_tokens == figures.map.prompt_tokens
    assert 0 < figures.computed_tokens < figures.cacheable_tokens
    # The instructions are computed once, so even one question about one chunk each reuses them.
    one = estimate(config(), [(DOCUMENT, QUESTIONS[:1])])
    assert one.cacheable_tokens == one.instructions_tokens * (one.chunks - 1)


def test_more_questions_compute_only_their_own_part_of_each_map_prompt():
    """The question and the short ask after it, counted from their own text: the chunk's prefix
    (up to the question's label, which every question about it shares) is computed once, however
    many questions are asked."""
    one, three = estimate(config(), [(DOCUMENT, QUESTIONS[:1])]), estimate(config(), [(DOCUMENT, QUESTIONS)])
    prompts = family("qa").prompts

    def own_part(question: str) -> int:  # the question and the ask after it, plus the generation prompt's 8 tokens
        user = map_messages(prompts, question, "")[-1].content
        return len(user[user.index("Question:") + len("Question:") :].split()) + 8

    added = sum(own_part(question) for question in QUESTIONS[1:]) * one.chunks
    assert three.chunks == one.chunks
    assert three.computed_tokens - one.computed_tokens == added
    assert three.map.prompt_tokens - one.map.prompt_tokens > 10 * added  # the rest is cacheable


def test_documents_share_only_the_instructions():
    other = DOCUMENT.replace("lamp", "torch")
    both = estimate(config(), [(DOCUMENT, QUESTIONS[:1]), (other, QUESTIONS[1:2])])
    first, second = estimate(config(), [(DOCUMENT, QUESTIONS[:1])]), estimate(config(), [(other, QUESTIONS[1:2])])
    assert both.map.calls == first.map.calls + second.map.calls
    assert both.map.prompt_tokens == first.map.prompt_tokens + second.map.prompt_tokens
    assert both.computed_tokens == first.computed_tokens + second.computed_tokens - both.instructions_tokens


# The commands: no chat request, whatever is estimated.


def no_replies() -> ScriptedClient:
    """Fails any chat request (there is no reply to give), and records it."""
    return ScriptedClient(counter=WordCounter())


@pytest.fixture
def offline(monkeypatch) -> ScriptedClient:
    """The client the commands open, wherever they open one."""
    scripted = no_replies()
    monkeypatch.setattr("llmxmr.cli.make_client", lambda cfg: scripted)
    monkeypatch.setattr("llmxmr.executor.make_client", lambda cfg: scripted)
    return scripted


def cli_estimate(documents) -> CostEstimate:
    """The estimate for the commands' settings: defaults, chunks of 120 tokens, the fake's window."""
    return asyncio.run(estimate_cost(PipelineConfig.load(**{"chunking.chunk_tokens": 120}), no_replies(), documents))


def test_run_dry_run_prints_the_table_and_makes_no_call(tmp_path, offline):
    from llmxmr import cli

    path = tmp_path / "doc.txt"
    path.write_text(DOCUMENT, encoding="utf-8")
    scripted = offline
    args = ["run", "--input", str(path), "--chunk-tokens", "120", "--dry-run"]
    questions = [arg for question in QUESTIONS for arg in ("--question", question)]
    result = CliRunner().invoke(cli.main, [*args, *questions])
    assert result.exit_code == 0, result.output
    assert scripted.requests == [] and scripted.closed
    figures = cli_estimate([(DOCUMENT, QUESTIONS)])
    assert result.stdout.strip() == format_estimate(figures)
    assert re.search(rf"map\s+exactly {figures.map.calls:,}\s+exactly {figures.map.prompt_tokens:,}", result.stdout)
    as_json = CliRunner().invoke(cli.main, [*args, *questions, "--json"])
    assert CostEstimate.model_validate_json(as_json.stdout) == figures and scripted.requests == []


def test_batch_dry_run_counts_a_shared_document_once_and_makes_no_call(tmp_path, offline):
    from llmxmr import cli

    (tmp_path / "book.txt").write_text(DOCUMENT, encoding="utf-8")
    other = DOCUMENT.replace("lamp", "torch")
    lines = [
        {"id": 1, "question": QUESTIONS[0], "path": "book.txt"},
        {"id": 2, "question": QUESTIONS[0], "document": other},
        {"id": 3, "question": QUESTIONS[1], "path": str(tmp_path / "book.txt")},
        {"id": 4, "question": QUESTIONS[2], "document": other},
    ]
    source = tmp_path / "batch.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    scripted = offline
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli.main, ["batch", "--input", str(source), "--out", str(out), "--chunk-tokens", "120", "--dry-run", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert scripted.requests == [] and not out.exists()  # nothing paid, nothing written
    figures = CostEstimate.model_validate_json(result.stdout)
    expected = cli_estimate([(DOCUMENT, QUESTIONS[:2]), (other, [QUESTIONS[0], QUESTIONS[2]])])
    assert len(figures.documents) == 2 and figures.questions == 4
    assert figures.map == expected.map and figures.computed_tokens == expected.computed_tokens


def test_infinitebench_dry_run_groups_examples_by_context_and_makes_no_call(tmp_path, offline):
    from llmxmr import cli

    haystack = "The grass is green. The sky is blue. " * 400
    examples = [
        {
            "id": 0,
            "context": haystack + "The pass key is 71432. " + haystack,
            "input": "What is the pass key?",
            "answer": ["71432"],
        },
        {
            "id": 1,
            "context": haystack + "The pass key is 90210. " + haystack,
            "input": "What is the pass key?",
            "answer": ["90210"],
        },
        {
            "id": 2,
            "context": haystack + "The pass key is 71432. " + haystack,
            "input": "Tell me the pass key.",
            "answer": ["71432"],
        },
    ]
    data = tmp_path / "passkey.jsonl"
    data.write_text("".join(json.dumps(example) + "\n" for example in examples), encoding="utf-8")
    scripted = offline
    out = tmp_path / "out"
    args = ["bench", "infinitebench", "--task", "passkey", "--data", str(data), "--out", str(out), "--dry-run"]
    result = CliRunner().invoke(cli.main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    assert scripted.requests == [] and not out.exists()
    figures = CostEstimate.model_validate_json(json.dumps(json.loads(result.stdout)["passkey"]))
    assert [d.questions for d in figures.documents] == [2, 1]  # the first context is asked twice
    assert (
        figures.task_type == "retrieval"
        and figures.map.calls == 2 * figures.documents[0].chunks + figures.documents[1].chunks
    )
    table = CliRunner().invoke(cli.main, args)
    assert table.exit_code == 0 and table.stdout.startswith("passkey\n2 documents, 3 questions")
    direct = CliRunner().invoke(cli.main, [*args, "--method", "direct"])
    assert direct.exit_code == 2 and "--method mr" in direct.output and scripted.requests == []
