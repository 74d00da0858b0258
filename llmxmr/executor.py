"""Resumable runs over many items, in the manner of datatrove's executor: the engine under
``llmxmr batch`` and the benchmark harnesses (InfiniteBench, needle in a haystack).

A ``Job`` names its items, a key per item, an async work function and a sink. What the sink
already holds are the job's completion records: those items are skipped, so a rerun resumes. The
rest run concurrently within one budget of calls in flight, each result saved the moment it is
done, and the run's figures go to ``stats/<job>.json``. One process at a time writes a folder.

A result is saved only when it is complete: an item whose run lost an LLM call to the transport
(the server could not be made to answer, even after retries) is not saved, so the next run
retries it. A call the model answered, but never validly, is the model's failure and part of its
score: that result is saved.

Items that share something costly, such as questions about one document, can run as one unit
(``Together``): the items left of a group go to one call of its work, which reads the document
once for all of them, and each item's result is saved as the group ends, or not, by its own trace.

    async with Executor(out_dir, client=client) as executor:
        stats = await executor.run(Job(name="batch", unit="document", items=items, key=key_of,
                                       work=answer, sink=JsonLines(...), config=config))
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Generic, Protocol, TypeVar

from pydantic import BaseModel
from tqdm import tqdm

from .clients import make_client
from .clients.base import LLMClient
from .config import PipelineConfig
from .errors import LlmxmrError, ServerError, UsageError
from .scheduling import CallBudget, gather_or_cancel
from .stage_models import StageBudgets, StageClients
from .trace import Trace

Item = TypeVar("Item")
Result = TypeVar("Result", bound=BaseModel)
Result_contra = TypeVar("Result_contra", bound=BaseModel, contravariant=True)
Record = TypeVar("Record", bound=BaseModel)
Value = TypeVar("Value")

LOCK_FILE = ".lock"
STATS_FOLDER = "stats"


class IncompleteResult(LlmxmrError):
    """An item's run lost calls to the transport; it is not saved, so a rerun retries it."""


class MixedResults(UsageError):
    """Results of another model are in the folder: fatal, since every item would hit it."""


class FolderInUse(UsageError):
    """Another process is writing the output folder."""


# ---- what a job is made of -------------------------------------------------------------------


@dataclass(frozen=True)
class Shared:
    """What every item of a run shares: the clients (one per stage's model, ``stage_models``),
    and one budget of calls in flight per client (not one per item), so that items finish one
    after another."""

    clients: StageClients
    budgets: StageBudgets

    @property
    def client(self) -> LLMClient:
        """The client of a call outside the map-reduce stages (a direct answer, a judge's grade):
        the reduce's, the model that writes answers."""
        return self.clients.reduce

    @property
    def calls(self) -> CallBudget:
        """``client``'s budget."""
        return self.budgets.reduce


class Sink(Protocol[Result_contra]):
    """Where finished results go; the keys it already holds are the job's completion records."""

    def finished(self) -> set[str]: ...

    def writer(self) -> AbstractContextManager[Callable[[str, Result_contra], None]]: ...


@dataclass(frozen=True)
class Together(Generic[Item, Result]):
    """The work of a job whose items run in groups: the items ``group`` names alike (questions
    about one document) run as one unit, placed where its first item is. ``work`` gets the group's
    items not finished yet and returns one outcome per item, in order: its result, or the error
    that leaves that item alone without one (``complete_or_error``). An error it raises leaves the
    whole group without results; an unreachable server or another model's results stop the run."""

    group: Callable[[Item], str]
    work: Callable[[Sequence[Item], Shared], Awaitable[Sequence[Result | LlmxmrError]]]


@dataclass(frozen=True)
class Job(Generic[Item, Result]):
    """One set of items for ``Executor.run``."""

    name: str  # the progress bar's label and the stats file's name
    unit: str  # what an item is, for the progress bar and the log: "document", "example"
    items: Sequence[Item]
    key: Callable[[Item], str]  # the item's name in the sink
    work: Callable[[Item, Shared], Awaitable[Result]] | Together[Item, Result]  # an item's, or a group's
    sink: Sink[Result]
    config: PipelineConfig  # the call budget's; the client's too, when the executor opens it
    # Items (or groups) in flight on a server that batches requests; None: twice the call slots, a
    # few more items than the budget holds calls, enough to keep it full.
    on_server: int | None = None
    # Runs once, before the client is opened, when some item is left: loads what only the work
    # needs (the haystack of a needle test), so that a resumed, finished job never reads it.
    prepare: Callable[[], Awaitable[None]] | None = None
    postfix: Callable[[], str] | None = None  # shown beside the progress bar as each item ends


