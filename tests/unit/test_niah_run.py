"""Needle-in-a-haystack runs with the scripted fake client: cells, resume, judge, outputs, CLI."""

from __future__ import annotations

import asyncio
import csv
import json
import re

import pytest
from click.testing import CliRunner

from llmxmr.bench.niah import plot
from llmxmr.bench.niah.needles import CLASSIC, CLASSIC_NEEDLE, ruler_needles
from llmxmr.bench.niah.plot import score_grid, summarize
from llmxmr.bench.niah.runner import CellResult, NiahRun, RunSettings, judge_messages, load_cells
from llmxmr.cli import main
from llmxmr.clients.base import ChatRequest
from llmxmr.clients.fake import ScriptedClient
from llmxmr.config import PipelineConfig
from llmxmr.errors import LLMCallError, UsageError
from tests.conftest import WordCounter, final_reply, partial_reply, sent_twice


@pytest.fixture
def haystack(tmp_path):
    folder = tmp_path / "essays"
    folder.mkdir()
    for name in ("b.txt", "a.txt"):
        (folder / name).write_text(" ".join(f"Essay {name} sentence {i} is about startups." for i in range(200)))
    return folder


def reader(request: ChatRequest) -> str:
    """Finds the needle's sentence in its chunk; the reduce keeps the first answer it is given."""
    text = request.messages[-1].content
    if request.schema_name == "JudgeVerdict":
        return json.dumps({"score": 7})
    if request.schema_name is None:  # direct
        return "Eat a sandwich in Dolores Park." if "Dolores Park" in text else "I cannot tell."
    if request.schema_name == "MapOutput":
        part = text.rsplit("<document_part>", 1)[1]
        match = re.search(r"The best thing to do in San Francisco is ([^.]+)\.", part)
        if match is None:
            return partial_reply(None, 0.0, info="", rationale="")
        return partial_reply(match.group(1), 5.0, info=match.group(0))
    answers = re.findall(r'"answer": "([^"]+)"', text)
    return final_reply(answers[0] if answers else "nothing")


def run(
    tmp_path,
    haystack,
    *,
    lengths=(400, 800),
    depths=(0.0, 50.0, 100.0),
    client=None,
    cells_in_flight=None,
    config=(),
    **settings,
):
    values = {
        "haystack": str(haystack),
        "needles": CLASSIC,
        "method": "mr",
        "judge": False,
        "buffer": 50,
        "task_type": "retrieval",
    }
    values.update(settings)
    client = client or ScriptedClient(responder=reader, counter=WordCounter())
    config = PipelineConfig.load(task_type=values["task_type"], **{"chunking.chunk_tokens": 150, **dict(config)})
    runner = NiahRun(
        RunSettings(**values),
        tmp_path / "out",
        config,
        client=client,
        cells_in_flight=cells_in_flight,
        progress=False,
        log=lambda _: None,
    )
    cells = asyncio.run(runner.run(list(lengths), list(depths)))
    return cells, client, runner


def test_every_cell_is_run_scored_and_written(tmp_path, haystack):
    cells, client, _ = run(tmp_path, haystack)
    assert len(cells) == 6 and len(list((tmp_path / "out" / "cells").glob("*.json"))) == 6
    assert all(cell.score == 1.0 and cell.recall == 1.0 for cell in cells)
    assert {(c.context_length, c.depth_percent) for c in cells} == {(n, d) for n in (400, 800) for d in (0, 50, 100)}
    # Cells cut from one haystack share their chunks before the needle: each is read once.
    assert not sent_twice(client) and len(client.requests) < sum(c.calls for c in cells)
    deepest = next(c for c in cells if c.context_length == 800 and c.depth_percent == 100)
    assert deepest.placements[0].token_offset > 700
    assert deepest.needles == CLASSIC.needles and deepest.kept_tokens == deepest.context_tokens
    # Why each cell scored so: its calls with their checks, and the needle cited where it lies.
    assert all(cell.trace is not None and len(cell.trace.calls) == cell.calls for cell in cells)
    (citation,) = deepest.citations
    assert citation.quote in CLASSIC_NEEDLE and "Dolores Park" in citation.quote
    assert deepest.trace.calls[-1].stage == "reduce"
    assert all(cell.status == "answered" and cell.unsupported_guess is None for cell in cells)
    # A cell written before citations, traces and statuses were recorded still loads.
    old = json.loads(deepest.model_dump_json(exclude={"citations", "trace", "status", "unsupported_guess"}))
    assert CellResult.model_validate(old).trace is None and CellResult.model_validate(old).status is None


