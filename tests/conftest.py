"""Shared fixtures: the demo exporter as a real subprocess, a real Prometheus, polling helpers."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from pydantic import SecretStr

from exporter.metrics.snapshot import Snapshot
from exporter.metrics.store import SnapshotStore
from exporter.polling.poller import Poller, PollSettings
from exporter.polling.targets import configured_targets
from exporter.simulator import SEED_MEETING_ID, Scenario, Simulator
from exporter.simulator.clock import ManualClock
from exporter.zoom.client import ZoomClient
from exporter.zoom.limits import Backoff, DailyBudget, RateLimiter

FAST_BACKOFF = Backoff(base=0.01, cap=0.05)  # real sleeps in tests stay short

ROOT = Path(__file__).resolve().parent.parent
RULE_FILES = sorted((ROOT / "deploy" / "prometheus").glob("*.rules.yml"))
T = TypeVar("T")


# The three credentials as the environment gives them (not real ones).
ENV_CREDENTIALS = {
    "ZOOM_EXPORTER_ACCOUNT_ID": "acct",
    "ZOOM_EXPORTER_CLIENT_ID": "cid",
    "ZOOM_EXPORTER_CLIENT_SECRET": "top-secret-value",
}


def clear_exporter_env(monkeypatch: pytest.MonkeyPatch, *more: str) -> None:
    """Take every ZOOM_EXPORTER_* variable (any case, as the settings read them) and every
    variable starting with one of `more` out of this test's environment."""
    prefixes = ("ZOOM_EXPORTER_", *more)
    for name in list(os.environ):
        if name.upper().startswith(prefixes):
            monkeypatch.delenv(name)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    probe: Callable[[], T | None], *, timeout: float = 30.0, interval: float = 0.1, what: str = ""
) -> T:
    """Poll `probe` until it returns a truthy value; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
        except Exception as error:  # the condition may not be reachable yet
            last_error = error
        else:
            if value:
                return value
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout} s waiting for {what} (last error: {last_error})"
    )


def http_get(
    url: str, headers: dict[str, str] | None = None, timeout: float = 5.0
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: apt-get install prometheus prometheus-alertmanager")
    return path


class FakeClock(ManualClock):
    """The tests' clock: a ManualClock that starts at a fixed time (2026-11-18 11:06:40 UTC)."""

    def __init__(self, now: float = 1_795_000_000.0) -> None:
        super().__init__(now)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client session for the test, closed after it."""
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def http(session: aiohttp.ClientSession) -> aiohttp.ClientSession:
    """The same session, under the name the simulator's tests use for raw HTTP."""
    return session


def zoom_client(
    session: aiohttp.ClientSession, api_url: str, oauth_url: str, secret: str = "s", **options: Any
) -> ZoomClient:
    """A client with the test credentials (account "a", client "c") of `simulator()`."""
    options.setdefault("backoff", FAST_BACKOFF)
    return ZoomClient(
        session,
        api_url=api_url,
        oauth_url=oauth_url,
        account_id="a",
        client_id="c",
        client_secret=SecretStr(secret),
        **options,
    )


def simulator(scenario: Scenario) -> Simulator:
    """An in-process simulator on a free loopback port that accepts `zoom_client()`."""
    return Simulator(scenario, client_id="c", client_secret="s", account_id="a", port=0)


@dataclass
class Exporter:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def metrics(self, headers: dict[str, str] | None = None) -> str:
        status, _, body = http_get(self.url + "/metrics", headers)
        assert status == 200
        return body.decode()


def start_exporter(tmp: Path, *args: str, env: dict[str, str] | None = None) -> Exporter:
    port = free_port()
    log = tmp / f"exporter-{port}.log"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ZOOM_EXPORTER_")}
    full_env.update(env or {})
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "exporter", "--web.listen-address", f"127.0.0.1:{port}", *args],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=ROOT,
        )
    return Exporter(f"http://127.0.0.1:{port}", process, log)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    if process.poll() is None:
        process.terminate()
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode if process.returncode is not None else -1


def wait_ready(exporter: Exporter, timeout: float = 30.0) -> None:
    def ready() -> bool:
        if exporter.process.poll() is not None:
            raise AssertionError(f"exporter exited: {exporter.log.read_text()}")
        return http_get(exporter.url + "/-/ready")[0] == 200

    try:
        wait_for(ready, timeout=timeout, what="exporter readiness")
    except AssertionError:
        raise AssertionError(f"exporter not ready; log:\n{exporter.log.read_text()}") from None


