"""Recording and alerting rules: promtool, amtool, and the monitoring-mixin conventions."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from conftest import ROOT, require_binary

PROM_DIR = ROOT / "deploy" / "prometheus"
RULE_FILES = sorted(PROM_DIR.glob("*.rules.yml"))
RULE_TESTS = sorted((PROM_DIR / "tests").glob("*.yml"))
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
RUNBOOK = ROOT / "deploy" / "RUNBOOK.md"
RUNBOOK_URL = "https://github.com/zoom-qos-exporter/zoom-qos-exporter/blob/main/deploy/RUNBOOK.md#"
EXPECTED_ALERTS = {
    "ZoomExporterDown",
    "ZoomApiUnreachable",
    "ZoomDataStale",
    "ZoomApiRateLimited",
    "ZoomDailyBudgetNearlySpent",
    "ZoomParticipantPoorAudio",
    "ZoomParticipantPoorVideo",
    "ZoomMeetingDegraded",
}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def rules() -> list[dict[str, Any]]:
    out = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            out.extend(group["rules"])
    return out


def alerts() -> list[dict[str, Any]]:
    return [r for r in rules() if "alert" in r]


def test_rule_files_are_loaded_by_the_shared_fixture() -> None:
    assert [p.name for p in RULE_FILES] == ["zoom-alerts.rules.yml", "zoom.rules.yml"]


def test_promtool_check_rules() -> None:
    result = run(require_binary("promtool"), "check", "rules", *map(str, RULE_FILES))
    assert "SUCCESS" in result.stdout


def test_promtool_test_rules() -> None:
    assert RULE_TESTS
    result = run(require_binary("promtool"), "test", "rules", *map(str, RULE_TESTS))
    assert "SUCCESS" in result.stdout and "FAILED" not in result.stdout


def test_every_alert_has_firing_and_silent_cases() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS:
        for group in yaml.safe_load(path.read_text())["tests"]:
            for case in group.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    names = {a["alert"] for a in alerts()}
    assert names == EXPECTED_ALERTS
    assert names - firing == set(), "alerts never tested firing"
    assert names - silent == set(), "alerts never tested not firing"


def test_alerts_follow_mixin_conventions() -> None:
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in RUNBOOK.read_text().splitlines()
        if line.startswith("#")
    }
    for alert in alerts():
        name = alert["alert"]
        assert re.fullmatch(r"Zoom[A-Z][A-Za-z]+", name), name
        assert alert["labels"]["severity"] in {"critical", "warning", "info"}, name
        annotations = alert["annotations"]
        assert {"summary", "description", "runbook_url"} <= set(annotations), name
        assert annotations["runbook_url"] == RUNBOOK_URL + name.lower(), name
        assert name.lower() in anchors, f"RUNBOOK.md has no section for {name}"
        assert annotations["summary"].endswith("."), name


def test_recording_rules_follow_level_metric_operations() -> None:
    records = [r["record"] for r in rules() if "record" in r]
    assert len(records) == len(set(records))
    for name in records:
        if name.startswith("zoom:threshold_"):
            continue
        level, metric, operations = name.split(":")
        assert level and metric.startswith("zoom_") and operations, name
    expected = {
        f"kind_meeting_id:zoom_participant_{metric}:{op}"
        for metric in ("latency_seconds", "jitter_seconds", "packet_loss_ratio")
        for op in ("max", "avg")
    } | {
        "kind_meeting_id:zoom_participants_poor:sum",
        "kind_meeting_id:zoom_participants_poor:ratio",
    }
    assert expected <= set(records)


def test_thresholds_live_in_one_place() -> None:
    """Alerts compare against zoom:threshold_* series, never against literal QoS numbers."""
    defined = {r["record"] for r in rules() if r.get("record", "").startswith("zoom:threshold_")}
    used: set[str] = set()
    for rule in rules():
        expr = str(rule["expr"])
        used |= set(re.findall(r"zoom:threshold_\w+", expr))
        if "alert" in rule:
            # "> 0" and "== 1" are not thresholds; anything else numeric would be.
            assert not re.search(r"[<>]=?\s*(bool\s+)?(?![01]\b)\d", expr), rule["alert"]
    assert used == defined


def test_amtool_check_config() -> None:
    result = run(require_binary("amtool"), "check-config", str(ALERTMANAGER))
    assert "SUCCESS" in result.stdout


def test_alertmanager_routes_by_severity(tmp_path: Path) -> None:
    amtool = require_binary("amtool")
    for severity, receiver in (
        ("critical", "zoom-pager"),
        ("warning", "zoom-team"),
        ("info", "zoom-info"),
    ):
        run(
            amtool,
            "config",
            "routes",
            "test",
            f"--config.file={ALERTMANAGER}",
            f"--verify.receivers={receiver}",
            f"severity={severity}",
            "alertname=ZoomSomething",
        )
