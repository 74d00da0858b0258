"""``llmxmr serve --local``: an OpenAI-compatible llama.cpp server for a local GGUF.

The server is llama-cpp-python's own app (JSON-schema constrained output, one request at a time),
run in a child process that loads the model with the same safe choice of llama.cpp's extra buffer
types as the embedded client. The parent makes that choice (probing once per machine), starts the
child, waits until it answers ``/v1/models``, announces the base URL, and stops it on Ctrl-C,
SIGTERM or SIGHUP. A child that dies is reported in one line; by a signal, with the setting that
avoids it.

Child usage: python -m llmxmr.local_server MODEL.gguf HOST PORT N_CTX THREADS on|off
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .children import how_it_ended, start_child, stop_child, supervise
from .errors import LlmxmrError, MissingExtraError
from .transport import POLL_TIMEOUT_S, ServerEndpoints

DEFAULT_PORT = 8080  # llama.cpp's llama-server port, not SGLang's 30000
STARTUP_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 10.0
POLL_S = 0.25


class LocalServerError(LlmxmrError):
    """The local llama.cpp server did not start, or stopped on its own."""


@dataclass(frozen=True)
class LocalServerPlan:
    """Everything ``llmxmr serve --local`` starts llama-cpp-python's server with."""

    model_path: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    n_ctx: int = 8192
    # CPU threads llama.cpp decodes with (``embedded.threads``); None: one per CPU core.
    threads: int | None = None
    extra_buffers: bool = True
    startup_timeout_s: float = STARTUP_TIMEOUT_S

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}/v1"

    @property
    def thread_count(self) -> int:
        return self.threads or os.cpu_count() or 1

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "llmxmr.local_server",
            str(self.model_path), self.host, str(self.port), str(self.n_ctx), str(self.thread_count),
            "on" if self.extra_buffers else "off",
        ]  # fmt: skip


def run_local_server(plan: LocalServerPlan, on_ready: Callable[[str], None]) -> None:
    """Starts the server, calls ``on_ready(base_url)`` once it answers, and returns when Ctrl-C,
    SIGTERM or SIGHUP stops it. Raises ``LocalServerError`` if it ends on its own; the server never
    outlives this call."""
    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("uvicorn") is None:
        raise MissingExtraError("llama-cpp-python[server]", "local", "llmxmr serve --local")
    code = supervise(
        lambda: start_child(plan.command()),
        lambda process: _wait_until_ready(process, plan),
        lambda: on_ready(plan.base_url),
        lambda process: stop_child(process, STOP_TIMEOUT_S),
    )
    if code is not None:
        raise LocalServerError(_ended_message(code, plan))


def _wait_until_ready(process: subprocess.Popen[bytes], plan: LocalServerPlan) -> None:
    deadline = time.monotonic() + plan.startup_timeout_s
    with ServerEndpoints(plan.base_url, timeout_s=POLL_TIMEOUT_S) as server:
        while process.poll() is None:
            if server.get_json("/models") is not None:  # the model is loaded once it is listed
                return
            if time.monotonic() >= deadline:
                raise LocalServerError(
                    f"the local llama.cpp server at {plan.base_url} did not answer in {plan.startup_timeout_s:g} s"
                )
            time.sleep(POLL_S)
    raise LocalServerError(_ended_message(process.returncode, plan, before_ready=True))


def _ended_message(code: int, plan: LocalServerPlan, before_ready: bool = False) -> str:
    when = " before it was ready" if before_ready else ""
    message = f"the local llama.cpp server {how_it_ended(code)}{when}"
    if code < 0 and plan.extra_buffers:
        return (
            f"{message}; if this CPU cannot run llama.cpp's extra buffer types, "
            "set embedded.extra_buffers: off (--extra-buffers off)"
        )
    return f"{message}; its log is above"


def _serve(model_path: str, host: str, port: int, n_ctx: int, threads: int, extra_buffers: bool) -> None:
    """The child: llama-cpp-python's server app on one model, in this process."""
    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    from .llama_safety import disable_extra_buffer_types

    if not extra_buffers:
        disable_extra_buffer_types()
    model = ModelSettings(model=model_path, n_ctx=n_ctx, n_threads=threads, verbose=False)
    # Its default cuts a streamed reply short ("[DONE]" mid-answer) as soon as another request
    # waits; llmxmr streams replies to stop loops early and keeps the next call queued, so a
    # waiting request must wait, not end the one being written.
    server = ServerSettings(host=host, port=port, interrupt_requests=False)
    app = create_app(server_settings=server, model_settings=[model])
    # llama-cpp-python's server tells no client its window; this one answers as llama.cpp's
    # llama-server does, so `run --base-url` sizes its prompts with no --context-window.
    app.add_api_route("/props", lambda: {"default_generation_settings": {"n_ctx": n_ctx}, "total_slots": 1})
    uvicorn.run(app, host=host, port=port, log_level="warning")


def serve_from_command_line(arguments: Sequence[str]) -> None:
    """The child's entry point: the arguments ``LocalServerPlan.command`` gives it."""
    model_path, host, port, n_ctx, threads, extra_buffers = arguments
    _serve(model_path, host, int(port), int(n_ctx), int(threads), extra_buffers == "on")


if __name__ == "__main__":
    serve_from_command_line(sys.argv[1:])
