"""What the batch harnesses (InfiniteBench, needle in a haystack) share: items run concurrently,
each result saved the moment it is done, failures counted rather than fatal, and the rules that
keep resumed results trustworthy.

A result is saved only when it is complete: an item whose run lost an LLM call to the transport
(the server could not be made to answer, even after retries) is not saved, so the next run
retries it. A call the model answered, but never validly, is the model's failure and part of its
score: that result is saved.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import IO, Literal, Protocol, TypeVar

from tqdm import tqdm

from ..clients.base import LLMClient
from ..errors import LlmxmrError, ServerError, UsageError
from ..scheduling import gather_or_cancel
from ..trace import Trace

Method = Literal["mr", "direct"]
Item = TypeVar("Item")
Result = TypeVar("Result")


class IncompleteResult(LlmxmrError):
    """An item's run lost calls to the transport; it is not saved, so a rerun retries it."""


class MixedResults(UsageError):
    """Results of another model are in the folder: fatal, since every item would hit it."""


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


def require_complete(trace: Trace) -> None:
    lost = [record for record in trace.calls if record.error_kind == "transport"]
    if lost:
        raise IncompleteResult(f"{len(lost)} LLM call(s) failed: {lost[0].error}")


async def run_each(
    items: Iterable[Item],
    work: Callable[[Item], Awaitable[Result]],
    save: Callable[[Item, Result], None],
    *,
    in_flight: int,
    label: Callable[[Item], str],
    desc: str,
    unit: str,
    progress: bool,
    log: Callable[[str], None],
    postfix: Callable[[], str] | None = None,
) -> int:
    """Runs ``work`` on every item, at most ``in_flight`` at once, and ``save``s each result as it
    comes (one at a time, off the event loop). Returns how many items failed; an unreachable
    server or results of another model stop everything, since every item would fail the same way.
    ``postfix`` is shown beside the progress bar, refreshed as each item ends."""
    items = list(items)
    semaphore = asyncio.Semaphore(in_flight)
    saving = asyncio.Lock()
    failures = 0
    bar = tqdm(total=len(items), desc=desc, unit=unit, file=sys.stderr, disable=not progress)

    async def one(item: Item) -> None:
        nonlocal failures
        async with semaphore:
            try:
                result = await work(item)
            except (ServerError, MixedResults):
                raise
            except LlmxmrError as exc:
                failures += 1
                log(f"{label(item)} failed: {exc}")
                return
            finally:
                if postfix is not None:
                    bar.set_postfix_str(postfix(), refresh=False)
                bar.update(1)
        async with saving:
            await asyncio.to_thread(save, item, result)

    try:
        await gather_or_cancel(one(item) for item in items)
    finally:
        bar.close()
    return failures


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


async def default_in_flight(client: LLMClient, on_server: int) -> int:
    """``on_server`` items at once, but no more than the model runs requests at once (one for the
    embedded model and llama-cpp-python's server): beyond that, more items in flight only delay
    each one, and their token counts wait behind each other's generations."""
    parallel = await client.parallel_requests()
    return min(on_server, parallel) if parallel else on_server


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


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomically(path: Path, text: str) -> None:
    """Whole file or none: written beside, flushed to disk, renamed over."""
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as sink:
        sink.write(text)
        sink.flush()
        os.fsync(sink.fileno())
    os.replace(partial, path)
