"""Deciding whether llama.cpp's extra buffer types are safe on this machine, against fake probe
children that die by SIGILL, succeed, fail or hang; the verdict cache; the overrides; and the local
server whose child dies."""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmxmr import llama_safety
from llmxmr import local_server as local_servers
from llmxmr.cli import main
from llmxmr.errors import ConfigError

DIES_OF_SIGILL = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGILL)"]
SUCCEEDS = [sys.executable, "-c", "pass"]
FAILS = [sys.executable, "-c", "import sys; print('no such model', file=sys.stderr); sys.exit(3)"]
HANGS = [sys.executable, "-c", "import time; time.sleep(60)"]


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF" + bytes(60))
    return path


@pytest.fixture
def probes(monkeypatch, tmp_path: Path):
    """Makes the probe a fake child (``probes.child = [...]``) and counts the probes run."""

    class Probes:
        child = SUCCEEDS
        runs = 0

    def command(model_path: Path) -> list[str]:
        Probes.runs += 1
        return Probes.child

    monkeypatch.setenv(llama_safety.CACHE_DIR_VARIABLE, str(tmp_path / "cache"))
    monkeypatch.setattr(llama_safety, "probe_command", command)
    return Probes


def test_a_probe_that_dies_of_sigill_means_unsafe_and_is_remembered():
    verdict = llama_safety.probe(DIES_OF_SIGILL)
    assert not verdict.safe and verdict.cacheable
    assert "SIGILL" in verdict.detail


def test_a_probe_that_decodes_means_safe():
    verdict = llama_safety.probe(SUCCEEDS)
    assert verdict.safe and verdict.cacheable


def test_a_probe_that_hangs_is_unsafe_for_now_but_not_remembered():
    verdict = llama_safety.probe(HANGS, timeout_s=1)
    assert not verdict.safe and not verdict.cacheable
    assert "did not finish in 1 s" in verdict.detail


def test_a_probe_that_fails_otherwise_is_unsafe_for_now_with_its_last_line():
    verdict = llama_safety.probe(FAILS)
    assert not verdict.safe and not verdict.cacheable
    assert "code 3: no such model" in verdict.detail


def test_auto_probes_once_then_reads_the_cache(probes, model):
    probes.child = DIES_OF_SIGILL
    assert llama_safety.extra_buffers_enabled("auto", model) is False
    assert llama_safety.extra_buffers_enabled("auto", model) is False
    assert probes.runs == 1


def test_a_safe_verdict_is_remembered_too(probes, model):
    assert llama_safety.extra_buffers_enabled("auto", model) is True
    probes.child = DIES_OF_SIGILL  # would say unsafe, if it ran
    assert llama_safety.extra_buffers_enabled("auto", model) is True
    assert probes.runs == 1


def test_a_new_llama_cpp_python_version_probes_again(probes, model, monkeypatch):
    llama_safety.extra_buffers_enabled("auto", model)
    monkeypatch.setattr(llama_safety.importlib.metadata, "version", lambda name: "99.0.0")
    probes.child = DIES_OF_SIGILL
    assert llama_safety.extra_buffers_enabled("auto", model) is False
    assert probes.runs == 2


def test_another_cpu_probes_again(probes, model, monkeypatch):
    llama_safety.extra_buffers_enabled("auto", model)
    monkeypatch.setattr(llama_safety, "cpu_fingerprint", lambda: "another-cpu")
    llama_safety.extra_buffers_enabled("auto", model)
    assert probes.runs == 2


def test_a_hang_is_probed_again_next_time(probes, model, monkeypatch):
    monkeypatch.setattr(llama_safety, "PROBE_TIMEOUT_S", 1)
    probes.child = HANGS
    assert llama_safety.extra_buffers_enabled("auto", model) is False
    probes.child = SUCCEEDS
    assert llama_safety.extra_buffers_enabled("auto", model) is True
    assert probes.runs == 2


def test_a_damaged_cache_file_means_probing_again(probes, model, tmp_path):
    llama_safety.extra_buffers_enabled("auto", model)
    (tmp_path / "cache" / llama_safety.VERDICTS_FILE).write_text("{not json", encoding="utf-8")
    llama_safety.extra_buffers_enabled("auto", model)
    assert probes.runs == 2


@pytest.mark.parametrize(("setting", "expected"), [("on", True), ("off", False)])
def test_on_and_off_never_probe(probes, model, setting, expected):
    probes.child = DIES_OF_SIGILL
    assert llama_safety.extra_buffers_enabled(setting, model) is expected
    assert probes.runs == 0


def test_an_unsafe_verdict_is_said_once_in_one_line(probes, model, caplog):
    probes.child = DIES_OF_SIGILL
    llama_safety.extra_buffers_enabled("auto", model)
    llama_safety.extra_buffers_enabled("auto", model)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "SIGILL" in warnings[0] and "embedded.extra_buffers" in warnings[0]


