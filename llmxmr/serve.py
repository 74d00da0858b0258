"""Starting an SGLang server with the flags llmxmr expects."""

from __future__ import annotations

import importlib.util
import os
import sys

from .errors import MissingExtraError

DEFAULT_MODEL = "openbmb/MiniCPM3-4B"


def sglang_command(
    model_path: str,
    host: str,
    port: int,
    context_length: int | None,
    extra: tuple[str, ...],
    dp_size: int = 1,
) -> list[str]:
    """``python -m sglang.launch_server`` for MiniCPM3 (or another model) as llmxmr uses it:
    remote code trusted (MiniCPM3 needs it), ChatML template, cached-token counts in ``usage`` so
    that runs can report prefix-cache hits, and request priorities honoured (larger first), so
    that a run's collapse and reduce calls go ahead of the maps still waiting. ``dp_size`` > 1
    runs that many replicas of the model behind the one port (SGLang's data parallelism)."""
    command = [
        sys.executable, "-m", "sglang.launch_server",
        "--model-path", model_path,
        "--trust-remote-code",
        "--chat-template", "chatml",
        "--host", host,
        "--port", str(port),
        "--enable-cache-report",
        "--enable-priority-scheduling",
    ]  # fmt: skip
    if context_length:
        command += ["--context-length", str(context_length)]
    if dp_size > 1:
        command += ["--dp-size", str(dp_size)]
    return command + list(extra)


def launch(command: list[str]) -> None:
    """Replace this process with SGLang's, so that signals reach the server directly."""
    if importlib.util.find_spec("sglang") is None:
        raise MissingExtraError("sglang", "sglang", "llmxmr serve")
    os.execv(command[0], command)
