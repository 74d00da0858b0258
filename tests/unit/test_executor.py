"""The resumable-run engine: completion records, failures counted, stats written, and one writer
per output folder (a second process refused in one line, a dead holder's lock taken over)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from llmxmr.cli import main
from llmxmr.clients.fake import ScriptedClient
from llmxmr.config import PipelineConfig
from llmxmr.errors import LlmxmrError, ServerUnavailableError
from llmxmr.executor import (
    LOCK_FILE,
    Executor,
    FolderInUse,
    FolderLock,
    Job,
    JsonFiles,
    JsonLines,
    RunStats,
    Shared,
    Together,
)

REPOSITORY = Path(__file__).resolve().parents[2]
# A second process that takes a folder's lock, says so, and holds it until its stdin closes.
HOLDER = (
    "import sys; from pathlib import Path; from llmxmr.executor import FolderLock; "
    "FolderLock(Path(sys.argv[1])).acquire(); print('held', flush=True); sys.stdin.read()"
)


class Line(BaseModel):
    id: str
    value: int


def lines_file(path: Path) -> JsonLines[Line]:
    return JsonLines(path, Line, lambda line: line.id, "a test line")


def config() -> PipelineConfig:
    return PipelineConfig.load(**{"llm.concurrency": 3, "llm.base_url": "http://unused/v1"})


def run(folder: Path, job: Job, client=None, in_flight: int | None = None, log=None) -> RunStats:
    async def scenario() -> RunStats:
        given = client or ScriptedClient()
        async with Executor(folder, client=given, in_flight=in_flight, progress=False, log=log) as executor:
            return await executor.run(job)

    return asyncio.run(scenario())


def job_of(folder: Path, ids: list[str], work, **more) -> Job:
    sink = lines_file(folder / "lines.jsonl")
    return Job(name="test", unit="line", items=ids, key=str, work=work, sink=sink, config=config(), **more)


async def double(item: str, shared: Shared) -> Line:
    return Line(id=item, value=2 * int(item))


@pytest.fixture
def holder(tmp_path):
    """A real second process holding the lock of ``tmp_path / "out"``."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "out")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPOSITORY,
    )
    assert process.stdout.readline() == "held\n"
    yield process
    process.kill()
    process.wait()


def test_items_are_run_once_and_a_rerun_runs_only_the_missing_ones(tmp_path):
    stats = run(tmp_path, job_of(tmp_path, ["1", "2", "3"], double))
    assert (stats.items, stats.skipped, stats.new, stats.failed, stats.concurrency) == (3, 0, 3, 0, 3)
    seen: list[str] = []

    async def recording(item: str, shared: Shared) -> Line:
        seen.append(item)
        return await double(item, shared)

    stats = run(tmp_path, job_of(tmp_path, ["1", "2", "3", "4"], recording))
    assert seen == ["4"] and (stats.skipped, stats.new) == (3, 1)
    assert [line.value for line in lines_file(tmp_path / "lines.jsonl").read()] == [2, 4, 6, 8]
    assert json.loads((tmp_path / "stats" / "test.json").read_text()) == stats.model_dump()


def test_a_finished_job_opens_no_client(tmp_path, monkeypatch):
    run(tmp_path, job_of(tmp_path, ["1"], double))
    monkeypatch.setattr("llmxmr.executor.make_client", lambda config: pytest.fail("a client was opened"))

    async def resume() -> RunStats:
        async with Executor(tmp_path, progress=False) as executor:
            return await executor.run(job_of(tmp_path, ["1"], double))

    stats = asyncio.run(resume())
    assert (stats.skipped, stats.new, stats.concurrency, stats.in_flight) == (1, 0, None, None)


def test_the_client_the_executor_opens_it_closes(tmp_path, monkeypatch):
    opened: list[ScriptedClient] = []
    monkeypatch.setattr("llmxmr.executor.make_client", lambda config: opened.append(ScriptedClient()) or opened[-1])

    async def twice() -> None:
        async with Executor(tmp_path, progress=False) as executor:
            await executor.run(job_of(tmp_path, ["1"], double))
            await executor.run(job_of(tmp_path, ["2"], double))

    asyncio.run(twice())
    assert len(opened) == 1 and opened[0].closed


def test_a_failed_item_is_counted_logged_and_not_saved(tmp_path):
    async def flaky(item: str, shared: Shared) -> Line:
        if item == "2":
            raise LlmxmrError("lost a call")
        return await double(item, shared)

    logged: list[str] = []
    stats = run(tmp_path, job_of(tmp_path, ["1", "2", "3"], flaky), log=logged.append)
    assert (stats.new, stats.failed) == (2, 1) and logged == ["test line 2 failed: lost a call"]
    assert lines_file(tmp_path / "lines.jsonl").finished() == {"1", "3"}


