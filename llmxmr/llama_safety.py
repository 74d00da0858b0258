"""Loading a GGUF with llama.cpp without dying on CPUs that only claim to run it.

llama.cpp's CPU backend repacks weights into "extra buffer types" (AMX tiles, interleaved quants)
when the CPU advertises the instructions. Some VMs advertise AMX and then trap it: the first
decode dies with SIGILL, taking the whole process with it, in-process and in llama.cpp's server
alike. Whether that happens is a property of the machine (CPU flags), the llama.cpp build
(llama-cpp-python's version) and the weights' quantisation (the model file), so it is decided once
for that triple by a probe in a child process, whose death cannot hurt the caller, and the verdict
is cached in the user's cache folder. Where the probe dies, models load with extra buffer types
off: slower prefill, correct answers.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ValidationError

from .errors import ConfigError

ExtraBuffers = Literal["auto", "on", "off"]

CACHE_DIR_VARIABLE = "LLMXMR_CACHE_DIR"
VERDICTS_FILE = "llama-extra-buffers.json"
# Loading and decoding a few tokens takes seconds; a model of several GB may take a minute to map.
PROBE_TIMEOUT_S = 180.0

logger = logging.getLogger(__name__)


class ProbeVerdict(BaseModel):
    """What the probe found for one (llama-cpp-python, CPU, model) triple."""

    safe: bool
    detail: str  # one line: why
    seconds: float
    cacheable: bool  # a timeout or an unexplained failure is not a property of the machine


def extra_buffers_enabled(setting: ExtraBuffers, model_path: Path) -> bool:
    """Whether to load ``model_path`` with llama.cpp's extra buffer types: as the setting says, or
    for ``auto`` as the cached or freshly probed verdict for this machine says."""
    if setting != "auto":
        return setting == "on"
    key = verdict_key(model_path)
    cached = read_verdicts().get(key)
    if cached is not None:
        return cached.safe
    verdict = probe(probe_command(model_path))
    if not verdict.safe:
        logger.warning(
            "llama.cpp's extra buffer types are not safe on this CPU (%s): loading %s with them off "
            "(setting embedded.extra_buffers)",
            verdict.detail,
            model_path.name,
        )
    if verdict.cacheable:
        remember_verdict(key, verdict)
    return verdict.safe


def probe_command(model_path: Path) -> list[str]:
    return [sys.executable, "-m", "llmxmr._llama_probe", str(model_path)]


def probe(command: Sequence[str], timeout_s: float | None = None) -> ProbeVerdict:
    """Runs the probe child: exit 0 means the extra buffer types decoded; death by a signal means
    they are unsafe here. A hang or any other failure also loads with them off, the safe side, but
    is not remembered: it may be a busy machine or a broken install rather than the CPU."""
    timeout_s = PROBE_TIMEOUT_S if timeout_s is None else timeout_s
    started = time.monotonic()
    try:
        finished = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return ProbeVerdict(
            safe=False, detail=f"the probe did not finish in {timeout_s:g} s", seconds=timeout_s, cacheable=False
        )
    seconds = round(time.monotonic() - started, 3)
    if finished.returncode == 0:
        return ProbeVerdict(safe=True, detail="the probe decoded with them on", seconds=seconds, cacheable=True)
    if finished.returncode < 0:
        return ProbeVerdict(
            safe=False, detail=f"a probe died of {signal_name(-finished.returncode)}", seconds=seconds, cacheable=True
        )
    last_line = (finished.stderr.strip().splitlines() or ["no output"])[-1]
    return ProbeVerdict(
        safe=False,
        detail=f"the probe exited with code {finished.returncode}: {last_line}",
        seconds=seconds,
        cacheable=False,
    )


def signal_name(signum: int) -> str:
    """``SIGILL (illegal instruction)``, or the number when the platform does not name it."""
    import signal

    try:
        name = signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
    description = signal.strsignal(signum)
    return f"{name} ({description.lower()})" if description else name


def verdict_key(model_path: Path) -> str:
    """The triple the verdict holds for: llama-cpp-python's version (its llama.cpp build), the
    CPU's flags, and the model file (its quantisation picks the kernels)."""
    try:
        version = importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        version = "absent"
    size = model_path.stat().st_size if model_path.exists() else 0
    return f"llama-cpp-python={version};cpu={cpu_fingerprint()};model={model_path.name}:{size}"


def cpu_fingerprint() -> str:
    """A short hash of the CPU's feature flags (Linux ``/proc/cpuinfo``), else of what Python
    knows of the processor."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        cpuinfo = ""
    flags = next((line.split(":", 1)[1] for line in cpuinfo.splitlines() if line.startswith(("flags", "Features"))), "")
    described = " ".join(sorted(flags.split())) or f"{platform.machine()} {platform.processor()}"
    return hashlib.sha256(described.encode()).hexdigest()[:16]


def cache_dir() -> Path:
    """``$LLMXMR_CACHE_DIR``, else ``$XDG_CACHE_HOME/llmxmr``, else ``~/.cache/llmxmr``."""
    if os.environ.get(CACHE_DIR_VARIABLE):
        return Path(os.environ[CACHE_DIR_VARIABLE])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "llmxmr"


def read_verdicts() -> dict[str, ProbeVerdict]:
    """The remembered verdicts; a missing or damaged file remembers nothing (the probe reruns)."""
    try:
        raw = json.loads((cache_dir() / VERDICTS_FILE).read_text(encoding="utf-8"))
        return {key: ProbeVerdict.model_validate(value) for key, value in raw.items()}
    except (OSError, ValueError, AttributeError, ValidationError):
        return {}


def remember_verdict(key: str, verdict: ProbeVerdict) -> None:
    """Adds one verdict, atomically: a concurrent reader sees the old file or the new one. Two
    processes probing at once both write the same verdict, so the last write losing the other's
    other keys costs at most one more probe. An unwritable cache is not an error: the probe runs
    again next time."""
    folder = cache_dir()
    verdicts = read_verdicts()
    verdicts[key] = verdict
    payload = json.dumps({k: v.model_dump() for k, v in verdicts.items()}, indent=2)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=folder, delete=False, suffix=".tmp", encoding="utf-8") as handle:
            handle.write(payload)
        os.replace(handle.name, folder / VERDICTS_FILE)
    except OSError as exc:
        logger.warning("cannot remember the llama.cpp probe's verdict in %s: %s", folder, exc.strerror or exc)


def disable_extra_buffer_types() -> None:
    """From now on, every model this process loads with llama-cpp-python skips llama.cpp's extra
    buffer types (``llama_model_params.use_extra_bufts = false``). llama-cpp-python has no
    ``Llama(...)`` argument for it, but builds each model's parameters from the module function
    wrapped here, at call time; so the wrapper reaches the embedded client and the server app
    alike. Process-wide on purpose: the verdict is about this machine, not one model."""
    import llama_cpp.llama_cpp as native

    if getattr(native.llama_model_default_params, "_llmxmr_without_extra_buffers", False):
        return
    if "use_extra_bufts" not in {field[0] for field in native.llama_model_params._fields_}:
        raise ConfigError(
            "this llama-cpp-python build cannot turn llama.cpp's extra buffer types off; "
            "upgrade llama-cpp-python, or set embedded.extra_buffers: on if this CPU runs them"
        )
    defaults = native.llama_model_default_params

    def without_extra_buffers() -> object:
        params = defaults()
        params.use_extra_bufts = False
        return params

    without_extra_buffers._llmxmr_without_extra_buffers = True  # type: ignore[attr-defined]
    native.llama_model_default_params = without_extra_buffers
