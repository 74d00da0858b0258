"""Server processes llmxmr starts and owns (the smg gateway, a local llama.cpp server).

Each child runs in its own process group, so a Ctrl-C in the terminal reaches llmxmr alone, which
then stops the child in order; SIGTERM and SIGHUP stop it the way Ctrl-C does; on Linux the child
is also told to exit if llmxmr is killed. A child that dies is described by how it died, so that a
death by a signal is never silent.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .llama_safety import signal_name

_PR_SET_PDEATHSIG = 1  # prctl option: a signal for the child when its parent dies


def start_child(command: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command,
        stdout=sys.__stderr__,  # a server's log goes to stderr, so that llmxmr's stdout has only its URL
        start_new_session=True,  # its own process group: the terminal's Ctrl-C reaches llmxmr only
        preexec_fn=_exit_with_parent(),  # noqa: PLW1509 (one system call, resolved before the fork)
    )


def stop_child(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM to the child's process group, then SIGKILL if it is still there after
    ``timeout_s`` or if Ctrl-C is pressed again while waiting."""
    if process.poll() is not None:
        return
    _signal_group(process, signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        _signal_group(process, signal.SIGKILL)
        process.wait()


def supervise(
    start: Callable[[], subprocess.Popen[bytes]],
    wait_until_ready: Callable[[subprocess.Popen[bytes]], None],
    on_ready: Callable[[], None],
    stop: Callable[[subprocess.Popen[bytes]], None],
) -> int | None:
    """Starts a server child, calls ``on_ready`` once it is ready, and waits. Returns its exit code
    if it ended on its own, None if Ctrl-C, SIGTERM or SIGHUP stopped it; the child never outlives
    this call."""
    with signals_stop_like_ctrl_c():
        process = start()
        try:
            wait_until_ready(process)
            on_ready()
            return process.wait()
        except KeyboardInterrupt:
            return None
        finally:
            stop(process)


def how_it_ended(returncode: int) -> str:
    """``exited with code 3`` or ``died of SIGILL (illegal instruction)``."""
    return f"died of {signal_name(-returncode)}" if returncode < 0 else f"exited with code {returncode}"


@contextmanager
def signals_stop_like_ctrl_c() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt, so they stop a child as Ctrl-C does; by default
    they would end this process at once and leave the child running."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _exit_with_parent() -> Callable[[], None] | None:
    """On Linux, what the child runs before its program starts: if llmxmr dies without stopping it
    (SIGKILL, a crash), the kernel then sends it SIGTERM instead of leaving it running. The
    function is looked up here, in the parent, so that the child only makes the system call."""
    if sys.platform != "linux":
        return None
    prctl = ctypes.CDLL(None).prctl
    terminate = int(signal.SIGTERM)
    return lambda: prctl(_PR_SET_PDEATHSIG, terminate)


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(process.pid, signum)  # the group's id is the child's pid (start_new_session)
    except ProcessLookupError:
        pass
