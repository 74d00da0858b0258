"""llmxmr batch: one call budget for all documents, results as documents finish, resume, input
errors, and the lines about one document answered from one reading of it."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmxmr import MapReducePipeline, PipelineConfig
from llmxmr.batch import BatchItem, BatchResult, _result_line, format_report, read_items, read_results, run_batch
from llmxmr.cli import main
from llmxmr.clients.base import ChatRequest, ReplyWatch
from llmxmr.clients.fake import ScriptedClient
from llmxmr.errors import LLMCallError, UsageError
from llmxmr.scheduling import CallBudget

from ..conftest import WordCounter, final_reply, map_parts, map_requests, partial_reply


def filler(name: str, when: str = "day") -> str:
    """216 words about ``name``; fillers of another ``when`` differ, so that no two chunks are
    alike (an identical chunk's map call is not made: ``test_identical_chunks``)."""
    return f"The weather in {name} was mild and nothing else happened that {when}. " * 18


def document(name: str) -> str:
    """Four chunks at 120 words each; one of the middle ones names the document's code."""
    return f"{filler(name)}\n\nThe code of {name} is {name}-7.\n\n{filler(name, 'week')}"


def owner(request: ChatRequest) -> str:
    """Which document a request is about: every chunk and partial answer names it."""
    found = re.search(r"\b(doc\d+)\b", request.messages[-1].content)
    return found.group(1) if found else "?"


def reader(request: ChatRequest) -> str:
    text = request.messages[-1].content
    if request.schema_name == "MapOutput":
        code = re.search(r"The code of (doc\d+) is (doc\d+-7)\.", text.rsplit("<document_part>", 1)[1])
        if code is None:
            return partial_reply(None, 0, info="")
        return partial_reply(code.group(2), 5, info=code.group(0))
    return final_reply(re.findall(r"^Answer: (.+)$", text, flags=re.M)[0], 5, [1])


def items(n: int) -> list[BatchItem]:
    return [BatchItem(id=f"d{i}", question="What is the code?", document=document(f"doc{i}")) for i in range(n)]


def config(**overrides) -> PipelineConfig:
    values = {"chunking.chunk_tokens": 120, "llm.concurrency": 2, "llm.base_url": "http://unused/v1"}
    return PipelineConfig.load(**{**values, **overrides})


def run(tmp_path: Path, batch: list[BatchItem], client: ScriptedClient | None = None, **overrides):
    client = client or ScriptedClient(responder=reader, counter=WordCounter())
    report = asyncio.run(run_batch(batch, tmp_path / "out", config(**overrides), client=client))
    return report, client


def test_every_document_is_answered_and_written(tmp_path):
    report, _ = run(tmp_path, items(4))
    results = read_results(tmp_path / "out" / "results.jsonl")
    assert {r.id: r.answer for r in results} == {f"d{i}": f"doc{i}-7" for i in range(4)}
    assert all(r.found and r.chunks == 4 and r.citations for r in results)
    assert report.documents == report.new == 4 and report.failures == 0
    assert report.calls == sum(r.calls for r in results) == 4 * 5  # four maps and a reduce each
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["documents"] == 4 and summary["concurrency"] == 2


def test_every_result_line_carries_its_status_and_the_report_counts_them(tmp_path):
    def guesses_on_doc1(request: ChatRequest) -> str:
        if owner(request) == "doc1" and request.schema_name == "MapOutput":  # an answer no quote holds
            part = request.messages[-1].content.rsplit("<document_part>", 1)[1]
            quote = "The weather in doc1 was mild and nothing else happened that day."
            return partial_reply("doc1-9", 5, info=quote) if "The code of" in part else partial_reply(None, 0, info="")
        return reader(request)

    report, _ = run(tmp_path, items(3), ScriptedClient(responder=guesses_on_doc1, counter=WordCounter()))
    results = {r.id: r for r in read_results(tmp_path / "out" / "results.jsonl")}
    assert {i: r.status for i, r in results.items()} == {"d0": "answered", "d1": "unsupported", "d2": "answered"}
    assert (results["d1"].answer, results["d1"].unsupported_guess, results["d1"].found) == ("", "doc1-9", False)
    assert results["d1"].citations == [] and results["d1"].related
    assert report.found == 2 and report.statuses == {"answered": 2, "unsupported": 1}
    assert "2 answered, 1 unsupported" in format_report(report)
    # A line written before results had a status reads with the status its "found" implied.
    old = results["d0"].model_dump(mode="json", exclude={"status", "unsupported_guess", "related"})
    assert BatchResult.model_validate(old).status == "answered"
    assert BatchResult.model_validate({**old, "found": False}).status == "not_found"


def test_all_documents_share_one_call_budget(tmp_path):
    client = ScriptedClient(responder=reader, counter=WordCounter(), delay_s=0.01)
    run(tmp_path, items(6), client, **{"llm.concurrency": 3})
    assert client.max_in_flight == 3  # not 3 per document: 6 documents were open at once


def test_documents_finish_one_after_another(tmp_path):
    """Four documents open at once, one call slot. A waiting call goes first by its document's
    place in the batch, so no document starts before the one two places ahead of it has made its
    last call (only the next one's warm-up call slips in while a document waits for its own), and
    the results are written in that order."""
    path = tmp_path / "out" / "results.jsonl"
    calls: list[str] = []  # the document of each call, in the order the calls started

    def watching(request: ChatRequest) -> str:
        calls.append(owner(request))
        return reader(request)

    client = ScriptedClient(responder=watching, counter=WordCounter(), delay_s=0.005)
    batch = asyncio.run(
        run_batch(items(4), tmp_path / "out", config(**{"llm.concurrency": 1}), client=client, documents_in_flight=4)
    )
    assert batch.documents == 4
    first = {name: calls.index(name) for name in ("doc0", "doc1", "doc2", "doc3")}
    last = {name: len(calls) - 1 - calls[::-1].index(name) for name in first}
    assert first["doc0"] < first["doc1"] < last["doc0"] < first["doc2"]
    assert last["doc1"] < first["doc3"]
    assert [r.id for r in read_results(path)] == ["d0", "d1", "d2", "d3"]


def test_a_rerun_skips_finished_ids_and_cuts_a_half_written_line(tmp_path):
    run(tmp_path, items(3))
    path = tmp_path / "out" / "results.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + lines[1][: len(lines[1]) // 2])  # killed while writing d1
    report, client = run(tmp_path, items(3))
    assert report.documents == 3 and report.new == 2
    assert {owner(r) for r in client.requests} - {"?"} == {"doc1", "doc2"}
    assert [r.id for r in read_results(path)] == ["d0", "d1", "d2"]
    again, client = run(tmp_path, items(3))
    assert again.new == 0 and again.concurrency is None and client.requests == []


def test_a_document_that_lost_a_call_is_not_written_and_the_rerun_retries_it(tmp_path):
    def flaky(request: ChatRequest) -> str:
        if owner(request) == "doc1":
            raise LLMCallError("503 after 4 retries")
        return reader(request)

    report, _ = run(tmp_path, items(3), ScriptedClient(responder=flaky, counter=WordCounter()))
    assert report.failures == 1 and report.documents == 2
    report, _ = run(tmp_path, items(3))
    assert report.documents == 3 and report.new == 1 and report.failures == 0


def test_a_changed_question_is_refused_on_resume(tmp_path):
    run(tmp_path, items(1))
    changed = [items(1)[0].model_copy(update={"question": "Who wrote it?"})]
    with pytest.raises(UsageError, match="answers another question for id 'd0'"):
        run(tmp_path, changed)


def test_paths_are_read_relative_to_the_input_file(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text(document("doc5"))
    source = tmp_path / "batch.jsonl"
    source.write_text(json.dumps({"id": 1, "question": "What is the code?", "path": "docs/a.txt"}) + "\n")
    (item,) = read_items(source)
    assert item.path == str(tmp_path / "docs" / "a.txt")
    run(tmp_path, [item])
    assert read_results(tmp_path / "out" / "results.jsonl")[0].answer == "doc5-7"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"id": 1, "question": "q"}', 'give exactly one of "document" and "path"'),
        ('{"id": 1, "question": "q", "document": "x", "path": "y"}', 'give exactly one of "document" and "path"'),
        ('{"id": 1, "question": "  ", "document": "x"}', "the question is empty"),
        ('{"id": 1, "document": "x"}', "question: Field required"),
        ('{"id": 1, "question": "q", "document": "x", "extra": 2}', "extra: Extra inputs are not permitted"),
        ("not json", "Invalid JSON"),
    ],
)
def test_bad_input_lines_name_the_file_and_line(tmp_path, line, problem):
    source = tmp_path / "batch.jsonl"
    source.write_text('{"id": 0, "question": "q", "document": "x"}\n' + line + "\n")
    with pytest.raises(UsageError, match=re.escape(f"{source}:2: ") + ".*" + re.escape(problem)):
        read_items(source)


