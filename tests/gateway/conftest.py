"""The real smg gateway (``llmxmr gateway``, as a user starts it) in front of local fake SGLang
workers. Skipped where smg is not installed; the dev extra installs it."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("smg", reason="the 'scale' extra (smg) is not installed")

from llmxmr.gateway import free_port

from ..conftest import default_sigint
from ..fake_server import Answer, FakeServer, fake_server, worker_routes

READY_TIMEOUT_S = 60
# smg keeps listening 5 s after SIGTERM before it stops, then llmxmr exits.
STOP_TIMEOUT_S = 30
WORKER_CONTEXT = 4096


@dataclass
class Gateway:
    process: subprocess.Popen[str]
    base_url: str
    log: Path

    def smg_pid(self) -> int:
        """The smg process ``llmxmr gateway`` started (its only child)."""
        (pid,) = children(self.process.pid)
        return pid


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while /proc was read
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    """Running: not gone, and not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@contextmanager
def running_gateway(workers: list[FakeServer], log: Path, *options: str) -> Iterator[Gateway]:
    """``python -m llmxmr gateway --workers ...`` until it prints its URL; stopped (SIGTERM) at
    the end unless the test stopped it already."""
    urls = ",".join(worker.base_url for worker in workers)
    command = [sys.executable, "-m", "llmxmr", "gateway", "--workers", urls, "--port", str(free_port()), *options]
    with log.open("w") as sink:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=sink,
            text=True,
            preexec_fn=default_sigint,  # noqa: PLW1509 (one system call)
        )
    try:
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: lines.put(process.stdout.readline()), daemon=True).start()
        try:
            base_url = lines.get(timeout=READY_TIMEOUT_S).strip()
        except queue.Empty:
            base_url = ""
        if not base_url:  # no URL in time, or the gateway exited
            pytest.fail(f"llmxmr gateway printed no URL:\n{log.read_text()[-3000:]}")
        yield Gateway(process, base_url, log)
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(STOP_TIMEOUT_S)


@contextmanager
def sglang_workers(
    count: int, reply: Callable[[dict[str, Any]], Answer], context_length: int = WORKER_CONTEXT
) -> Iterator[list[FakeServer]]:
    """Fake SGLang workers that smg registers; ``reply`` answers their chat completions."""
    scripts = {**worker_routes(context_length), "/v1/chat/completions": reply}
    with ExitStack() as stack:
        yield [stack.enter_context(fake_server(scripts)) for _ in range(count)]