class RunStats(BaseModel):
    """What one invocation did with one job, written to ``stats/<name>.json`` as it ends."""

    name: str
    items: int
    skipped: int  # finished by an earlier run
    new: int  # finished and saved by this run
    failed: int  # without a result: a rerun retries them
    concurrency: int | None  # the call budget (the map model's); None when nothing was left to run
    in_flight: int | None  # items (or groups of a ``Together`` job) at once; None: nothing left to run
    run_time_s: float


# ---- the executor ----------------------------------------------------------------------------


@dataclass
class Executor:
    """Runs jobs into one output folder, which it holds locked from ``async with`` to its end."""

    folder: Path
    # The items' client (or each stage's); without one, the executor opens those named by the
    # config of the first job with items left to run (a finished job opens none) and closes them
    # at the end.
    client: LLMClient | StageClients | None = None
    in_flight: int | None = None  # items (or groups) at once, in every job; None: each job's default
    progress: bool = True
    log: Callable[[str], None] | None = None  # where a failed item is told; None: above the bar
    _opened: StageClients | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._lock = FolderLock(self.folder)

    async def __aenter__(self) -> Executor:
        self._lock.acquire()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        opened, self._opened = self._opened, None
        try:
            if opened is not None:
                await opened.aclose()
        finally:
            self._lock.release()

    async def run(self, job: Job[Item, Result]) -> RunStats:
        """Runs the items the sink does not hold yet and saves each result as it comes. Items
        that fail are counted and logged; an unreachable server or results of another model stop
        everything, since every item would fail the same way."""
        started = time.perf_counter()
        finished = job.sink.finished()
        todo = [item for item in job.items if job.key(item) not in finished]
        failed, concurrency, in_flight = 0, None, None
        if todo:  # resumed and complete: no client is opened, the server is not asked anything
            if job.prepare is not None:
                await job.prepare()
            clients = self._clients_for(job.config)
            shared = Shared(clients, await StageBudgets.open(job.config, clients))
            concurrency = shared.budgets.map.slots
            in_flight = self.in_flight or await default_in_flight(clients, job.on_server or 2 * concurrency)
            with job.sink.writer() as save:
                failed = await self._run_each(job, todo, shared, save, in_flight)
        stats = RunStats(
            name=job.name,
            items=len(job.items),
            skipped=len(job.items) - len(todo),
            new=len(todo) - failed,
            failed=failed,
            concurrency=concurrency,
            in_flight=in_flight,
            run_time_s=round(time.perf_counter() - started, 3),
        )
        (self.folder / STATS_FOLDER).mkdir(exist_ok=True)
        write_atomically(self.folder / STATS_FOLDER / f"{job.name}.json", stats.model_dump_json(indent=2) + "\n")
        return stats

    def _clients_for(self, config: PipelineConfig) -> StageClients:
        if isinstance(self.client, StageClients):
            return self.client
        if self.client is not None:
            return StageClients.every(self.client)
        if self._opened is None:
            self._opened = StageClients.open(config, make_client)
        return self._opened

    async def _run_each(
        self,
        job: Job[Item, Result],
        todo: list[Item],
        shared: Shared,
        save: Callable[[str, Result], None],
        in_flight: int,
    ) -> int:
        """Runs ``job.work`` on every item (or group) of ``todo``, at most ``in_flight`` at once,
        and saves each result as its item or group ends (one unit at a time, off the event loop).
        Returns how many items failed."""
        semaphore = asyncio.Semaphore(in_flight)
        saving = asyncio.Lock()
        failures = 0
        log = self.log or _above_the_bar
        bar = tqdm(total=len(todo), desc=job.name, unit=job.unit, file=sys.stderr, disable=not self.progress)

        async def one(unit: list[Item]) -> None:
            nonlocal failures
            async with semaphore:
                try:
                    outcomes = await _outcomes(job, unit, shared)
                except (ServerError, MixedResults):
                    raise
                except LlmxmrError as exc:
                    outcomes = [exc] * len(unit)
                finally:
                    if job.postfix is not None:
                        bar.set_postfix_str(job.postfix(), refresh=False)
                    bar.update(len(unit))
            done: list[tuple[str, Result]] = []
            for item, outcome in zip(unit, outcomes, strict=True):
                if isinstance(outcome, LlmxmrError):
                    failures += 1
                    log(f"{job.name} {job.unit} {job.key(item)} failed: {outcome}")
                else:
                    done.append((job.key(item), outcome))
            if done:
                async with saving:
                    await asyncio.to_thread(_save_each, save, done)

        try:
            await gather_or_cancel(one(unit) for unit in _units(job, todo))
        finally:
            bar.close()
        return failures


