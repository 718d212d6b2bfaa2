"""Alerts end to end: demo exporter -> Prometheus with our rules -> a real Alertmanager."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import (
    ROOT,
    RULE_FILES,
    Exporter,
    Prometheus,
    free_port,
    http_get,
    start_daemon,
    start_prometheus,
    stop_process,
    wait_for,
)

ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
QOS_GROUP = "zoom-qos.alerts"
PARTICIPANT_ALERTS = {"ZoomParticipantPoorAudio", "ZoomParticipantPoorVideo"}
HEALTH_ALERTS = {"ZoomExporterDown", "ZoomApiUnreachable", "ZoomDataStale"}


class Webhook:
    """A loopback HTTP server that records the notifications Alertmanager posts."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.received.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    try:
        yield hook
    finally:
        hook.close()


def alertmanager_config(tmp: Path, webhook_url: str) -> Path:
    """Our example config, with the receivers pointed at the test's webhook and no waiting."""
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = webhook_url + "/" + receiver["name"]
    for route in [config["route"], *config["route"]["routes"]]:
        route["group_wait"] = "1s"
    path = tmp / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def fast_rules(tmp: Path) -> list[Path]:
    """Our rule files with the QoS alerts' `for:` shortened to seconds."""
    out = []
    for source in RULE_FILES:
        data = yaml.safe_load(source.read_text())
        for group in data["groups"]:
            for rule in group["rules"]:
                if group["name"] == QOS_GROUP and "alert" in rule:
                    rule["for"] = "2s"
        target = tmp / source.name
        target.write_text(yaml.safe_dump(data, sort_keys=False))
        out.append(target)
    return out


def start_alertmanager(tmp: Path, config: Path) -> tuple[str, subprocess.Popen[bytes]]:
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        pytest.fail("alertmanager is not installed: apt-get install prometheus-alertmanager")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.path={tmp / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    process, _ = start_daemon(tmp, "alertmanager", argv, url)
    return url, process


def test_alertmanager_receives_a_degraded_participant_alert(
    demo_exporter: Exporter, tmp_path: Path, webhook: Webhook
) -> None:
    am_url, am = start_alertmanager(tmp_path, alertmanager_config(tmp_path, webhook.url))
    prom: Prometheus | None = None
    try:
        prom = start_prometheus(
            tmp_path,
            [demo_exporter.url.removeprefix("http://")],
            fast_rules(tmp_path),
            alertmanager=am_url.removeprefix("http://"),
        )

        def participant_alerts() -> list[dict[str, Any]]:
            status, _, body = http_get(am_url + "/api/v2/alerts")
            assert status == 200
            alerts: list[dict[str, Any]] = json.loads(body)
            return [a for a in alerts if a["labels"].get("alertname") in PARTICIPANT_ALERTS]

        alerts = wait_for(participant_alerts, timeout=60, interval=0.5, what="participant alert")
        alert = alerts[0]
        labels = alert["labels"]
        assert labels["severity"] == "info"
        assert labels["user_name"] and labels["participant_id"] and labels["meeting_id"]
        assert labels["kind"] in {"meeting", "webinar"}
        assert alert["annotations"]["runbook_url"].endswith("#" + labels["alertname"].lower())
        assert alert["status"]["state"] in {"active", "suppressed"}

        # The alert is about a participant the simulator really degraded: one of its streams
        # of that media breaks a threshold in the exporter's own numbers.
        media = "audio" if labels["alertname"].endswith("Audio") else "video"
        who = (
            f'kind="{labels["kind"]}", meeting_id="{labels["meeting_id"]}", '
            f'participant_id="{labels["participant_id"]}", media="{media}"'
        )
        breaking = prom.query(
            f"zoom_participant_latency_seconds{{{who}}} > 0.150"
            f" or zoom_participant_jitter_seconds{{{who}}} > 0.040"
            f' or zoom_participant_packet_loss_ratio{{{who}, stat="avg"}} > 0.02'
        )
        assert breaking, f"{labels} fired but no stream breaks a threshold"

        # Routed by severity: the info receiver got a notification.
        wait_for(
            lambda: any(path == "/zoom-info" for path, _ in webhook.received),
            timeout=30,
            what="a notification on the zoom-info receiver",
        )
        posted = [b for path, b in webhook.received if path == "/zoom-info"]
        names = {a["labels"]["alertname"] for body in posted for a in body["alerts"]}
        assert names <= PARTICIPANT_ALERTS | {"ZoomMeetingDegraded"}
        assert not any(path == "/zoom-pager" for path, _ in webhook.received)
    finally:
        if prom is not None:
            stop_process(prom.process)
        stop_process(am)


def test_shared_prometheus_alert_states(prometheus: Prometheus) -> None:
    """With our real `for:` durations: the demo's poor participants are at least pending, and
    the exporter-health alerts are silent."""
    prometheus.wait_query("account_kind_meeting_id:zoom_participants_poor:sum > 0", timeout=60)
    pending = prometheus.wait_query(
        'ALERTS{alertname=~"ZoomParticipantPoor(Audio|Video)"}', timeout=30
    )
    assert all(series["metric"]["user_name"] for series in pending)
    # Each rule group evaluates on its own schedule: before the health group's first evaluation
    # after the first scrape, absent(zoom_up) holds ZoomExporterDown pending. It must clear.
    health_alerts = f'ALERTS{{alertname=~"{"|".join(sorted(HEALTH_ALERTS))}"}}'
    wait_for(
        lambda: prometheus.query('up{job="zoom"} == 1') and not prometheus.query(health_alerts),
        timeout=30,
        what=f"no exporter-health alert while the exporter is up: {health_alerts}",
    )
