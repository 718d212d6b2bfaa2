"""End to end: `python -m exporter --demo` as a subprocess, scraped over HTTP and by Prometheus."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from conftest import Exporter, Prometheus, start_exporter, stop_process, wait_ready

SEED = {"meeting_id": "85746065432", "participant_id": "16778240"}


def value(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_demo_serves_seed_participant_in_base_units(demo_exporter: Exporter) -> None:
    text = demo_exporter.metrics()
    audio_in = {"account": "demo-eu", **SEED, "media": "audio", "stream": "input"}
    assert value(text, "zoom_participant_bitrate_bytes_per_second", **audio_in) == 2875.0
    assert value(text, "zoom_participant_latency_seconds", **audio_in) == 0.126
    assert value(text, "zoom_participant_packet_loss_ratio", **audio_in, stat="avg") == 0.003
    assert (
        value(
            text,
            "zoom_participant_resolution_width_pixels",
            account="demo-eu",
            **SEED,
            media="video",
            stream="input",
        )
        == 1280
    )
    assert 'zoom_up{account="demo-eu"} 1.0' in text and 'zoom_up{account="demo-us"} 1.0' in text
    rss = next(
        line for line in text.splitlines() if line.startswith("process_resident_memory_bytes")
    )
    assert float(rss.split()[1]) > 10 * 2**20
    assert 'zoom_meetings{account="demo-eu",kind="webinar"}' in text
    assert 'zoom_meetings{account="demo-us",kind="webinar"}' in text
    assert "NaN" not in text


def test_promtool_check_metrics_on_a_real_scrape(demo_exporter: Exporter) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: apt-get install prometheus")
    scrape = demo_exporter.metrics().encode()
    result = subprocess.run(
        [promtool, "check", "metrics"], input=scrape, capture_output=True, timeout=30
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert result.stdout.decode().strip() == ""


def test_prometheus_scrapes_participants(prometheus: Prometheus, demo_exporter: Exporter) -> None:
    result = prometheus.wait_query('zoom_participant_latency_seconds{media="audio",stream="input"}')
    ids = {r["metric"]["participant_id"] for r in result}
    assert SEED["participant_id"] in ids
    assert len(ids) >= 10
    up = prometheus.wait_query('up{job="zoom"} == 1')
    assert up
    joined = prometheus.wait_query(
        'zoom_participant_bitrate_bytes_per_second{media="audio",stream="input"}'
        " * on(account, kind, meeting_id, participant_id) group_left(user_name)"
        " zoom_participant_info"
    )
    seed = [r for r in joined if r["metric"]["participant_id"] == SEED["participant_id"]]
    assert seed and float(seed[0]["value"][1]) == 2875.0
    assert seed[0]["metric"]["user_name"] == "Seed Sample"


def test_secrets_never_reach_metrics_or_logs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    exporter = start_exporter(
        tmp_path, "--demo", env={"ZOOM_EXPORTER_CLIENT_SECRET": "very-secret-token-42"}
    )
    try:
        wait_ready(exporter)
        assert "very-secret-token-42" not in exporter.metrics()
        assert "demo-secret" not in exporter.metrics()
    finally:
        stop_process(exporter.process)
    assert "very-secret-token-42" not in exporter.log.read_text()


def test_sigterm_exits_cleanly(tmp_path) -> None:  # type: ignore[no-untyped-def]
    exporter = start_exporter(tmp_path, "--demo")
    wait_ready(exporter)
    exporter.process.send_signal(signal.SIGTERM)
    assert exporter.process.wait(timeout=5) == 0


def run_probe(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOOM_EXPORTER_")}
    return subprocess.run(
        [sys.executable, "-m", "exporter", "probe", "--demo", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_probe_lists_a_meeting_as_json() -> None:
    result = run_probe("--meeting", SEED["meeting_id"], "--json")
    assert result.returncode == 0, result.stderr
    readings = json.loads(result.stdout)
    seed = next(r for r in readings if r["participant_id"] == SEED["participant_id"])
    audio = next(s for s in seed["streams"] if s["media"] == "audio" and s["stream"] == "input")
    assert audio["bitrate_bytes"] == 2875.0
    assert audio["latency_seconds"] == 0.126


def test_probe_single_participant_text() -> None:
    result = run_probe("--meeting", SEED["meeting_id"], "--participant", SEED["participant_id"])
    assert result.returncode == 0, result.stderr
    assert "participant 16778240 Seed Sample" in result.stdout
    assert "audio/input: bitrate=2875B/s latency=0.126s" in result.stdout


def test_probe_unknown_meeting_fails_cleanly() -> None:
    result = run_probe("--meeting", "123")
    assert result.returncode == 1
    assert "3001" in result.stderr
    assert "Traceback" not in result.stderr