def _units(job: Job[Item, Result], todo: list[Item]) -> list[list[Item]]:
    """What runs as one: each item, or each group of a ``Together`` job, in order of its first item."""
    if not isinstance(job.work, Together):
        return [[item] for item in todo]
    groups: dict[str, list[Item]] = {}
    for item in todo:
        groups.setdefault(job.work.group(item), []).append(item)
    return list(groups.values())


async def _outcomes(job: Job[Item, Result], unit: list[Item], shared: Shared) -> Sequence[Result | LlmxmrError]:
    """One outcome per item of ``unit``; raises what stops the run, even when returned as one."""
    if not isinstance(job.work, Together):
        return [await job.work(unit[0], shared)]
    outcomes = await job.work.work(unit, shared)
    if len(outcomes) != len(unit):
        raise RuntimeError(f"{job.name}: {len(outcomes)} outcomes for a group of {len(unit)} items")
    fatal = next((o for o in outcomes if isinstance(o, (ServerError, MixedResults))), None)
    if fatal is not None:
        raise fatal
    return outcomes


def _save_each(save: Callable[[str, Result], None], done: list[tuple[str, Result]]) -> None:
    for key, result in done:
        save(key, result)


def _above_the_bar(line: str) -> None:
    tqdm.write(line, file=sys.stderr)


async def default_in_flight(client: LLMClient | StageClients, on_server: int) -> int:
    """``on_server`` items at once, but no more than the model runs requests at once (one for the
    embedded model and llama-cpp-python's server; with a model per stage, the fewest of theirs):
    beyond that, more items in flight only delay each one, and their token counts wait behind each
    other's generations."""
    clients = client.distinct() if isinstance(client, StageClients) else [([], client)]
    limits = [parallel for _, each in clients if (parallel := await each.parallel_requests())]
    return min([on_server, *limits])


# ---- one writer per folder -------------------------------------------------------------------


class FolderLock:
    """One process at a time writes a folder: two overlapping runs on one folder appended every
    finished item twice (measured: 60 lines for 40 ids), each not seeing what the other had in
    flight, and one could cut off the other's line being written as if it were torn.

    The lock is the kernel's (``flock`` on ``<folder>/.lock``), not the file's existence: the
    kernel releases it when its holder's file is closed, however the process ends (SIGKILL and
    power loss included), so a lock left by a dead process is free and simply taken, with no
    guessing from pids that may have been reused. The pid written in the file only names the
    holder when a second process is refused."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._fd: int | None = None

    def acquire(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            if not isinstance(exc, BlockingIOError):
                raise
            # Empty when the holder has just taken the lock and not yet written its pid.
            by = f"process {holder}" if holder else "another process"
            message = f"{self.folder} is being written by {by}; wait for it to end or use another --out"
            raise FolderInUse(message) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd

    def release(self) -> None:
        """The file stays: were it removed, a process that had just opened it could still lock
        the removed file while another locks a new one, and both would write."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# ---- sinks -----------------------------------------------------------------------------------


class JsonLines(Generic[Record]):
    """A results file of one JSON line per item, appended and on disk before the next item is
    counted as done: a killed run loses at most the items in flight, and at most one half-written
    last line, cut off when the file is next read."""

    def __init__(self, path: Path, model: type[Record], key: Callable[[Record], str], written_by: str) -> None:
        self.path = path
        self._model = model
        self._key = key
        self._written_by = written_by  # what a line is, for the refusal of a line that is not one

    def read(self) -> list[Record]:
        records = []
        for number, line in finished_lines(self.path):
            try:
                records.append(self._model.model_validate_json(line))
            except ValueError as exc:
                raise UsageError(f"{self.path}:{number} is not {self._written_by}; use another --out") from exc
        return records

    def finished(self) -> set[str]:
        return {self._key(record) for record in self.read()}

    @contextmanager
    def writer(self) -> Iterator[Callable[[str, Record], None]]:
        with self.path.open("a", encoding="utf-8") as sink:
            yield lambda key, record: append_line(sink, record.model_dump_json())