def test_a_cell_records_why_it_has_no_answer(tmp_path, haystack):
    def misquotes(request: ChatRequest) -> str:
        if request.schema_name == "MapOutput":  # an answer, quoting a sentence that does not hold it
            part = request.messages[-1].content.rsplit("<document_part>", 1)[1]
            sentence = re.search(r"Essay \S+ sentence \d+ is about startups\.", part)
            return partial_reply("visit the Golden Gate Bridge", 5.0, info=sentence.group(0) if sentence else "")
        return final_reply("nothing")

    cells, _, _ = run(
        tmp_path,
        haystack,
        lengths=(400,),
        depths=(50.0,),
        task_type="qa",
        client=ScriptedClient(responder=misquotes, counter=WordCounter()),
    )
    (cell,) = cells
    assert (cell.status, cell.found, cell.response) == ("unsupported", False, "")
    assert cell.unsupported_guess == "nothing" and cell.score == 0


def test_cells_in_flight_share_one_budget_of_calls(tmp_path, haystack):
    client = ScriptedClient(responder=reader, counter=WordCounter(), delay_s=0.02)
    cells, client, _ = run(tmp_path, haystack, client=client, cells_in_flight=4, config={"llm.concurrency": 3})
    assert len(cells) == 6 and all(cell.score == 1.0 for cell in cells)
    assert client.max_in_flight == 3  # not 3 per cell: four cells of several chunks were open at once


def test_rerun_runs_only_missing_cells(tmp_path, haystack):
    run(tmp_path, haystack)
    _, client, _ = run(tmp_path, haystack)
    assert client.requests == []
    cells_dir = tmp_path / "out" / "cells"
    (cells_dir / "len_800_depth_50.json").unlink()
    (cells_dir / "len_400_depth_0.json").rename(cells_dir / "len_400_depth_0.json.partial")  # killed mid-write
    cells, client, _ = run(tmp_path, haystack)
    assert len(cells) == 6
    assert sum(r.schema_name == "FinalAnswer" for r in client.requests) == 2  # one reduce per cell rerun


def test_other_settings_are_refused(tmp_path, haystack):
    run(tmp_path, haystack)
    with pytest.raises(UsageError, match="other needles"):
        run(tmp_path, haystack, needles=ruler_needles(1, 2, 1, seed=3))
    with pytest.raises(UsageError, match="other method"):
        run(tmp_path, haystack, method="direct")


def test_judge_scores_one_to_ten(tmp_path, haystack):
    cells, client, _ = run(tmp_path, haystack, lengths=(400,), depths=(50.0,), judge=True)
    (cell,) = cells
    assert (cell.judge_score, cell.score, cell.recall) == (7.0, 7.0, 1.0)
    assert client.requests[-1].schema_name == "JudgeVerdict"
    assert "Dolores Park" in client.requests[-1].messages[-1].content  # the reference is the needle
    assert summarize(cells, 10.0).max_score == 10.0


def test_a_cell_that_lost_a_call_is_not_written_and_is_retried(tmp_path, haystack):
    def broken(request: ChatRequest) -> str:
        raise LLMCallError("502 after 4 retries")

    cells, _, runner = run(tmp_path, haystack, lengths=(400,), depths=(0.0,), client=ScriptedClient(responder=broken))
    assert cells == [] and runner.failed_cells == 1
    cells, _, runner = run(tmp_path, haystack, lengths=(400,), depths=(0.0,))
    assert len(cells) == 1 and runner.failed_cells == 0 and cells[0].score == 1.0


