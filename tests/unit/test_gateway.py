"""``llmxmr gateway`` without smg running: the command it builds, its flags, its errors, and how it
stops a process group. The real gateway is exercised in tests/gateway/."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmxmr import gateway as gateways
from llmxmr.errors import GatewayError, UsageError

from .test_cli import assert_one_line_error, invoke


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_the_command_listens_on_loopback_with_private_metrics_and_retries():
    plan = gateways.GatewayPlan(workers=("http://10.0.0.1:30000", "http://10.0.0.2:30000"), metrics_port=41234)
    command = plan.command()
    assert command[:4] == [sys.executable, "-m", "smg", "launch"]
    assert flag(command, "--host") == "127.0.0.1" and flag(command, "--port") == "30080"
    workers_at = command.index("--worker-urls")
    assert command[workers_at + 1 : workers_at + 3] == ["http://10.0.0.1:30000", "http://10.0.0.2:30000"]
    assert flag(command, "--prometheus-host") == "127.0.0.1" and flag(command, "--prometheus-port") == "41234"
    assert int(flag(command, "--retry-max-retries")) > 1 and "--disable-retries" not in command
    assert flag(command, "--policy") == "power_of_two"  # load-aware: see gateway.default_policy
    assert plan.base_url == "http://127.0.0.1:30080/v1"


def test_extra_arguments_come_last_so_they_override():
    plan = gateways.GatewayPlan(workers=("http://w:1",), metrics_port=1, extra=("--log-level", "info"))
    assert plan.command()[-2:] == ["--log-level", "info"]


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:5/v1"),
        ("::", "http://[::1]:5/v1"),
        ("::1", "http://[::1]:5/v1"),
        ("gw.local", "http://gw.local:5/v1"),
    ],
)
def test_the_printed_url_is_one_a_client_on_this_host_can_use(host, url):
    assert gateways.GatewayPlan(workers=("http://w:1",), metrics_port=1, host=host, port=5).base_url == url


def test_worker_urls_are_reduced_to_their_roots():
    assert gateways.parse_workers(" http://a:1/v1 , http://b:2/,https://c:3 ") == (
        "http://a:1",
        "http://b:2",
        "https://c:3",
    )


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (",", "names no worker"),
        ("a:1", "not of the form"),
        ("ftp://a:1", "not of the form"),
        ("http://a:1,http://a:1/v1", "listed twice"),
    ],
)
def test_bad_worker_lists(text, fragment):
    with pytest.raises(UsageError, match=fragment):
        gateways.parse_workers(text)


def test_dry_run_prints_the_command_with_a_free_metrics_port():
    result = invoke(
        "gateway", "--workers", "http://a:1,http://b:2", "--port", "31999", "--policy", "cache_aware", "--dry-run"
    )
    assert result.exit_code == 0, result.output
    command = result.output.split()
    assert command[1:4] == ["-m", "smg", "launch"] and flag(command, "--port") == "31999"
    assert flag(command, "--policy") == "cache_aware"
    metrics_port = int(flag(command, "--prometheus-port"))
    assert metrics_port not in (29000, 31999)  # not smg's fixed default: two gateways can share a host


def test_the_default_policy_is_power_of_two_which_smg_refuses_for_one_worker():
    assert (
        flag(invoke("gateway", "--workers", "http://a:1,http://b:2", "--dry-run").output.split(), "--policy")
        == "power_of_two"
    )
    assert flag(invoke("gateway", "--workers", "http://a:1", "--dry-run").output.split(), "--policy") == "round_robin"


def test_dry_run_passes_extra_arguments_and_a_given_metrics_port():
    result = invoke("gateway", "--workers", "http://a:1", "--metrics-port", "9100", "--dry-run", "--", "--api-key", "k")
    assert result.exit_code == 0, result.output
    assert "--prometheus-port 9100" in result.output and result.output.strip().endswith("--api-key k")


def test_a_bad_worker_list_is_a_usage_error():
    assert_one_line_error(
        invoke("gateway", "--workers", "localhost:30000", "--dry-run"), 2, "not of the form http://HOST:PORT"
    )


def test_without_smg_the_command_names_the_extra(monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    assert_one_line_error(invoke("gateway", "--workers", "http://a:1"), 2, "pip install 'llmxmr[scale]'")


def test_serve_dp_passes_sglang_dp_size_and_priority_scheduling():
    replicated = invoke("serve", "--dp", "4", "--dry-run").output.split()
    assert flag(replicated, "--dp-size") == "4"
    assert "--enable-priority-scheduling" in replicated and "--enable-cache-report" in replicated
    assert "--dp-size" not in invoke("serve", "--dry-run").output


class _ExitingPlan(gateways.GatewayPlan):
    """A plan whose "smg" exits at once with code 3."""

    def command(self) -> list[str]:
        return [sys.executable, "-c", "raise SystemExit(3)"]


def test_smg_exiting_before_it_is_ready_is_one_error(monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object())
    plan = _ExitingPlan(workers=("http://127.0.0.1:9",), metrics_port=1, startup_timeout_s=30)
    with pytest.raises(GatewayError, match="smg exited with code 3 before it was ready"):
        gateways.run_gateway(plan, on_ready=lambda url: pytest.fail("never ready"))


def test_workers_that_never_register_time_out_naming_them(monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object())
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    monkeypatch.setattr(gateways.GatewayPlan, "command", lambda self: sleeper)
    plan = gateways.GatewayPlan(workers=("http://127.0.0.1:9",), metrics_port=1, port=9, startup_timeout_s=1)
    started = time.monotonic()
    with pytest.raises(GatewayError, match=r"has not registered http://127.0.0.1:9 after 1 s"):
        gateways.run_gateway(plan, on_ready=lambda url: pytest.fail("never ready"))
    assert time.monotonic() - started < 15  # and the sleeper was stopped, not waited for


def _alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting for its parent."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_stop_kills_the_whole_group_even_when_sigterm_is_ignored(monkeypatch):
    monkeypatch.setattr(gateways, "STOP_TIMEOUT_S", 0.5)
    # A leader that ignores SIGTERM, with a child of its own that would be orphaned.
    script = "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    script += "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
    script += "print(child.pid, flush=True); time.sleep(60)"
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, start_new_session=True)
    child = int(process.stdout.readline())
    gateways.stop(process)
    assert process.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def test_stop_leaves_an_exited_process_alone():
    process = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    process.wait()
    gateways.stop(process)  # no signal to a group that may no longer be smg's
    assert process.returncode == 0


def test_sigterm_stops_the_gateway_like_ctrl_c(monkeypatch):
    """SIGTERM to llmxmr reaches run_gateway as KeyboardInterrupt: smg is stopped, no error."""
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object())
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    monkeypatch.setattr(gateways.GatewayPlan, "command", lambda self: sleeper)
    monkeypatch.setattr(gateways, "wait_until_ready", lambda process, plan: None)
    processes: list[subprocess.Popen] = []
    start = gateways.start_child
    monkeypatch.setattr(gateways, "start_child", lambda command: processes.append(start(command)) or processes[-1])
    started: list[str] = []

    def ready(url: str) -> None:
        started.append(url)
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    gateways.run_gateway(gateways.GatewayPlan(workers=("http://w:1",), metrics_port=1), ready)
    assert started == ["http://127.0.0.1:30080/v1"]
    assert processes[0].returncode == -signal.SIGTERM  # stopped, and waited for
    assert signal.getsignal(signal.SIGTERM) is previous  # the handler is put back
