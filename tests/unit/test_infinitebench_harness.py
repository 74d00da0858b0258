"""The InfiniteBench harness: questions per task, data loading, the direct baseline, batch runs
that resume, examples sharing a context read once, all with the scripted fake client."""

from __future__ import annotations

import asyncio
import json
import re
import threading

import pytest

from llmxmr import MapReducePipeline
from llmxmr.bench.infinitebench.data import DataSource, read_examples
from llmxmr.bench.infinitebench.runner import BatchRun, format_table, read_finished, write_summary
from llmxmr.bench.infinitebench.scorers import TASKS
from llmxmr.bench.infinitebench.tasks import Example, direct_messages, ground_truth, question_for, task_config
from llmxmr.clients.base import ChatRequest
from llmxmr.clients.fake import ScriptedClient
from llmxmr.config import PipelineConfig
from llmxmr.direct import cut_middle
from llmxmr.errors import LLMCallError, ServerUnavailableError, UsageError
from tests.conftest import WordCounter, final_reply, map_parts, map_requests, partial_reply, sent_twice

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.\n"
OPTIONS = ["Alice", "Bob", "Carol", "Dave"]

# One example per task, shaped like the official files.
EXAMPLES = {
    "passkey": Example(id=0, context="ctx", input="What is the pass key?", answer=["71432"]),
    "number_string": Example(id=0, context="ctx", input="What is the sequence of digits?", answer=["1123456789"]),
    "kv_retrieval": Example(
        id=0, context="ctx", input='\nKey: "a1b2"\nThe value associated with the specified key is: ', answer=["c3d4"]
    ),
    "longbook_sum_eng": Example(id=0, context="ctx", input="", answer=["A summary."]),
    "longbook_qa_eng": Example(id=0, context="ctx", input="Who owns the farm?", answer=["Mr. Jones"]),
    "longbook_choice_eng": Example(id=0, context="ctx", input="Who wins?", answer=["Carol"], options=OPTIONS),
    "longbook_qa_chn": Example(id=0, context="ctx", input="谁是主角？", answer=["小明"]),
    "longdialogue_qa_eng": Example(id=0, context="ctx", input="", answer=["JOHN"]),
    "code_debug": Example(
        id=0, context="ctx", input="", answer=["func_b"], options=["func_a", "func_b", "func_c", "func_d"]
    ),
    "code_run": Example(id=0, context="ctx", input="What is the return value of func_7(-3)?", answer=[12]),
    "math_find": Example(
        id=0,
        context="[3, 1, 2]",
        input="You should answer with only one number, no other words. The largest number of the list is: ",
        answer=[3],
    ),
    "math_calc": Example(id=0, context="1 + 2 - 1", input="", answer=[[3, 2]]),
}


def test_every_task_has_an_example_a_config_and_both_prompts():
    assert set(EXAMPLES) == set(TASKS)
    for task, example in EXAMPLES.items():
        config = PipelineConfig.load(preset=task_config(task).pipeline)
        assert config.task_type in ("qa", "choice", "retrieval", "code", "math", "summary", "zh")
        question = question_for(task, example)
        assert question and "$" not in question.replace("$$MASK$$", "")
        messages = direct_messages(task, example, "THE DOCUMENT")
        assert [m.role for m in messages] == ["system", "user"]
        assert messages[1].content.count("THE DOCUMENT") == 1


def test_multiple_choice_question_lists_lettered_options():
    question = question_for("longbook_choice_eng", EXAMPLES["longbook_choice_eng"])
    assert "Who wins?" in question
    assert "A. Alice\nB. Bob\nC. Carol\nD. Dave" in question
    direct = direct_messages("longbook_choice_eng", EXAMPLES["longbook_choice_eng"], "DOC")[1].content
    assert direct.index("DOC") < direct.index("Question: Who wins?") < direct.index("A. Alice")


def test_code_run_question_names_the_call_and_the_function():
    question = question_for("code_run", EXAMPLES["code_run"])
    assert "func_7(-3)" in question and "named func_7." in question