class JsonFiles:
    """One JSON file per item, ``<folder>/<key>.json``, written whole or not at all: a killed run
    leaves whole files only (and ``.partial`` ones, which are not results)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def finished(self) -> set[str]:
        return {path.stem for path in self.folder.glob("*.json")}

    def writer(self) -> AbstractContextManager[Callable[[str, BaseModel], None]]:
        self.folder.mkdir(parents=True, exist_ok=True)
        return nullcontext(self._save)

    def _save(self, key: str, result: BaseModel) -> None:
        write_atomically(self.folder / f"{key}.json", result.model_dump_json(indent=2))


def finished_lines(path: Path) -> list[tuple[int, str]]:
    """The lines (numbered from 1) of a results file written with ``append_line``. A last line
    without its newline is the remains of a killed write: it is cut off, so that the next append
    starts on a fresh line."""
    if not path.exists():
        return []
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        with path.open("r+b") as handle:
            handle.truncate(len(complete))
    # Only "\n" ends a line: str.splitlines would also split at U+2028 or U+0085, which JSON
    # writes raw inside strings (an answer quoting web text), and lose the line.
    lines = enumerate(complete.decode("utf-8").split("\n"), 1)
    return [(number, line) for number, line in lines if line.strip()]


def append_line(sink: IO[str], line: str) -> None:
    """One whole line, on disk before the next item is counted as done."""
    sink.write(line + "\n")
    sink.flush()
    os.fsync(sink.fileno())


def write_atomically(path: Path, text: str) -> None:
    """Whole file or none: written beside, flushed to disk, renamed over."""
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as sink:
        sink.write(text)
        sink.flush()
        os.fsync(sink.fileno())
    os.replace(partial, path)


# ---- rules that keep resumed results trustworthy ---------------------------------------------


def require_complete(trace: Trace) -> None:
    lost = [record for record in trace.calls if record.error_kind == "transport"]
    if lost:
        raise IncompleteResult(f"{len(lost)} LLM call(s) failed: {lost[0].error}")


def complete_or_error(trace: Trace, result: Value) -> Value | IncompleteResult:
    """``result``, or why it is not saved (``require_complete``): an item's outcome in a group."""
    try:
        require_complete(trace)
    except IncompleteResult as exc:
        return exc
    return result


def check_same_model(recorded: Iterable[str], model: str, where: Path) -> None:
    """Refuses to add results of one model to a folder that holds another's."""
    others = sorted(set(recorded) - {model})
    if others:
        raise MixedResults(f"{where} holds results of {others[0]}, not {model}; use another --out")


def pin_source(record: Path, key: str, source: Path) -> None:
    """Records the SHA-256 of the data file behind ``key`` the first time; afterwards refuses a
    file with other contents (regenerated data, another length), whose results would not mix."""
    digest = file_sha256(source)
    pins = json.loads(record.read_text(encoding="utf-8")) if record.exists() else {}
    pinned = pins.get(key, {}).get("sha256")
    if pinned is None:
        pins[key] = {"path": str(source), "sha256": digest}
        write_atomically(record, json.dumps(pins, indent=2) + "\n")
    elif pinned != digest:
        raise UsageError(f"{source} is not the {key} data this folder's results came from; use another --out")


def text_sha256(text: str) -> str:
    """Tells documents given as text apart (lone surrogates, which JSON can carry, included)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _Usage(Protocol):
    calls: int
    failed_calls: int
    prompt_tokens: int
    completion_tokens: int


def summed_usage(rows: Iterable[_Usage]) -> dict[str, int]:
    """The calls and tokens of finished results, summed: the usage fields of a run's totals."""
    rows = list(rows)
    fields = ("calls", "failed_calls", "prompt_tokens", "completion_tokens")
    return {field: sum(getattr(row, field) for row in rows) for field in fields}