def test_groups_run_as_one_unit_and_each_item_is_saved_or_failed_alone(tmp_path):
    """Items grouped by their last digit: one call of the work per group, with only its unfinished
    items, in the order of each group's first item; an outcome that is an error fails that item
    alone, an error raised fails its whole group; the stats count items."""
    calls: list[list[str]] = []
    failing = True

    async def by_group(items, shared: Shared) -> list:
        calls.append(list(items))
        if failing and "13" in items:
            raise LlmxmrError("lost the reading")
        return [
            LlmxmrError("lost a call") if failing and item == "21" else Line(id=item, value=2 * int(item))
            for item in items
        ]

    def job(ids: list[str]) -> Job:
        return job_of(tmp_path, ids, Together(group=lambda item: item[-1], work=by_group))

    logged: list[str] = []
    stats = run(tmp_path, job(["11", "12", "21", "13", "31", "22", "23"]), in_flight=1, log=logged.append)
    assert calls == [["11", "21", "31"], ["12", "22"], ["13", "23"]]
    assert (stats.items, stats.new, stats.failed, stats.in_flight) == (7, 4, 3, 1)
    assert lines_file(tmp_path / "lines.jsonl").finished() == {"11", "31", "12", "22"}
    assert sorted(logged) == [
        f"test line {i} failed: lost {what}"
        for i, what in (("13", "the reading"), ("21", "a call"), ("23", "the reading"))
    ]
    calls.clear()
    failing = False
    stats = run(tmp_path, job(["11", "12", "21", "13", "31", "22", "23", "33"]), in_flight=1)
    assert calls == [["21"], ["13", "23", "33"]] and (stats.skipped, stats.new, stats.failed) == (4, 4, 0)
    assert [line.value for line in lines_file(tmp_path / "lines.jsonl").read()][-4:] == [42, 26, 46, 66]


def test_an_unreachable_server_stops_the_run(tmp_path):
    async def down(item: str, shared: Shared) -> Line:
        raise ServerUnavailableError("http://127.0.0.1:9/v1", "connection refused")

    with pytest.raises(ServerUnavailableError):
        run(tmp_path, job_of(tmp_path, ["1", "2"], down))
    assert not (tmp_path / "stats" / "test.json").exists()


def test_items_in_flight_default_to_what_the_server_runs_at_once(tmp_path):
    at_once = 0
    most = 0

    async def counting(item: str, shared: Shared) -> Line:
        nonlocal at_once, most
        at_once += 1
        most = max(most, at_once)
        await asyncio.sleep(0.01)
        at_once -= 1
        return await double(item, shared)

    ids = [str(i) for i in range(12)]
    assert run(tmp_path / "a", job_of(tmp_path / "a", ids, counting)).in_flight == 6  # twice the call slots
    assert run(tmp_path / "b", job_of(tmp_path / "b", ids, counting, on_server=4)).in_flight == 4
    assert run(tmp_path / "c", job_of(tmp_path / "c", ids, counting), client=ScriptedClient(parallel=1)).in_flight == 1
    assert run(tmp_path / "d", job_of(tmp_path / "d", ids, counting), in_flight=5).in_flight == 5
    assert most == 6


def test_files_per_item_are_whole_and_partial_ones_are_not_finished(tmp_path):
    cells = tmp_path / "cells"
    job = Job(
        name="grid",
        unit="cell",
        items=["a", "b"],
        key=str,
        work=lambda item, shared: double("1", shared),
        sink=JsonFiles(cells),
        config=config(),
    )
    run(tmp_path, job)
    (cells / "b.json").rename(cells / "b.json.partial")  # killed mid-write
    assert JsonFiles(cells).finished() == {"a"}
    assert run(tmp_path, job).new == 1 and json.loads((cells / "b.json").read_text()) == {"id": "1", "value": 2}


def test_a_second_process_is_refused_in_one_line_naming_the_folder_and_its_holder(tmp_path, holder):
    out = tmp_path / "out"
    refusal = f"{out} is being written by process {holder.pid}; wait for it to end or use another --out"
    with pytest.raises(FolderInUse) as refused:
        FolderLock(out).acquire()
    assert str(refused.value) == refusal
    source = tmp_path / "batch.jsonl"
    source.write_text('{"id": 1, "question": "q", "document": "text"}\n')
    args = ["batch", "--input", str(source), "--out", str(out), "--base-url", "http://unused/v1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and result.stderr.splitlines() == [f"error: {refusal}"]
    assert not (out / "results.jsonl").exists()


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path, holder):
    out = tmp_path / "out"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    lock = FolderLock(out)
    lock.acquire()
    assert (out / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    lock.release()


def test_a_lock_file_left_by_a_dead_process_is_taken_over(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / LOCK_FILE).write_text(gone.stdout)  # its pid, and no process behind it
    stats = run(tmp_path, job_of(tmp_path, ["1"], double))
    assert stats.new == 1 and (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"


def test_one_process_cannot_open_a_folder_twice_at_once(tmp_path):
    async def nested() -> None:
        async with Executor(tmp_path, progress=False):
            async with Executor(tmp_path, progress=False):
                pass

    with pytest.raises(FolderInUse, match=f"process {os.getpid()}"):
        asyncio.run(nested())
    lock = FolderLock(tmp_path)
    lock.acquire()  # released by the outer executor on its way out
    lock.release()