class _Params(ctypes.Structure):
    _fields_ = [("n_gpu_layers", ctypes.c_int32), ("use_extra_bufts", ctypes.c_bool)]


def _fake_native(monkeypatch, params_type: type[ctypes.Structure]) -> types.ModuleType:
    """A stand-in for ``llama_cpp.llama_cpp``: the parameter struct and its defaults function."""

    def defaults() -> ctypes.Structure:
        params = params_type()
        if hasattr(params, "use_extra_bufts"):
            params.use_extra_bufts = True
        return params

    native = types.ModuleType("llama_cpp.llama_cpp")
    native.llama_model_params = params_type
    native.llama_model_default_params = defaults
    package = types.ModuleType("llama_cpp")
    package.llama_cpp = native
    monkeypatch.setitem(sys.modules, "llama_cpp", package)
    monkeypatch.setitem(sys.modules, "llama_cpp.llama_cpp", native)
    return native


def test_disabling_makes_every_later_model_load_without_extra_buffers(monkeypatch):
    native = _fake_native(monkeypatch, _Params)
    llama_safety.disable_extra_buffer_types()
    llama_safety.disable_extra_buffer_types()  # twice is once
    params = native.llama_model_default_params()
    assert params.use_extra_bufts is False
    assert params.n_gpu_layers == 0  # the other defaults are kept


def test_a_build_without_the_switch_is_one_clear_error(monkeypatch):
    class OldParams(ctypes.Structure):
        _fields_ = [("n_gpu_layers", ctypes.c_int32)]

    _fake_native(monkeypatch, OldParams)
    with pytest.raises(ConfigError, match="cannot turn llama.cpp's extra buffer types off"):
        llama_safety.disable_extra_buffer_types()


def test_the_installed_llama_cpp_python_loads_with_extra_buffers_off(tmp_path):
    """In a child process (the switch is process-wide): the real parameters a model is loaded
    with say extra buffer types off."""
    pytest.importorskip("llama_cpp")
    script = (
        "import llama_cpp.llama_cpp as native; from llmxmr.llama_safety import disable_extra_buffer_types; "
        "assert native.llama_model_default_params().use_extra_bufts; disable_extra_buffer_types(); "
        "assert not native.llama_model_default_params().use_extra_bufts"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)


class _DyingServer(local_servers.LocalServerPlan):
    def command(self) -> list[str]:
        return DIES_OF_SIGILL


def test_a_local_server_that_dies_of_a_signal_names_it_and_the_setting(monkeypatch, model):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object())
    plan = _DyingServer(model_path=model, port=9, startup_timeout_s=30)
    with pytest.raises(local_servers.LocalServerError) as raised:
        local_servers.run_local_server(plan, on_ready=lambda url: pytest.fail("never ready"))
    message = str(raised.value)
    assert "died of SIGILL" in message and "embedded.extra_buffers: off" in message and "\n" not in message


def test_serve_local_reports_a_dead_server_in_one_line_with_exit_1(monkeypatch, model):
    monkeypatch.delenv("LLMXMR_RAISE_ERRORS")
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object())
    monkeypatch.setattr(local_servers.LocalServerPlan, "command", lambda self: DIES_OF_SIGILL)
    result = CliRunner().invoke(
        main, ["serve", "--local", "--model", str(model), "--extra-buffers", "on", "--port", "9"]
    )
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: the local llama.cpp server died of SIGILL")


def test_serve_local_dry_run_prints_the_command_with_the_decision(probes, model):
    probes.child = DIES_OF_SIGILL
    result = CliRunner().invoke(main, ["serve", "--local", "--model", str(model), "--n-ctx", "4096", "--dry-run"])
    assert result.exit_code == 0, result.output
    command = result.stdout.split()
    threads = str(local_servers.LocalServerPlan(model_path=model).thread_count)  # unset: one per core
    assert command[-6:] == [str(model), "127.0.0.1", str(local_servers.DEFAULT_PORT), "4096", threads, "off"]
    assert "llmxmr.local_server" in command


def test_serve_local_refuses_sglang_arguments(model):
    result = CliRunner().invoke(main, ["serve", "--local", "--model", str(model), "--dp", "2"])
    assert result.exit_code == 2


def test_sigterm_stops_the_local_server_like_ctrl_c(monkeypatch, model):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object())
    monkeypatch.setattr(local_servers.LocalServerPlan, "command", lambda self: HANGS)
    monkeypatch.setattr(local_servers, "_wait_until_ready", lambda process, plan: None)
    processes: list[subprocess.Popen] = []
    start = local_servers.start_child
    monkeypatch.setattr(local_servers, "start_child", lambda command: processes.append(start(command)) or processes[-1])

    def ready(url: str) -> None:
        import os

        os.kill(os.getpid(), signal.SIGTERM)

    local_servers.run_local_server(local_servers.LocalServerPlan(model_path=model), ready)
    assert processes[0].returncode == -signal.SIGTERM