def test_duplicate_ids_and_empty_files_are_refused(tmp_path):
    source = tmp_path / "batch.jsonl"
    source.write_text('{"id": 1, "question": "q", "document": "x"}\n{"id": "1", "question": "q", "document": "y"}\n')
    with pytest.raises(UsageError, match="id '1' appears twice"):
        read_items(source)
    source.write_text("\n")
    with pytest.raises(UsageError, match="holds no documents"):
        read_items(source)


def test_the_command_writes_results_prints_totals_and_resumes(tmp_path, monkeypatch):
    source = tmp_path / "batch.jsonl"
    source.write_text("".join(item.model_dump_json(exclude_none=True) + "\n" for item in items(3)))
    clients: list[ScriptedClient] = []

    def new_client(config):
        clients.append(ScriptedClient(responder=reader, counter=WordCounter()))
        return clients[-1]

    monkeypatch.setattr("llmxmr.executor.make_client", new_client)
    args = ["batch", "--input", str(source), "--out", str(tmp_path / "out"), "--chunk-tokens", "120", "--no-progress"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    assert (
        "documents  3 (3 new, 3 answered; 3 distinct)" in first.stdout
        and "calls      15 (at most 64 in flight)" in first.stdout
    )
    assert clients[0].closed
    second = CliRunner().invoke(main, [*args, "--json"])
    assert json.loads(second.stdout)["new"] == 0 and len(clients) == 1  # nothing to do: no client opened


def test_the_command_reports_a_bad_input_in_one_line(tmp_path):
    source = tmp_path / "batch.jsonl"
    source.write_text('{"id": 1}\n')
    result = CliRunner().invoke(main, ["batch", "--input", str(source), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {source}:1: ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_results_holding_unicode_line_separators_resume(tmp_path):
    """JSON writes U+2028 and U+0085 raw inside strings; only "\\n" ends a results line."""

    def separator(request: ChatRequest) -> str:
        if request.schema_name == "FinalAnswer":
            return final_reply("doc0-7\u2028(line separator)\u0085(next line)", 5, [1])
        return reader(request)

    source = tmp_path / "batch.jsonl"
    source.write_text("".join(item.model_dump_json(exclude_none=True) + "\n" for item in items(1)), encoding="utf-8")
    (item,) = read_items(source)
    run(tmp_path, [item], ScriptedClient(responder=separator, counter=WordCounter()))
    again, client = run(tmp_path, [item])
    assert again.documents == 1 and again.new == 0 and client.requests == []
    assert read_results(tmp_path / "out" / "results.jsonl")[0].answer.endswith("\u0085(next line)")


def test_a_document_waiting_for_a_slot_still_warms_up_before_its_other_maps(monkeypatch):
    """The warm-up wait counts from when a document's first map call is sent. When the shared
    budget is held by other documents for longer than that wait, this document's other maps must
    still wait for its first call to finish, not go out beside it once slots free up."""
    monkeypatch.setattr("llmxmr.pipeline.WARM_UP_WAIT_S", 0.1)
    events: list[str] = []

    class Recording(ScriptedClient):
        async def chat(self, request: ChatRequest, watch: ReplyWatch | None = None):
            events.append("start")
            try:
                return await super().chat(request, watch)
            finally:
                events.append("end")

    async def scenario() -> None:
        budget = CallBudget(2)
        others = budget.join()  # documents ahead of this one, holding both slots for 0.3 s
        held = [budget.slot("reduce", others), budget.slot("reduce", others)]
        for slot in held:
            await slot.__aenter__()
        client = Recording(responder=reader, counter=WordCounter(), delay_s=0.02)
        run = asyncio.ensure_future(
            MapReducePipeline(config(), client=client, budget=budget).arun(document("doc1"), "What is the code?")
        )
        await asyncio.sleep(0.3)
        for slot in held:
            await slot.__aexit__(None, None, None)
        result = await run
        assert result.answer == "doc1-7"

    asyncio.run(scenario())
    assert events[:2] == ["start", "end"]  # the first map ran alone
    assert events.count("start") == 5


# ---- lines about one document: one reading ---------------------------------------------------

QUESTIONS = {"code": "What is the code?", "colour": "What is the colour?", "password": "What is the password?"}


def two_facts(name: str) -> str:
    """About six chunks: the document's code in one, its colour in another, no password."""
    return (
        f"{filler(name)}\n\nThe code of {name} is {name}-7.\n\n{filler(name, 'week')}\n\n"
        f"The colour of {name} is {name}-blue.\n\n{filler(name, 'month')}"
    )


def asked(request: ChatRequest) -> str:
    return next(name for name, question in QUESTIONS.items() if question in map_parts(request)[1])


def fact_reader(request: ChatRequest) -> str:
    """Finds the fact a map request's question asks about in its chunk."""
    if request.schema_name != "MapOutput":
        return reader(request)
    chunk, _ = map_parts(request)
    fact = re.search(rf"The {asked(request)} of (doc\d+) is (doc\d+-\w+)\.", chunk)
    return partial_reply(fact.group(2), 5, info=fact.group(0)) if fact else partial_reply(None, 0, info="")


def about(name: str, *questions: str) -> list[BatchItem]:
    return [BatchItem(id=f"{name}-{q}", question=QUESTIONS[q], document=two_facts(name)) for q in questions]


def test_lines_about_one_document_are_answered_from_one_reading(tmp_path, chunkings):
    """Three questions of one text and two of one file, named by two spellings of its path, the
    lines interleaved: two readings, each chunk mapped once per question."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "b.txt").write_text(two_facts("doc2"))
    text = about("doc1", "code", "colour", "password")
    files = [
        BatchItem(id="doc2-code", question=QUESTIONS["code"], path=str(tmp_path / "docs" / "b.txt")),
        BatchItem(
            id="doc2-colour", question=QUESTIONS["colour"], path=str(tmp_path / "docs" / ".." / "docs" / "b.txt")
        ),
    ]
    batch = [text[0], files[0], text[1], files[1], text[2]]
    report, client = run(tmp_path, batch, ScriptedClient(responder=fact_reader, counter=WordCounter()))
    assert len(chunkings) == 2 and chunkings[0] == chunkings[1] == 6
    assert len(map_requests(client)) == 6 * 3 + 6 * 2
    assert sorted((owner(r), asked(r)) for r in map_requests(client)) == sorted(
        [("doc1", q) for q in ("code", "colour", "password") for _ in range(6)]
        + [("doc2", q) for q in ("code", "colour") for _ in range(6)]
    )
    answers = {r.id: (r.answer, r.found) for r in read_results(tmp_path / "out" / "results.jsonl")}
    assert answers == {
        "doc1-code": ("doc1-7", True),
        "doc1-colour": ("doc1-blue", True),
        "doc1-password": ("", False),
        "doc2-code": ("doc2-7", True),
        "doc2-colour": ("doc2-blue", True),
    }
    assert (report.documents, report.distinct_documents, report.found) == (5, 2, 4)
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["distinct_documents"] == 2
    assert "documents  5 (5 new, 4 answered; 2 distinct)" in format_report(report)


def test_each_line_gets_what_it_got_before_grouping(tmp_path):
    """The results of lines answered together equal those of each line run alone, on the same replies."""
    batch = about("doc1", "colour", "code", "password") + about("doc2", "code", "colour")
    run(tmp_path, batch, ScriptedClient(responder=fact_reader, counter=WordCounter()))
    together = {r.id: r.model_dump(exclude={"wall_time_s"}) for r in read_results(tmp_path / "out" / "results.jsonl")}

    async def alone(item: BatchItem) -> dict:
        client = ScriptedClient(responder=fact_reader, counter=WordCounter())
        result = await MapReducePipeline(config(), client=client).arun(item.document or "", item.question)
        return _result_line(item, result).model_dump(exclude={"wall_time_s"})

    assert together == {item.id: asyncio.run(alone(item)) for item in batch}
    assert {r["id"]: r["citations"][0]["quote"] for r in together.values() if r["found"]} == {
        "doc1-colour": "The colour of doc1 is doc1-blue.",
        "doc1-code": "The code of doc1 is doc1-7.",
        "doc2-code": "The code of doc2 is doc2-7.",
        "doc2-colour": "The colour of doc2 is doc2-blue.",
    }


def test_a_rerun_asks_only_the_questions_of_a_document_left_unanswered(tmp_path, chunkings):
    batch = about("doc1", "code", "colour", "password")
    run(tmp_path, batch, ScriptedClient(responder=fact_reader, counter=WordCounter()))
    path = tmp_path / "out" / "results.jsonl"
    first = path.read_text().splitlines(keepends=True)
    path.write_text("".join(line for line in first if '"doc1-colour"' not in line))
    chunkings.clear()
    report, client = run(tmp_path, batch, ScriptedClient(responder=fact_reader, counter=WordCounter()))
    assert (
        chunkings == [6] and {asked(r) for r in map_requests(client)} == {"colour"} and len(map_requests(client)) == 6
    )
    assert (report.documents, report.new, report.distinct_documents) == (3, 1, 1)
    again = {r.id: r.model_dump(exclude={"wall_time_s"}) for r in read_results(path)}
    assert again == {r.id: r.model_dump(exclude={"wall_time_s"}) for r in map(BatchResult.model_validate_json, first)}


def test_a_line_that_lost_a_call_is_not_written_but_its_document_mates_are(tmp_path):
    """The first question of the document (whose map calls warm each chunk for the others) loses
    its calls to the server; the other two are written, and the rerun asks only the first."""

    def flaky(request: ChatRequest) -> str:
        if request.schema_name == "MapOutput" and asked(request) == "code":
            raise LLMCallError("503 after 4 retries")
        return fact_reader(request)

    batch = about("doc1", "code", "colour", "password")
    report, _ = run(tmp_path, batch, ScriptedClient(responder=flaky, counter=WordCounter()))
    assert (report.documents, report.failures, report.new) == (2, 1, 2)
    assert [r.id for r in read_results(tmp_path / "out" / "results.jsonl")] == ["doc1-colour", "doc1-password"]
    report, client = run(tmp_path, batch, ScriptedClient(responder=fact_reader, counter=WordCounter()))
    assert {asked(r) for r in map_requests(client)} == {"code"} and (report.documents, report.new) == (3, 1)
    assert {r.id: r.answer for r in read_results(tmp_path / "out" / "results.jsonl")}["doc1-code"] == "doc1-7"
