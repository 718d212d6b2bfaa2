"""The real daemon as an operator runs it: a SIGHUP at any moment, POST /-/reload, a restart
that resumes the day's spend, logs with fields."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from conftest import (
    ROOT,
    Exporter,
    free_port,
    http_get,
    start_exporter,
    stop_process,
    wait_for,
    wait_ready,
)


def sample(exporter: Exporter, name: str) -> float | None:
    status, _, body = http_get(exporter.url + "/metrics")
    if status != 200:
        return None
    for line in body.decode().splitlines():
        # the one account of a plain exporter, the first of the demo's
        if line.startswith(
            (f"{name} ", *(f'{name}{{account="{a}"}} ' for a in ("default", "demo-eu")))
        ):
            return float(line.rsplit(" ", 1)[1])
    return None


def post(url: str) -> tuple[int, str]:
    request = urllib.request.Request(url, method="POST", data=b"")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def catches_sighup(pid: int) -> bool:
    """Whether the process has a handler for SIGHUP (the SigCgt mask in /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    mask = int(
        next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt")), 16
    )
    return bool(mask & (1 << (signal.SIGHUP - 1)))


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_a_sighup_before_the_port_opens_is_carried_out_not_fatal(tmp_path: Path) -> None:
    """Before: the handler was installed after the port opened, and a SIGHUP during start-up
    (a config-management run, a log rotation) ended the process."""
    port = free_port()
    log = tmp_path / "exporter.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOOM_EXPORTER_")}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "exporter", "--demo", "--web.listen-address",
             f"127.0.0.1:{port}", "--poll.interval", "1"],
            stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        )  # fmt: skip
    try:
        wait_for(lambda: catches_sighup(process.pid), timeout=20, interval=0.005, what="handler")
        assert not listening(port)  # start-up is still under way
        process.send_signal(signal.SIGHUP)
        exporter = Exporter(f"http://127.0.0.1:{port}", process, log)
        wait_ready(exporter)
        wait_for(lambda: "configuration reloaded" in log.read_text(), what="the early reload")
        assert process.poll() is None
    finally:
        stop_process(process)


def test_the_lifecycle_reload_endpoint(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text("poll_interval: 1\n")
    off = start_exporter(tmp_path, "--demo", "--config.file", str(config))
    on = start_exporter(tmp_path, "--demo", "--config.file", str(config), "--web.enable-lifecycle")
    try:
        wait_ready(off)
        wait_ready(on)
        assert post(off.url + "/-/reload")[0] == 403  # as Prometheus: only when enabled
        assert post(on.url + "/-/reload") == (200, "Reloaded\n")
        config.write_text("poll_interval: [\n")
        status, text = post(on.url + "/-/reload")
        assert status == 500 and "invalid YAML (the line is not shown)" in text
        reloaded = "zoom_exporter_config_last_reload_successful"
        wait_for(lambda: sample(on, reloaded) == 0, what="the failed reload on /metrics")
        config.write_text("poll_interval: 2\n")
        assert post(on.url + "/-/reload")[0] == 200
        wait_for(lambda: sample(on, reloaded) == 1, what="the good reload on /metrics")
    finally:
        stop_process(off.process)
        stop_process(on.process)


def test_a_restart_on_the_same_day_resumes_the_spend(tmp_path: Path) -> None:
    """Before: the day's spend lived only in memory; a restart, rollout or crash loop started
    the day afresh."""
    storage = tmp_path / "state"
    first = start_exporter(
        tmp_path, "--demo", "--poll.interval", "1", "--storage.path", str(storage)
    )
    try:
        wait_ready(first)
        budget = wait_for(lambda: sample(first, "zoom_exporter_daily_budget"), what="budget")
        wait_for(lambda: (sample(first, "zoom_exporter_poll_cycles_total") or 0) >= 3, what="3")
    finally:
        assert stop_process(first.process) == 0
    saved = json.loads((storage / "state.json").read_text())
    used = saved["accounts"]["demo-eu"]["budget"]["used"]
    assert used >= 3 * 7  # three cycles of the demo at least
    assert saved["accounts"]["demo-eu"]["budget"]["day"] == int(time.time() // 86400)

    second = start_exporter(
        tmp_path, "--demo", "--poll.interval", "1", "--storage.path", str(storage)
    )
    try:
        wait_ready(second)
        remaining = wait_for(
            lambda: sample(second, "zoom_exporter_daily_budget_remaining"), what="remaining"
        )
        assert remaining <= budget - used  # resumed, not afresh
        assert "resumed today's API spend" in second.log.read_text()
    finally:
        stop_process(second.process)

    (storage / "state.json").write_text("{not json")
    third = start_exporter(
        tmp_path, "--demo", "--poll.interval", "1", "--storage.path", str(storage)
    )
    try:
        wait_ready(third)
        assert "the state file is corrupt" in third.log.read_text()
        wait_for(lambda: json.loads((storage / "state.json").read_text()), what="rewritten")
    finally:
        stop_process(third.process)


def test_json_logs_carry_fields(tmp_path: Path) -> None:
    exporter = start_exporter(tmp_path, "--demo", "--poll.interval", "1", "--log.format", "json")
    try:
        wait_ready(exporter)
        wait_for(lambda: "cycle done" in exporter.log.read_text(), what="a cycle line")
    finally:
        stop_process(exporter.process)
    lines = [json.loads(line) for line in exporter.log.read_text().splitlines() if line]
    cycle = next(line for line in lines if line["msg"] == "cycle done")
    assert cycle["state"] == "ok" and isinstance(cycle["calls"], int)
    assert {"ts", "level", "logger", "msg"} <= set(cycle)