def test_math_find_question_names_the_target():
    assert "What is the largest number in the list" in question_for("math_find", EXAMPLES["math_find"])
    direct = direct_messages("math_find", EXAMPLES["math_find"], "[3, 1, 2]")[1].content
    assert direct.startswith("What is the largest number in the following list?\n\n[3, 1, 2]\n\nYou should answer")


def test_dialogue_question_keeps_the_mask_token():
    assert question_for("longdialogue_qa_eng", EXAMPLES["longdialogue_qa_eng"]).count('"$$MASK$$"') == 2


def test_kv_question_carries_the_key():
    assert 'Key: "a1b2"' in question_for("kv_retrieval", EXAMPLES["kv_retrieval"])


def test_ground_truth_for_multiple_choice_is_text_and_letter():
    assert ground_truth("longbook_choice_eng", EXAMPLES["longbook_choice_eng"]) == ["Carol", "C"]
    assert ground_truth("code_debug", EXAMPLES["code_debug"]) == ["func_b", "B"]
    already = Example(id=1, context="c", answer=["Bob", "B"], options=OPTIONS)
    assert ground_truth("longbook_choice_eng", already) == ["Bob", "B"]
    assert ground_truth("math_calc", EXAMPLES["math_calc"]) == [[3, 2]]


def test_bad_examples_are_one_line_errors():
    with pytest.raises(UsageError, match="not one of its options"):
        ground_truth("longbook_choice_eng", Example(id=3, context="c", answer=["Zed"], options=OPTIONS))
    with pytest.raises(UsageError, match="expected 4 options"):
        question_for("code_debug", Example(id=3, context="c", answer=["x"], options=["x"]))
    with pytest.raises(UsageError, match="no function call"):
        question_for("code_run", Example(id=3, context="c", input="what now?", answer=[1]))
    with pytest.raises(UsageError, match="unknown InfiniteBench task"):
        task_config("passkeys")


def test_read_examples_wraps_bare_answers_and_numbers_missing_ids(tmp_path):
    path = tmp_path / "passkey.jsonl"
    path.write_text(
        json.dumps({"context": "a", "input": "q", "answer": "123"})
        + "\n\n"
        + json.dumps({"id": 7, "context": "b", "input": "q", "answer": [5], "options": []})
        + "\n"
    )
    first, second = read_examples(path)
    assert (first.id, first.answer) == (0, ["123"])
    assert (second.id, second.answer) == (7, [5])
    assert len(read_examples(path, limit=1)) == 1


def test_read_examples_names_the_bad_line(tmp_path):
    path = tmp_path / "passkey.jsonl"
    path.write_text(json.dumps({"context": "a", "answer": ["1"]}) + "\n{oops\n")
    with pytest.raises(UsageError, match=r"passkey.jsonl:2: not a JSON object"):
        read_examples(path)
    path.write_text(json.dumps({"input": "q", "answer": ["1"]}) + "\n")
    with pytest.raises(UsageError, match=r":1: field 'context'"):
        read_examples(path)


def test_cut_middle_keeps_both_ends_within_budget():
    text = " ".join(f"w{i}" for i in range(1000))
    kept, tokens = cut_middle(text, 1000, 100, WordCounter())
    assert tokens <= 100 and tokens >= 90
    assert kept.startswith("w0 w1 ") and kept.endswith(" w998 w999")
    assert "w500" not in kept
    assert cut_middle(text, 1000, 1000, WordCounter()) == (text, 1000)


# ---- batch runs -----------------------------------------------------------------------------


def passkey_example(identifier: int, key: str, depth: int, lines: int = 120) -> Example:
    context = (
        FILLER * depth + f"The pass key is {key}. Remember it. {key} is the pass key.\n" + FILLER * (lines - depth)
    )
    return Example(id=identifier, context=context, input="What is the pass key?", answer=[key])


