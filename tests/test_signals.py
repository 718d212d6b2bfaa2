"""Signals on the real daemon: SIGHUP reloads the config file, SIGTERM exits within 5 s.

The exporter runs as a subprocess against a simulator served by this test's event loop, so
waits happen in threads while the loop keeps answering the exporter's calls.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Exporter, http_get, simulator, start_exporter, stop_process, wait_for
from exporter.simulator import SEED_MEETING_ID, Scenario, Simulator

GOOD_SECRET = "s"  # what `simulator()` accepts
WRONG_SECRET = "not-the-secret-Xq9"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with simulator(Scenario(seed=21)) as server:
        yield server


def write_config(path: Path, sim: Simulator, secret: str, **extra: Any) -> None:
    settings = {
        "account_id": "a",
        "client_id": "c",
        "client_secret": secret,
        "api_url": sim.api_url,
        "oauth_url": sim.oauth_url,
        "poll_interval": 1,
        "discovery": False,
        "meeting_ids": [str(SEED_MEETING_ID)],
        **extra,
    }
    path.write_text(json.dumps(settings))  # JSON is YAML


def sample(exporter: Exporter, name: str, labels: str = "") -> float | None:
    """The value of one sample on /metrics, or None."""
    status, _, body = http_get(exporter.url + "/metrics")
    if status != 200:
        return None
    pattern = rf"^{re.escape(name)}{re.escape(labels)} (\S+)$"
    match = re.search(pattern, body.decode(), re.MULTILINE)
    return float(match.group(1)) if match else None


async def eventually(exporter: Exporter, what: str, probe: Any) -> Any:
    """Wait in a thread (the simulator lives on this loop) for probe() to be truthy."""

    def check() -> Any:
        if exporter.process.poll() is not None:
            raise AssertionError(f"exporter exited:\n{exporter.log.read_text()}")
        return probe()

    try:
        return await asyncio.to_thread(wait_for, check, timeout=30, what=what)
    except AssertionError as error:
        raise AssertionError(f"{error}\nlog:\n{exporter.log.read_text()}") from None


def state(exporter: Exporter, name: str) -> bool:
    return sample(exporter, "zoom_exporter_state", f'{{account="default",state="{name}"}}') == 1


async def test_sighup_reloads_and_a_bad_reload_keeps_the_old_settings(
    sim: Simulator, tmp_path: Path
) -> None:
    config = tmp_path / "config.yml"
    write_config(config, sim, WRONG_SECRET)
    exporter = start_exporter(tmp_path, "--config.file", str(config))
    try:
        await eventually(exporter, "auth_failed", lambda: state(exporter, "auth_failed"))
        assert sample(exporter, "zoom_up", '{account="default"}') == 0
        assert sample(exporter, "zoom_exporter_config_last_reload_successful") == 1

        # Fix the secret and reload: the poller wakes at once, with no token backoff left over.
        write_config(config, sim, GOOD_SECRET)
        exporter.process.send_signal(signal.SIGHUP)
        await eventually(exporter, "state ok after reload", lambda: state(exporter, "ok"))
        assert sample(exporter, "zoom_up", '{account="default"}') == 1
        assert "configuration reloaded" in exporter.log.read_text()
        reloaded_at = sample(exporter, "zoom_exporter_config_last_reload_success_timestamp_seconds")
        assert reloaded_at is not None and abs(reloaded_at - time.time()) < 30

        # A broken file: rejected with the reason, and polling goes on with the old settings.
        config.write_text("client_secret: [unclosed\n")
        calls = sample(exporter, "zoom_exporter_last_cycle_requests", '{account="default"}')
        exporter.process.send_signal(signal.SIGHUP)
        await eventually(
            exporter,
            "reload rejected",
            lambda: sample(exporter, "zoom_exporter_config_last_reload_successful") == 0,
        )
        log = exporter.log.read_text()
        assert "reload failed, keeping the previous settings" in log
        assert "config.yml:" in log and ": invalid YAML (the line is not shown)" in log
        before = sim.stats["meeting_participants_qos"]
        await eventually(
            exporter, "polling goes on", lambda: sim.stats["meeting_participants_qos"] > before
        )
        assert state(exporter, "ok") and calls is not None
        assert sample(
            exporter, "zoom_exporter_config_last_reload_success_timestamp_seconds"
        ) == pytest.approx(reloaded_at)

        # A valid file with a bad value is refused too, naming the file, line and setting.
        write_config(config, sim, GOOD_SECRET, poll_interval=0)
        exporter.process.send_signal(signal.SIGHUP)
        await eventually(
            exporter,
            "second rejection",
            lambda: re.search(
                r"config\.yml:\d+: poll_interval: Input should be greater than or equal to 1",
                exporter.log.read_text(),
            ),
        )
        assert sample(exporter, "zoom_exporter_config_last_reload_successful") == 0
    finally:
        assert stop_process(exporter.process) == 0
    log = exporter.log.read_text()
    assert WRONG_SECRET not in log and "not-the-secret" not in log


async def test_sigterm_exits_within_five_seconds_while_zoom_hangs(
    sim: Simulator, tmp_path: Path
) -> None:
    config = tmp_path / "config.yml"
    write_config(config, sim, GOOD_SECRET, request_timeout=60)
    sim.faults.timeout(count=1000, seconds=120)  # every API call hangs for two minutes
    exporter = start_exporter(tmp_path, "--config.file", str(config))
    try:
        await eventually(
            exporter, "a hanging call", lambda: sim.stats["meeting_participants_qos"] > 0
        )
        # A scraper holding a keep-alive connection open must not delay the exit either.
        host, port = exporter.url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=5)
        connection.request("GET", "/-/healthy")
        assert connection.getresponse().read() is not None
        started = time.monotonic()
        exporter.process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(exporter.process.wait, 10)
        took = time.monotonic() - started
        connection.close()
    finally:
        stop_process(exporter.process)
    assert code == 0, exporter.log.read_text()
    assert took < 5, f"SIGTERM took {took:.2f} s"
    print(f"\nSIGTERM with a hung Zoom call and an open keep-alive connection: {took:.2f} s")
