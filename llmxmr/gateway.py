"""Running the smg gateway (SGLang's model gateway, PyPI ``smg``) in front of several workers.

smg spreads requests over the workers, retries a failed request on another worker and takes dead
workers out of the rotation. llmxmr only starts it with flags that suit map-reduce runs, waits until
every worker is registered, and stops it together with itself (see ``children``).
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from .children import how_it_ended, start_child, stop_child, supervise
from .clients.openai_compat import listed_workers, server_root
from .errors import GatewayError, MissingExtraError, UsageError
from .transport import POLL_TIMEOUT_S, ServerEndpoints

POLICIES = ("power_of_two", "cache_aware", "round_robin")
DEFAULT_PORT = 30080  # not SGLang's 30000, so a worker and the gateway can share a host
LOOPBACK = "127.0.0.1"
STARTUP_TIMEOUT_S = 600.0  # an SGLang worker loads its model before it answers /health
POLL_S = 0.5
# How often smg probes a worker that is not up yet. Each failed probe logs a warning, so not
# every second for the minutes a model takes to load.
WORKER_CHECK_INTERVAL_S = 5
# On SIGTERM smg keeps listening for a fixed 5 s (a load-balancer settle window), then waits up to
# this long for requests in flight; llmxmr kills it if it is still there after both and a margin.
SHUTDOWN_GRACE_S = 10
STOP_TIMEOUT_S = 5 + SHUTDOWN_GRACE_S + 5


@dataclass(frozen=True)
class GatewayPlan:
    """Everything ``llmxmr gateway`` starts smg with."""

    workers: tuple[str, ...]
    metrics_port: int
    host: str = LOOPBACK
    port: int = DEFAULT_PORT
    policy: str = "power_of_two"
    startup_timeout_s: float = STARTUP_TIMEOUT_S
    extra: tuple[str, ...] = ()

    @property
    def base_url(self) -> str:
        """What to give ``llmxmr run --base-url``."""
        return f"http://{_reachable_host(self.host)}:{self.port}/v1"

    def command(self) -> list[str]:
        """``smg launch`` with llmxmr's flags; ``extra`` comes last, so it overrides any of them."""
        return [
            sys.executable, "-m", "smg", "launch",
            "--host", self.host,
            "--port", str(self.port),
            "--worker-urls", *self.workers,
            "--policy", self.policy,
            # smg's metrics server listens on every interface at port 29000 by default: a second
            # gateway on the host would fail to start, and the metrics would be public.
            "--prometheus-host", LOOPBACK,
            "--prometheus-port", str(self.metrics_port),
            # A request that fails on one worker (5xx, 429, connection refused) goes to another;
            # this is smg's default, stated so that a change of default cannot turn it off.
            "--retry-max-retries", "5",
            "--worker-startup-timeout-secs", str(int(self.startup_timeout_s)),
            "--worker-startup-check-interval", str(WORKER_CHECK_INTERVAL_S),
            "--shutdown-grace-period-secs", str(SHUTDOWN_GRACE_S),
            # smg logs every request at the info level; warnings (a worker down) still show.
            "--log-level", "warn",
            *self.extra,
        ]  # fmt: skip


def parse_workers(text: str) -> tuple[str, ...]:
    """``URL[,URL...]`` as the worker roots smg expects (a trailing ``/v1`` is dropped)."""
    urls = [server_root(part.strip()) for part in text.split(",") if part.strip()]
    if not urls:
        raise UsageError("--workers names no worker URL")
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UsageError(f"worker URL {url!r} is not of the form http://HOST:PORT")
    repeated = sorted({url for url in urls if urls.count(url) > 1})
    if repeated:
        raise UsageError(f"worker {repeated[0]} is listed twice in --workers")
    return tuple(urls)


def default_policy(workers: int) -> str:
    """power_of_two, which smg refuses for a single worker. Measured with smg 1.13 (tests/gateway):
    power_of_two and round_robin give each of 3 workers a third of a run's map calls, while
    cache_aware, keyed on the prompt head that every map call shares, leaves one worker idle. That
    head is short next to a chunk, so balance matters more than where it is cached."""
    return "power_of_two" if workers > 1 else "round_robin"


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def run_gateway(plan: GatewayPlan, on_ready: Callable[[str], None]) -> None:
    """Starts smg, calls ``on_ready(base_url)`` once every worker is registered, and returns when
    Ctrl-C, SIGTERM or SIGHUP stops it. Raises ``GatewayError`` if smg exits on its own or the
    workers do not register in time; smg never outlives this call."""
    if importlib.util.find_spec("smg") is None:
        raise MissingExtraError("smg", "scale", "llmxmr gateway")
    code = supervise(
        lambda: start_child(plan.command()),
        lambda process: wait_until_ready(process, plan),
        lambda: on_ready(plan.base_url),
        stop,
    )
    if code is not None:
        raise GatewayError(f"smg {how_it_ended(code)}; its log is above")


def wait_until_ready(process: subprocess.Popen[bytes], plan: GatewayPlan) -> None:
    """Until every worker of the plan is registered and healthy behind the gateway."""
    root = server_root(plan.base_url)
    deadline = time.monotonic() + plan.startup_timeout_s
    with ServerEndpoints(root, timeout_s=POLL_TIMEOUT_S) as gateway:
        while True:
            if process.poll() is not None:
                raise GatewayError(f"smg {how_it_ended(process.returncode)} before it was ready; its log is above")
            missing = sorted(set(plan.workers) - ready_workers(gateway))
            if not missing:
                return
            if time.monotonic() >= deadline:
                raise GatewayError(
                    f"the gateway at {root} has not registered {', '.join(missing)} after "
                    f"{plan.startup_timeout_s:g} s; is each worker running and answering /health?"
                )
            time.sleep(POLL_S)


def ready_workers(gateway: ServerEndpoints) -> set[str]:
    """URLs of the healthy workers the gateway lists (none while it is not up)."""
    workers = listed_workers(gateway.get_json("/workers"))
    return {worker.url for worker in workers or [] if worker.healthy}


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stops smg: SIGTERM, then SIGKILL if it is still there after ``STOP_TIMEOUT_S``."""
    stop_child(process, STOP_TIMEOUT_S)


def _reachable_host(host: str) -> str:
    """The host a client on this machine uses: loopback for a wildcard address, IPv6 in brackets."""
    if host in ("", "0.0.0.0"):
        return LOOPBACK
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host