def reader(request: ChatRequest) -> str:
    """A perfect reader: finds the key in a chunk, and keeps the most confident partial."""
    text = request.messages[-1].content
    if request.schema_name is None:  # the direct baseline asks for free text
        keys = re.findall(r"The pass key is (\d+)", text)
        return keys[0] if keys else "I do not know."
    if request.schema_name == "MapOutput":
        keys = re.findall(r"The pass key is (\d+)", text.rsplit("<document_part>", 1)[1])
        if not keys:
            return partial_reply(None, 0.0, info="", rationale="")
        return partial_reply(keys[0], 5.0, info=f"The pass key is {keys[0]}.")
    keys = re.findall(r'"answer": "(\d+)"', text)
    return final_reply(keys[0] if keys else "none")


def run_batch(tmp_path, examples, *, method="mr", client=None, in_flight=2, **overrides):
    client = client or ScriptedClient(responder=reader, counter=WordCounter())
    data = tmp_path / "passkey.jsonl"
    data.write_text("".join(example.model_dump_json() + "\n" for example in examples))
    runner = BatchRun(
        tmp_path / "out",
        method=method,
        overrides={"chunking.chunk_tokens": 300, **overrides},
        examples_in_flight=in_flight,
        client=client,
        progress=False,
        log=lambda line: None,
    )
    reports = asyncio.run(runner.run(["passkey"], {"passkey": data}))
    return reports[0], client


def requests_alone(tmp_path, example: Example, responder=reader, schema: str | None = None) -> int:
    """The requests of ``example`` read alone (of the ``schema`` given): one map call per distinct
    chunk text, since an identical chunk shares its call (``test_identical_chunks``), as the
    filler's chunks do."""
    config = BatchRun(tmp_path / "alone", overrides={"chunking.chunk_tokens": 300}).config_for("passkey")
    client = ScriptedClient(responder=responder, counter=WordCounter())
    MapReducePipeline(config, client=client).run(example.context, question_for("passkey", example))
    return len([r for r in client.requests if schema is None or r.schema_name == schema])