def test_direct_method_sees_the_needle_only_when_it_survives_the_cut(tmp_path, haystack):
    client = ScriptedClient(responder=reader, counter=WordCounter(), window=600)
    cells, client, _ = run(
        tmp_path, haystack, lengths=(2000,), depths=(0.0, 50.0, 100.0), method="direct", client=client
    )
    scores = {c.depth_percent: c.score for c in cells}
    assert scores == {0.0: 1.0, 50.0: 0.0, 100.0: 1.0}
    assert all(c.kept_tokens < c.context_tokens for c in cells)
    assert all(r.schema_name is None for r in client.requests)


def test_grid_means_and_missing_cells():
    from llmxmr.bench.niah.runner import CellResult

    def cell(length, depth, score):
        return CellResult(
            model="m",
            method="mr",
            context_length=length,
            context_tokens=length,
            kept_tokens=length,
            depth_percent=depth,
            needles=["x"],
            placements=[],
            question="q",
            expected=["x"],
            response="r",
            found=True,
            recall=score,
            score=score,
            duration_s=1.0,
            calls=2,
            failed_calls=0,
            prompt_tokens=10,
            completion_tokens=1,
        )

    grid = score_grid([cell(1000, 0, 1.0), cell(1000, 0, 0.0), cell(2000, 50, 1.0)])
    assert grid.lengths == [1000, 2000] and grid.depths == [0, 50]
    assert grid.scores == [[0.5, None], [None, 1.0]]