@pytest.fixture(scope="session")
def demo_exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exporter]:
    """`python -m exporter --demo` as a real subprocess, ready to scrape."""
    exporter = start_exporter(tmp_path_factory.mktemp("demo"), "--demo", "--poll.interval", "2")
    try:
        wait_ready(exporter)
        yield exporter
    finally:
        stop_process(exporter.process)


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def query(self, expr: str) -> list[dict[str, Any]]:
        params = urllib.parse.urlencode({"query": expr})
        status, _, body = http_get(f"{self.url}/api/v1/query?{params}")
        payload = json.loads(body)
        if status != 200 or payload.get("status") != "success":
            raise AssertionError(f"query {expr!r} failed: {payload}")
        result: list[dict[str, Any]] = payload["data"]["result"]
        return result

    def wait_query(self, expr: str, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Poll until the query returns data (scrapes and rule evaluation take a few seconds)."""
        return wait_for(lambda: self.query(expr), timeout=timeout, interval=0.5, what=expr)

    def get(self, path: str) -> Any:
        status, _, body = http_get(self.url + path)
        assert status == 200, body
        return json.loads(body)


def start_prometheus(
    tmp: Path,
    targets: list[str],
    rule_files: list[Path] | None = None,
    alertmanager: str | None = None,
) -> Prometheus:
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in rule_files or []],
        "scrape_configs": [
            {"job_name": "zoom", "static_configs": [{"targets": targets}]},
        ],
    }
    if alertmanager:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    return run_prometheus(tmp, config)


def run_prometheus(tmp: Path, config: dict[str, Any]) -> Prometheus:
    """A real Prometheus on a free loopback port with `config` (written to
    tmp/prometheus.yml, so that relative rule files are read from tmp), its data in tmp."""
    port = free_port()
    config_path = tmp / "prometheus.yml"
    config_path.write_text(json.dumps(config))  # JSON is YAML
    url = f"http://127.0.0.1:{port}"
    argv = [
        require_binary("prometheus"),
        f"--config.file={config_path}",
        f"--storage.tsdb.path={tmp / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
    ]
    process, log = start_daemon(tmp, "prometheus", argv, url)
    return Prometheus(url, process, log)


def start_daemon(
    tmp: Path, name: str, argv: list[str], url: str
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start a server process logging to tmp/NAME.log; return once its /-/ready answers 200."""
    log = tmp / f"{name}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, cwd=tmp)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"{name} exited: {log.read_text()}")
        return http_get(url + "/-/ready")[0] == 200

    try:
        wait_for(ready, timeout=30, what=f"{name} readiness")
    except AssertionError:
        stop_process(process)
        raise
    return process, log


@pytest.fixture(scope="session")
def prometheus(
    demo_exporter: Exporter, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    """A real Prometheus on loopback scraping the demo exporter every second, with our rules."""
    target = demo_exporter.url.removeprefix("http://")
    prom = start_prometheus(tmp_path_factory.mktemp("prometheus"), [target], RULE_FILES)
    try:
        yield prom
    finally:
        stop_process(prom.process)


# -- a poller against the simulator on a fake clock (fault and for-real tests) -----------------

SECRET = "s"
SEED = ("meeting", str(SEED_MEETING_ID))  # the scenario's seeded meeting


@dataclass
class Rig:
    sim: Simulator
    client: ZoomClient
    poller: Poller
    store: SnapshotStore
    clock: FakeClock

    def calls(self, endpoint: str | None = None) -> int:
        stats = self.sim.stats
        if endpoint is not None:
            return stats.get(endpoint, 0)
        return stats["total"] - stats.get("oauth_token", 0)


def participants(snapshot: Snapshot) -> dict[tuple[str, str], set[str]]:
    return {
        (m.target.kind, m.target.meeting_id): {p.participant_id for p in m.participants}
        for m in snapshot.meetings
    }


def make_rig(
    sim: Simulator,
    session: aiohttp.ClientSession,
    clock: FakeClock,
    *,
    discovery: bool = False,
    client_options: dict[str, Any] | None = None,
    **poller_options: Any,
) -> Rig:
    """A client paced at Pro's limits with a 15,000-call budget, and a poller, on `clock`."""
    options: dict[str, Any] = {
        "limiter": RateLimiter(10, 10 / 60, clock),
        "budget": DailyBudget(15_000),
        "clock": clock,
        "timeout": 5.0,
    }
    options.update(client_options or {})
    client = ZoomClient(
        session,
        api_url=sim.api_url,
        oauth_url=sim.oauth_url,
        account_id="a",
        client_id="c",
        client_secret=SecretStr(SECRET),
        **options,
    )
    store = SnapshotStore()
    settings: dict[str, Any] = {
        "interval": 60.0,
        "configured": configured_targets([str(SEED_MEETING_ID)], []),
        "discovery": discovery,
        **poller_options,
    }
    return Rig(
        sim, client, Poller(client, store, PollSettings(**settings), clock=clock), store, clock
    )


def poller(
    client: ZoomClient,
    store: SnapshotStore,
    *,
    clock: FakeClock,
    deadline: float | None = None,
    resumed: bool = False,
    **settings: Any,
) -> Poller:
    """A Poller from keyword settings (the PollSettings fields) and its own options."""
    return Poller(
        client, store, PollSettings(**settings), clock=clock, deadline=deadline, resumed=resumed
    )