def test_batch_run_writes_official_predictions_and_scores_them(tmp_path):
    examples = [passkey_example(i, f"{10000 + i * 1111}", depth=i * 40) for i in range(4)]
    report, client = run_batch(tmp_path, examples)
    lines = (tmp_path / "out" / "preds_passkey.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert sorted(row["id"] for row in rows) == [0, 1, 2, 3]
    assert all(row["prediction"] == row["ground_truth"][0] for row in rows)
    assert report.n == 4 and report.scores == {"official": 100.0, "lenient": 100.0}
    assert report.calls == sum(row["calls"] for row in rows)
    # The examples' chunks of the haystack alone are alike: each is read once, for all of them.
    assert not sent_twice(client)
    assert len(client.requests) < sum(requests_alone(tmp_path, example) for example in examples)
    assert report.new == 4 and report.failed_examples == 0
    assert "passkey" in format_table([report]) and "100.00" in format_table([report])
    assert report.documents == 4


def test_predictions_keep_the_models_text_and_record_its_status(tmp_path):
    """An answer the text does not support is still the model's prediction (scores compare with the
    paper's, which checks nothing); ``status`` says it is unsupported."""

    def misquoting(request: ChatRequest) -> str:
        text = request.messages[-1].content
        if request.schema_name == "MapOutput" and "33333" in text:  # quotes a sentence without the key
            return partial_reply("44444", 5.0, info="Grass is green. Sky is blue.", evidence=[FILLER.strip()])
        return reader(request)

    examples = [passkey_example(0, "11111", 5), passkey_example(1, "33333", 5)]
    run_batch(tmp_path, examples, client=ScriptedClient(responder=misquoting, counter=WordCounter()))
    rows = {
        row["id"]: row for row in map(json.loads, (tmp_path / "out" / "preds_passkey.jsonl").read_text().splitlines())
    }
    assert (rows[0]["prediction"], rows[0]["status"], rows[0]["found"]) == ("11111", "answered", True)
    assert (rows[1]["prediction"], rows[1]["status"], rows[1]["found"]) == ("44444", "unsupported", False)
    (tmp_path / "direct").mkdir()
    run_batch(tmp_path / "direct", examples[:1], method="direct")
    (direct,) = read_finished(tmp_path / "direct" / "out" / "preds_passkey.jsonl", "direct")
    assert direct.status is None  # one call: nothing checked it


def test_rerun_skips_finished_examples_and_cuts_a_half_written_line(tmp_path):
    examples = [passkey_example(i, f"{20000 + i}", depth=10 * i) for i in range(3)]
    run_batch(tmp_path, examples)
    path = tmp_path / "out" / "preds_passkey.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if json.loads(line)["id"] != 2]
    path.write_text("".join(kept) + '{"id": 2, "predic')  # the last write was killed half-way
    report, client = run_batch(tmp_path, examples)
    assert report.new == 1 and report.n == 3
    contents = [r.messages[-1].content for r in client.requests]
    assert any("20002" in c for c in contents) and not any("20000" in c or "20001" in c for c in contents)
    ids = [json.loads(line)["id"] for line in path.read_text().splitlines()]
    assert sorted(ids) == [0, 1, 2]
    again, client = run_batch(tmp_path, examples)
    assert again.new == 0 and client.requests == []


def test_an_example_that_lost_a_call_is_not_written_and_is_retried(tmp_path):
    examples = [passkey_example(0, "11111", 5), passkey_example(1, "22222", 5, lines=10)]

    def flaky(request: ChatRequest) -> str:
        if "22222" in request.messages[-1].content:
            raise LLMCallError("503 after 4 retries")
        return reader(request)

    report, _ = run_batch(tmp_path, examples, client=ScriptedClient(responder=flaky, counter=WordCounter()))
    assert report.n == 1 and report.failed_examples == 1
    path = tmp_path / "out" / "preds_passkey.jsonl"
    assert [p.id for p in read_finished(path, "mr")] == [0]
    report, client = run_batch(tmp_path, examples)  # the server is back
    assert report.n == 2 and report.new == 1 and report.scores["official"] == 100.0


def test_an_invalid_reply_is_the_models_failure_and_is_written(tmp_path):
    def babbler(request: ChatRequest) -> str:
        return "not json" if request.schema_name == "MapOutput" else reader(request)

    report, _ = run_batch(tmp_path, [passkey_example(0, "11111", 5)], client=ScriptedClient(responder=babbler))
    assert report.n == 1 and report.failed_calls > 0 and report.scores["official"] == 0.0
    (prediction,) = read_finished(tmp_path / "out" / "preds_passkey.jsonl", "mr")
    assert not prediction.found and prediction.unread_chunks  # the "not found" names what went unread


def test_examples_run_concurrently(tmp_path):
    client = ScriptedClient(responder=reader, counter=WordCounter(), delay_s=0.02)
    examples = [passkey_example(i, f"{30000 + i}", depth=3, lines=10) for i in range(4)]
    run_batch(tmp_path, examples, client=client, in_flight=3, **{"llm.concurrency": 2})
    assert client.max_in_flight == 2  # three examples at once, within one budget of two calls


def test_results_of_another_model_are_refused(tmp_path):
    examples = [passkey_example(0, "11111", 5), passkey_example(1, "22222", 5)]
    run_batch(tmp_path, examples)
    path = tmp_path / "out" / "preds_passkey.jsonl"
    path.write_text(path.read_text().splitlines(keepends=True)[0])  # one example left to run
    other = ScriptedClient(responder=reader, counter=WordCounter())
    other.describe = lambda: "another model"
    with pytest.raises(UsageError, match="holds results of scripted fake client, not another model"):
        run_batch(tmp_path, examples, client=other)
    assert len(path.read_text().splitlines()) == 1


def test_other_data_under_the_same_task_is_refused(tmp_path):
    run_batch(tmp_path, [passkey_example(0, "11111", 5)])
    with pytest.raises(UsageError, match="is not the passkey data this folder's results came from"):
        run_batch(tmp_path, [passkey_example(0, "99999", 5)])


def test_an_unreachable_server_stops_the_batch(tmp_path):
    down = ServerUnavailableError("http://127.0.0.1:9/v1", "connection refused")
    client = ScriptedClient([down], responder=reader, counter=WordCounter())
    with pytest.raises(ServerUnavailableError):
        run_batch(
            tmp_path, [passkey_example(0, "11111", 5), passkey_example(1, "22222", 5)], client=client, in_flight=1
        )
    assert not (tmp_path / "out" / "preds_passkey.jsonl").read_text()


def test_an_out_dir_of_the_other_method_is_refused(tmp_path):
    run_batch(tmp_path, [passkey_example(0, "11111", 5)])
    with pytest.raises(UsageError, match="holds --method mr predictions"):
        run_batch(tmp_path, [passkey_example(0, "11111", 5)], method="direct")


def test_direct_cuts_the_middle_and_uses_the_task_reply_length(tmp_path):
    # 1,000 filler lines of 18 words: far over the 2,000-token window, key in the middle.
    examples = [
        passkey_example(0, "33333", depth=2, lines=1000),
        passkey_example(1, "44444", depth=500, lines=1000),
    ]
    client = ScriptedClient(responder=reader, counter=WordCounter(), window=2000)
    report, client = run_batch(tmp_path, examples, method="direct", client=client, in_flight=1)
    assert len(client.requests) == 2 and report.calls == 2
    assert {r.max_tokens for r in client.requests} == {task_config("passkey").direct_max_tokens}
    for request in client.requests:
        assert request.json_schema is None
        user = request.messages[-1].content
        assert user.startswith("There is an important info hidden") and user.endswith("What is the pass key?")
        assert WordCounter().count_batch([user])[0] < 2000
    rows = read_finished(tmp_path / "out" / "preds_passkey.jsonl", "direct")
    predictions = {p.id: p.prediction for p in rows}
    assert predictions == {0: "33333", 1: "I do not know."}  # the middle needle was cut out
    assert report.scores["official"] == 50.0


def test_task_settings_sit_under_the_users_config(tmp_path):
    preset = task_config("longbook_sum_eng").pipeline
    assert PipelineConfig.load(preset=preset).generation.reduce_max_tokens == 1536
    user = tmp_path / "mine.yaml"
    user.write_text("generation:\n  reduce_max_tokens: 999\n")
    config = PipelineConfig.load(user, preset=preset)
    assert config.generation.reduce_max_tokens == 999 and config.task_type == "summary"


def test_a_hub_run_pins_the_dataset_commit_it_started_with(tmp_path, monkeypatch):
    from llmxmr.bench.infinitebench import data

    resolved = []
    monkeypatch.setattr(data, "resolve_hf_revision", lambda revision: resolved.append(revision) or "c0ffee")
    assert data.pinned_revision(tmp_path, None) == "c0ffee" and resolved == ["main"]
    assert data.pinned_revision(tmp_path, None) == "c0ffee" and resolved == ["main"]  # resumed: not resolved again
    assert data.pinned_revision(tmp_path, "c0ffee") == "c0ffee"
    assert data.pinned_revision(tmp_path, "main") == "c0ffee" and resolved == ["main"]  # the same command again
    with pytest.raises(UsageError, match="holds predictions for .*@c0ffee"):
        data.pinned_revision(tmp_path, "v2")
    assert data.DataSource(hf_revision="c0ffee").model_dump(exclude_none=True) == {"hf_revision": "c0ffee"}


def test_a_damaged_pinned_revision_is_one_line_naming_the_file(tmp_path):
    from llmxmr.bench.infinitebench import data

    (tmp_path / data.REVISION_FILE).write_text("main", encoding="utf-8")  # killed mid-write by an older release
    with pytest.raises(UsageError, match="hf_revision.txt is damaged"):
        data.pinned_revision(tmp_path, None)


# ---- examples that share a context: one reading ----------------------------------------------

BOXES = {"A": "11111", "B": "22222", "C": "33333"}


def boxes_context(shelf: int, lines: int = 120) -> str:
    """A context with a pass key per box, far apart; each shelf's keys differ."""
    parts = [FILLER] * lines
    for place, (box, key) in reversed(list(enumerate(BOXES.items()))):
        parts.insert(10 + 45 * place, f"The pass key of box {box} is {shelf}{key[1:]}.\n")
    return "".join(parts)


def box_example(identifier: int, shelf: int, box: str) -> Example:
    return Example(
        id=identifier,
        context=boxes_context(shelf),
        input=f"What is the pass key of box {box}?",
        answer=[f"{shelf}{BOXES[box][1:]}"],
    )


def box_of(request: ChatRequest) -> str:
    return re.findall(r"pass key of box (\w)\?", map_parts(request)[1])[0]


def box_reader(request: ChatRequest) -> str:
    """Finds the key of the box a map request asks about in its chunk."""
    if request.schema_name != "MapOutput":
        return reader(request)
    chunk, _ = map_parts(request)
    sentence = re.search(rf"The pass key of box {box_of(request)} is (\d+)\.", chunk)
    return (
        partial_reply(sentence.group(1), 5.0, info=sentence.group(0)) if sentence else partial_reply(None, 0.0, info="")
    )


# Two shelves, three boxes each, the examples of one shelf not next to each other in the file.
SHELVES = [box_example(i, 1 + i % 2, "ABC"[i // 2]) for i in range(6)]


def test_examples_sharing_a_context_are_read_once(tmp_path, chunkings):
    report, client = run_batch(tmp_path, SHELVES, client=ScriptedClient(responder=box_reader, counter=WordCounter()))
    assert len(chunkings) == 2 and chunkings[0] == chunkings[1] > 1
    sent = map_requests(client)  # each distinct chunk of a context once per question
    assert len(sent) < chunkings[0] * 3 + chunkings[1] * 3
    rows = read_finished(tmp_path / "out" / "preds_passkey.jsonl", "mr")
    assert {p.id: p.prediction for p in rows} == {e.id: e.answer[0] for e in SHELVES}
    assert (report.n, report.documents, report.scores["official"]) == (6, 2, 100.0)
    header, _, row = format_table([report]).splitlines()
    assert header.split()[:4] == ["task", "method", "n", "docs"] and row.split()[:4] == ["passkey", "mr", "6", "2"]
    summary = write_summary(tmp_path / "out", "mr", DataSource(), [report])
    assert summary["tasks"][0]["documents"] == 2
    assert not sent_twice(client)
    assert len(sent) <= sum(requests_alone(tmp_path, e, box_reader, "MapOutput") for e in SHELVES)


def test_each_example_gets_what_it_got_before_grouping(tmp_path):
    """The predictions of examples read together equal those of each example run alone."""
    run_batch(tmp_path, SHELVES, client=ScriptedClient(responder=box_reader, counter=WordCounter()))
    fields = ("prediction", "found", "calls", "failed_calls", "prompt_tokens", "completion_tokens")
    together = {
        p.id: [getattr(p, f) for f in fields] for p in read_finished(tmp_path / "out" / "preds_passkey.jsonl", "mr")
    }
    config = BatchRun(tmp_path / "alone", overrides={"chunking.chunk_tokens": 300}).config_for("passkey")

    def alone(example: Example) -> list:
        client = ScriptedClient(responder=box_reader, counter=WordCounter())
        result = MapReducePipeline(config, client=client).run(example.context, question_for("passkey", example))
        totals = result.trace.totals
        return [
            result.answer,
            result.found,
            totals.calls,
            totals.failed_calls,
            totals.prompt_tokens,
            totals.completion_tokens,
        ]

    assert together == {e.id: alone(e) for e in SHELVES}


def test_a_rerun_asks_only_the_unfinished_questions_of_a_context(tmp_path, chunkings):
    run_batch(tmp_path, SHELVES, client=ScriptedClient(responder=box_reader, counter=WordCounter()))
    path = tmp_path / "out" / "preds_passkey.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(line for line in lines if json.loads(line)["id"] not in (2, 4)))  # shelf 1, boxes B and C
    chunkings.clear()
    report, client = run_batch(tmp_path, SHELVES, client=ScriptedClient(responder=box_reader, counter=WordCounter()))
    assert len(chunkings) == 1 and {box_of(r) for r in map_requests(client)} == {"B", "C"}
    assert (report.n, report.new, report.documents) == (6, 2, 2)
    assert sorted(p.id for p in read_finished(path, "mr")) == list(range(6))
    rerun = [e for e in SHELVES if e.id in (2, 4)]
    assert len(map_requests(client)) == sum(requests_alone(tmp_path, e, box_reader, "MapOutput") for e in rerun)


def test_an_example_that_lost_a_call_is_not_written_while_its_group_mates_are(tmp_path):
    def flaky(request: ChatRequest) -> str:
        if request.schema_name == "MapOutput" and box_of(request) == "B":
            raise LLMCallError("503 after 4 retries")
        return box_reader(request)

    report, _ = run_batch(tmp_path, SHELVES, client=ScriptedClient(responder=flaky, counter=WordCounter()))
    path = tmp_path / "out" / "preds_passkey.jsonl"
    assert sorted(p.id for p in read_finished(path, "mr")) == [0, 1, 4, 5]  # boxes B (ids 2 and 3) lost calls
    assert (report.n, report.failed_examples, report.documents) == (4, 2, 2)
    report, client = run_batch(tmp_path, SHELVES, client=ScriptedClient(responder=box_reader, counter=WordCounter()))
    assert {box_of(r) for r in map_requests(client)} == {"B"}
    assert (report.n, report.new, report.scores["official"]) == (6, 2, 100.0)


def test_direct_makes_one_call_per_example_even_when_they_share_a_context(tmp_path, chunkings):
    report, client = run_batch(
        tmp_path, SHELVES, method="direct", client=ScriptedClient(responder=reader, counter=WordCounter())
    )
    assert len(client.requests) == 6 and all(r.json_schema is None for r in client.requests)
    assert chunkings == [] and (report.n, report.documents) == (6, 2)


# ---- the direct baseline in flight ------------------------------------------------------------


@pytest.mark.parametrize(("concurrency", "examples"), [(3, 8), (10, 12)])
def test_direct_examples_overlap_up_to_the_concurrency(tmp_path, concurrency, examples):
    """--concurrency bounds the direct calls in flight, and is reached: not held to the 8 examples
    that map-reduce keeps on a server."""
    from click.testing import CliRunner

    from llmxmr.cli import main
    from tests.fake_server import Answer, completion, fake_server, models

    data = tmp_path / "passkey.jsonl"
    data.write_text(
        "".join(passkey_example(i, f"{50000 + i}", depth=3, lines=10).model_dump_json() + "\n" for i in range(examples))
    )
    full = threading.Event()

    def held(body: dict) -> Answer:
        """Each reply waits until as many calls as the concurrency allows are in flight (or 10 s)."""
        if server.in_flight >= concurrency:
            full.set()
        full.wait(10)
        return completion("50000")

    scripts = {"/v1/models": [models("vllm", max_model_len=4096)], "/v1/chat/completions": held}
    args = [
        "bench",
        "infinitebench",
        "--task",
        "passkey",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "out"),
        "--method",
        "direct",
    ]
    with fake_server(scripts) as server:
        args += [
            "--base-url",
            server.base_url,
            "--tokenizer",
            "tiktoken",
            "--concurrency",
            str(concurrency),
            "--no-progress",
        ]
        result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert sum(path == "/v1/chat/completions" for path, _ in server.requests) == examples
    assert server.max_in_flight == concurrency


def test_direct_counts_tokens_off_the_event_loop():
    """Counting a long document takes a while; the event loop stays free for other calls."""
    import threading

    from llmxmr.direct import answer_directly
    from llmxmr.prompts import ChatMessage

    class ThreadRecordingCounter(WordCounter):
        def __init__(self) -> None:
            self.threads: set[int] = set()

        def count_batch(self, texts):
            self.threads.add(threading.get_ident())
            return super().count_batch(texts)

    counter = ThreadRecordingCounter()
    client = ScriptedClient(["42"], counter=counter, window=1000)

    async def answer() -> int:
        await answer_directly(
            client, PipelineConfig.load(), lambda text: [ChatMessage(role="user", content=text)], FILLER * 100, 16
        )
        return threading.get_ident()

    loop_thread = asyncio.run(answer())
    assert counter.threads and loop_thread not in counter.threads
