"""Recording and alerting rules: promtool, amtool, and the monitoring-mixin conventions."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from conftest import ROOT, free_port, http_get, require_binary, start_daemon, stop_process, wait_for

PROM_DIR = ROOT / "deploy" / "prometheus"
RULE_FILES = sorted(PROM_DIR.glob("*.rules.yml"))
RULE_TESTS = sorted((PROM_DIR / "tests").glob("*.yml"))
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
RUNBOOK = ROOT / "deploy" / "RUNBOOK.md"
RUNBOOK_URL = "https://github.com/zoom-qos-exporter/zoom-qos-exporter/blob/main/deploy/RUNBOOK.md#"
EXPECTED_ALERTS = {
    "ZoomExporterDown",
    "ZoomApiUnreachable",
    "ZoomCredentialsRejected",
    "ZoomApiForbidden",
    "ZoomDailyLimitReached",
    "ZoomDailyBudgetExhausted",
    "ZoomDataStale",
    "ZoomApiRateLimited",
    "ZoomDailyBudgetNearlySpent",
    "ZoomMeetingsDeferred",
    "ZoomExporterConfigReloadFailed",
    "ZoomExporterStateFileFailing",
    "ZoomParticipantPoorAudio",
    "ZoomParticipantPoorVideo",
    "ZoomMeetingDegraded",
    "ZoomMeetingPoorAudioMos",
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
        # Every aggregate keeps the Zoom account, and its level says so.
        assert level.startswith("account_"), name
    expected = {
        f"account_kind_meeting_id:zoom_participant_{metric}:{op}"
        for metric in ("latency_seconds", "jitter_seconds", "packet_loss_ratio")
        for op in ("max", "avg")
    } | {
        "account_kind_meeting_id:zoom_participants_poor:sum",
        "account_kind_meeting_id:zoom_participants_poor:ratio",
    }
    assert expected <= set(records)


# The joins that cannot keep `account`: `up` has no such label (a failed scrape loses every
# account of the target at once).
# The state file is the process's, for every account at once.
TARGET_ONLY_JOINS = {
    ("ZoomExporterDown", "on (job, instance)"),
    ("ZoomExporterStateFileFailing", "by (job, instance)"),
    ("ZoomExporterStateFileFailing", "on (job, instance)"),
}


def test_every_aggregation_and_join_keeps_the_account() -> None:
    """Meeting and participant ids are unique within a Zoom account only, and one account's
    state must never hide or raise another's: every `by`, `on`, `ignoring` and `without`
    that names labels keeps `account` (`on ()` against a threshold names none)."""
    checked = 0
    for rule in rules():
        name = rule.get("alert") or rule["record"]
        for clause, labels in re.findall(
            r"\b(by|on|ignoring|without)\s*\(([^()]*)\)", str(rule["expr"])
        ):
            names = {label.strip() for label in labels.split(",") if label.strip()}
            if not names or (name, f"{clause} ({labels})") in TARGET_ONLY_JOINS:
                continue
            assert clause not in {"ignoring", "without"} or "account" not in names, name
            assert clause in {"ignoring", "without"} or "account" in names, (name, clause, labels)
            checked += 1
    assert checked >= 40


def test_alerts_about_an_account_name_it() -> None:
    """Every alert whose series carry `account` says which account, in its summary (for the
    notification's title) or its description."""
    process_wide = {
        "ZoomExporterDown",
        "ZoomExporterConfigReloadFailed",
        "ZoomExporterStateFileFailing",
    }
    for alert in alerts():
        if alert["alert"] in process_wide:
            continue
        text = alert["annotations"]["summary"] + alert["annotations"]["description"]
        assert "$labels.account" in text, alert["alert"]


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


def test_states_with_an_alert_of_their_own_do_not_raise_zoom_api_unreachable() -> None:
    """zoom_up is 0 in every state that stops polling: ZoomApiUnreachable leaves out exactly
    the states that another alert names."""
    exprs = {a["alert"]: str(a["expr"]) for a in alerts()}
    own = {
        state
        for expr in exprs.values()
        for state in re.findall(r'zoom_exporter_state\{state="(\w+)"\}', expr)
    }
    assert own == {"auth_failed", "forbidden", "daily_limit", "budget_exhausted"}
    (left_out,) = re.findall(
        r'zoom_exporter_state\{state=~"([\w|]+)"\}', exprs["ZoomApiUnreachable"]
    )
    assert set(left_out.split("|")) == own
    assert "unless on (job, instance, account)" in exprs["ZoomApiUnreachable"]


def test_inhibit_rules_name_real_alerts() -> None:
    """Every alert name (or pattern) an inhibition matches exists: a renamed alert must not
    leave an inhibition that silently matches nothing."""
    names = {a["alert"] for a in alerts()}
    config = yaml.safe_load(ALERTMANAGER.read_text())
    checked = 0
    for rule in config["inhibit_rules"]:
        for key in ("source_matchers", "target_matchers"):
            for matcher in rule[key]:
                match = re.fullmatch(r'alertname(=~|=)"(.*)"', matcher)
                if not match:
                    continue
                op, value = match.groups()
                for pattern in value.split("|") if op == "=~" else [re.escape(value)]:
                    assert any(re.fullmatch(pattern, n) for n in names), (key, pattern)
                    checked += 1
    assert checked >= 20


def post_alerts(url: str, alerts: list[dict[str, str]]) -> None:
    body = json.dumps([{"labels": labels} for labels in alerts]).encode()
    request = urllib.request.Request(
        url + "/api/v2/alerts", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def test_alertmanager_inhibitions(tmp_path: Path) -> None:
    """A real Alertmanager with our config: which alerts the pausing states hold back."""
    binary = shutil.which("prometheus-alertmanager") or require_binary("alertmanager")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        binary,
        f"--config.file={ALERTMANAGER}",
        f"--storage.path={tmp_path / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    process, _ = start_daemon(tmp_path, "alertmanager", argv, url)
    a = {"job": "zoom", "instance": "a:9924"}  # Zoom's daily limit is spent
    b = {"job": "zoom", "instance": "b:9924"}  # credentials rejected
    c = {"job": "zoom", "instance": "c:9924"}  # healthy
    # One exporter, two Zoom accounts: acme's credentials are refused, globex is healthy.
    acme = {"job": "zoom", "instance": "e:9924", "account": "acme"}
    globex = {"job": "zoom", "instance": "e:9924", "account": "globex"}
    initech = {"job": "zoom", "instance": "e:9924", "account": "initech"}  # Zoom unreachable
    d = {"job": "zoom", "instance": "d:9924"}  # cannot be scraped
    meeting = {"kind": "meeting", "meeting_id": "111"}
    sent = {
        "limit": {"alertname": "ZoomDailyLimitReached", "severity": "critical", **a},
        "stale a": {"alertname": "ZoomDataStale", "severity": "warning", **a},
        "nearly spent a": {"alertname": "ZoomDailyBudgetNearlySpent", "severity": "warning", **a},
        "reload a": {"alertname": "ZoomExporterConfigReloadFailed", "severity": "warning", **a},
        "rejected": {"alertname": "ZoomCredentialsRejected", "severity": "critical", **b},
        "deferred b": {"alertname": "ZoomMeetingsDeferred", "severity": "info", **b},
        "stale c": {"alertname": "ZoomDataStale", "severity": "warning", **c, **meeting},
        "deferred c": {"alertname": "ZoomMeetingsDeferred", "severity": "info", **c},
        "poor audio": {
            "alertname": "ZoomParticipantPoorAudio",
            "severity": "info",
            "participant_id": "p1",
            **meeting,
        },
        "rejected acme": {"alertname": "ZoomCredentialsRejected", "severity": "critical", **acme},
        "stale acme": {"alertname": "ZoomDataStale", "severity": "warning", **acme},
        "stale globex": {"alertname": "ZoomDataStale", "severity": "warning", **globex},
        "poor audio acme": {
            "alertname": "ZoomParticipantPoorAudio",
            "severity": "info",
            "account": "acme",
            "participant_id": "p1",
            **meeting,
        },
        "poor audio globex": {
            "alertname": "ZoomParticipantPoorAudio",
            "severity": "info",
            "account": "globex",
            "participant_id": "p1",
            **meeting,
        },
        "unreachable initech": {
            "alertname": "ZoomApiUnreachable",
            "severity": "critical",
            **initech,
        },
        "stale initech": {"alertname": "ZoomDataStale", "severity": "warning", **initech},
        "poor audio initech": {
            "alertname": "ZoomParticipantPoorAudio",
            "severity": "info",
            "account": "initech",
            "participant_id": "p1",
            **meeting,
        },
        "down d": {"alertname": "ZoomExporterDown", "severity": "critical", **d},
        "stale d": {"alertname": "ZoomDataStale", "severity": "warning", **d},
    }
    expected_suppressed = {
        "stale a",
        "nearly spent a",
        "deferred b",
        "poor audio",
        "stale acme",
        "poor audio acme",
        "stale initech",
        "poor audio initech",
        "stale d",
    }
    try:
        post_alerts(url, list(sent.values()))

        def states() -> dict[str, str]:
            status, _, body = http_get(url + "/api/v2/alerts")
            assert status == 200
            by_labels = {
                json.dumps(alert["labels"], sort_keys=True): alert["status"]["state"]
                for alert in json.loads(body)
            }
            return {
                key: by_labels.get(json.dumps(labels, sort_keys=True), "missing")
                for key, labels in sent.items()
            }

        want = {k: "suppressed" if k in expected_suppressed else "active" for k in sent}
        try:
            wait_for(lambda: states() == want, timeout=15, interval=0.2, what="inhibitions")
        except AssertionError:
            assert states() == want
    finally:
        stop_process(process)