def test_cli_writes_heatmap_csv_summary_and_redraws(tmp_path, haystack, monkeypatch):
    client = ScriptedClient(responder=reader, counter=WordCounter())
    monkeypatch.setattr("llmxmr.executor.make_client", lambda config: client)
    out = tmp_path / "run"
    args = [
        "bench",
        "niah",
        "--haystack",
        str(haystack),
        "--lengths",
        "400,800",
        "--depths",
        "0:100:3",
        "--buffer",
        "50",
    ]
    args += ["--chunk-tokens", "150", "--out", str(out), "--no-progress"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "mean score 1.000 of 1 · 6 cells" in result.output
    assert (out / "heatmap.png").read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.reader((out / "grid.csv").open()))
    assert rows == [
        ["depth_percent", "400", "800"],
        ["0", "1.0000", "1.0000"],
        ["50", "1.0000", "1.0000"],
        ["100", "1.0000", "1.0000"],
    ]
    (out / "heatmap.png").unlink()
    titles = []
    draw = plot.draw_heatmap
    monkeypatch.setattr(
        plot, "draw_heatmap", lambda grid, path, title, top: (titles.append(title), draw(grid, path, title, top))
    )
    again = CliRunner().invoke(main, ["bench", "niah", "--plot-only", str(out), "--json"], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["summary"]["cells"] == 6 and (out / "heatmap.png").exists()
    assert titles == [f"{client.describe()}\nmr · classic needle · mean score 1.00 of 1"]
    assert len(load_cells(out)) == 6
    for damaged in ('{"wall', "[]", '{"wall_time_s": "soon"}'):  # the summary is redrawn, not read
        (out / "summary.json").write_text(damaged)
        again = CliRunner().invoke(main, ["bench", "niah", "--plot-only", str(out), "--json"], catch_exceptions=False)
        assert again.exit_code == 0 and json.loads(again.stdout)["wall_time_s"] is None


def test_cli_task_type_comes_from_config_unless_the_flag_says_otherwise(tmp_path, haystack, monkeypatch):
    client = ScriptedClient(responder=reader, counter=WordCounter())
    monkeypatch.setattr("llmxmr.executor.make_client", lambda config: client)
    mine = tmp_path / "mine.yaml"
    mine.write_text("task_type: qa\n")

    def task_type(out, *extra):
        args = ["bench", "niah", "--haystack", str(haystack), "--lengths", "400", "--depths", "50", "--buffer", "50"]
        result = CliRunner().invoke(
            main, [*args, "--out", str(tmp_path / out), "--no-progress", *extra], catch_exceptions=False
        )
        assert result.exit_code == 0, result.output
        return json.loads((tmp_path / out / "run.json").read_text())["task_type"]

    assert task_type("a") == "retrieval"
    assert task_type("b", "--config", str(mine)) == "qa"
    assert task_type("c", "--config", str(mine), "--task-type", "math") == "math"
    # A list of values to find is a question, not one value to retrieve: the retrieval prompts
    # ask for "the value alone".
    assert task_type("d", "--ruler-keys", "1") == "retrieval"
    assert task_type("e", "--ruler-keys", "1", "--ruler-values", "3") == "qa"
    assert task_type("f", "--ruler-keys", "2", "--ruler-values", "3", "--task-type", "retrieval") == "retrieval"


def test_cli_needle_options_are_checked(tmp_path, haystack, monkeypatch):
    client = ScriptedClient(responder=reader, counter=WordCounter())  # never the embedded model
    monkeypatch.setattr("llmxmr.executor.make_client", lambda config: client)

    def invoke(*extra):
        args = ["bench", "niah", "--haystack", str(haystack), "--out", str(tmp_path / "o"), *extra]
        return CliRunner().invoke(main, args, catch_exceptions=False)

    result = invoke("--needle", "The code is 42.", "--question", "What is the code?")
    assert result.exit_code == 2 and "at least one --answer" in result.output
    result = invoke("--needle", "The code is 42.", "--question", "q", "--answer", "42", "--ruler-keys", "2")
    assert result.exit_code == 2 and "not both" in result.output
    result = CliRunner().invoke(main, ["bench", "niah", "--out", str(tmp_path / "o")], catch_exceptions=False)
    assert result.exit_code == 2 and "--haystack" in result.output
    # The retrieval check keeps values from sentences naming the request: a question sharing no
    # word with its needle would score 0 whatever the model did.
    unnamed = (
        "--needle",
        "The access code for the vault is 4417.",
        "--question",
        "Which PIN opens the safe?",
        "--answer",
        "4417",
    )
    result = invoke(*unnamed)
    assert result.exit_code == 2 and "shares no word with the needle" in result.output
    assert not (tmp_path / "o").exists()
    # Lengths without room for the needle are refused before anything runs, not as failed cells.
    result = invoke("--lengths", "30,400", "--depths", "50", "--buffer", "50")
    assert result.exit_code == 2 and "context length 30" in result.output and "cell" not in result.output
    assert not (tmp_path / "o").exists()


def test_a_folder_whose_first_attempt_wrote_no_cell_takes_new_settings(tmp_path, haystack):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match="no .txt files"):
        run(tmp_path, empty, lengths=(400,), depths=(0.0,))
    cells, _, _ = run(tmp_path, haystack, lengths=(400,), depths=(0.0,))
    assert len(cells) == 1
    with pytest.raises(UsageError, match="other haystack"):  # now the folder has a cell: bound
        run(tmp_path, empty, lengths=(400,), depths=(0.0,))


def test_direct_and_judge_calls_stay_within_the_budget(tmp_path, haystack):
    client = ScriptedClient(responder=reader, counter=WordCounter(), delay_s=0.02)
    cells, client, _ = run(
        tmp_path, haystack, client=client, cells_in_flight=4, config={"llm.concurrency": 1}, method="direct", judge=True
    )
    assert len(cells) == 6 and client.max_in_flight == 1


def test_the_judge_is_shown_the_asked_needles_not_the_distractors():
    needles = ruler_needles(1, 1, 3, seed=0)
    (message,) = judge_messages(needles, "It is 1234567.")
    judge_prompt = message.content
    (asked,) = needles.expected
    assert asked in judge_prompt
    for needle in needles.needles:
        assert (needle.strip() in judge_prompt) == (asked in needle)
