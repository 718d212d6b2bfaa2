"""deploy/RUNBOOK.md agrees with the code: the settings and defaults it names, the commands and
flags it tells an operator to run, the backoffs, the plan limits, the thresholds and its
sizing arithmetic."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from exporter.settings import ENV_PREFIX, Settings, load_settings
from exporter.zoom.auth import CREDENTIALS_BACKOFF, TOKEN_BACKOFF
from exporter.zoom.limits import PLANS

RUNBOOK = (ROOT / "deploy" / "RUNBOOK.md").read_text()
RULES = ROOT / "deploy" / "prometheus" / "zoom.rules.yml"


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The defaults: no ZOOM_EXPORTER_* variable from the caller's environment."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    return load_settings({"demo": True})


def table_rows(first_cell: str) -> dict[str, list[str]]:
    """Markdown table rows whose first cell matches `first_cell` (a regex): {cell: cells}."""
    rows = {}
    for line in RUNBOOK.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and re.fullmatch(first_cell, cells[0]):
            rows[cells[0].strip("`")] = cells
    return rows


def test_every_setting_the_runbook_names_exists() -> None:
    named = set(re.findall(r"\bZOOM_EXPORTER_([A-Z_]+[A-Z])\b", RUNBOOK))
    fields = {name.upper() for name in Settings.model_fields}
    assert named and named <= fields, named - fields


def test_settings_table_defaults(settings: Settings) -> None:
    rows = table_rows(r"`ZOOM_EXPORTER_\w+`")
    assert rows["ZOOM_EXPORTER_PLAN"][-1] == f"`{settings.plan}`"
    assert rows["ZOOM_EXPORTER_MAX_RETRIES"][-1] == f"`{settings.max_retries}`"
    assert rows["ZOOM_EXPORTER_MAX_POLL_INTERVAL"][-1] == f"`{settings.longest_poll_interval:g}`"
    pro = settings.limits
    business = load_settings({"demo": True, "plan": "business"}).limits
    budget = rows["ZOOM_EXPORTER_DAILY_REQUEST_BUDGET"][-1]
    assert f"{pro.daily_budget:,} on Pro, {business.daily_budget:,} on Business" in budget
    assert pro.daily_budget * 2 == pro.daily_cap  # "half the plan's cap"
    heavy = rows["ZOOM_EXPORTER_HEAVY_RATE"][-1]
    assert f"{pro.heavy_per_second:g} or {business.heavy_per_second:g}" in heavy
    intensive = rows["ZOOM_EXPORTER_RESOURCE_INTENSIVE_RATE"][-1]
    rates = (
        f"{pro.resource_intensive_per_second:.3f} or {business.resource_intensive_per_second:.3f}"
    )
    assert rates in intensive


def test_plan_limits_table() -> None:
    pro, business = PLANS["pro"], PLANS["business"]
    assert all(PLANS[name] == business for name in ("business_plus", "enterprise", "education"))
    rows = table_rows(r"Heavy, per second|Resource-intensive, per minute|daily cap.*")
    assert rows["Heavy, per second"][1:3] == [
        f"{pro.heavy_per_second:g}/s",
        f"{business.heavy_per_second:g}/s",
    ]
    assert rows["Resource-intensive, per minute"][1:3] == [
        f"{pro.resource_intensive_per_minute:g}/min",
        f"{business.resource_intensive_per_minute:g}/min",
    ]
    (daily,) = [cells for name, cells in rows.items() if name.startswith("daily cap")]
    assert daily[1:3] == [f"{pro.daily_cap:,}", f"{business.daily_cap:,}"]


def test_token_backoffs() -> None:
    """ZoomApiUnreachable: "backs off up to 2 minutes"; ZoomCredentialsRejected: "a random
    wait of up to 1 minute, doubling with each failure up to 10 minutes"."""
    assert TOKEN_BACKOFF.cap == 120
    assert "(it backs off up to 2 minutes)" in RUNBOOK
    assert (CREDENTIALS_BACKOFF.base, CREDENTIALS_BACKOFF.cap) == (60, 600)
    text = " ".join(RUNBOOK.split())
    assert "a random wait of up to 1 minute, doubling with each failure up to 10 minutes" in text


def test_thresholds_table_matches_the_recording_rules() -> None:
    values = {
        rule["record"]: float(re.fullmatch(r"vector\((.+)\)", rule["expr"]).group(1))  # type: ignore[union-attr]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
        if rule.get("record", "").startswith("zoom:threshold_")
    }
    rows = table_rows(r"`zoom:threshold_\w+`")
    assert set(rows) == set(values)
    for name, cells in rows.items():
        (default,) = re.findall(r"`([\d.]+)`", cells[1])
        assert float(default) == values[name], name


def test_sizing_examples() -> None:
    """The worked examples: 2 discovery calls plus ceil(people / 10) per meeting, 1,440
    cycles a day at 60 s."""
    rows = table_rows(r"\d+ meetings of \d+ people|one \d+-person webinar")
    assert len(rows) == 3
    for load, cells in rows.items():
        numbers = [int(n) for n in re.findall(r"\d+", load)] or [1]
        count, people = numbers if len(numbers) == 2 else [1, numbers[0]]
        per_cycle = 2 + count * math.ceil(people / 10)
        assert cells[1].endswith(f"= {per_cycle}") or cells[1] == str(per_cycle), load
        assert cells[2] == f"{per_cycle * 1440:,}", load
    assert "at 300 s: 9,216" in RUNBOOK and 32 * 86400 // 300 == 9216


def test_account_sizing_example() -> None:
    """Sizing accounts per replica: the example account's calls (2 discovery calls plus
    ceil(people / 10) per meeting), its calls a day at 60 s, the shortest interval each
    budget allows from the plans' caps, and the CPU arithmetic at 0.2 ms a participant."""
    text = " ".join(RUNBOOK.split())
    pro, business = PLANS["pro"], PLANS["business"]
    meetings = [8] * 4 + [25] * 2
    people = sum(meetings)
    X = "\N{MULTIPLICATION SIGN}"
    calls = 2 + sum(math.ceil(n / 10) for n in meetings)
    assert (people, calls) == (82, 12)
    assert (
        f"that is {people} participants and 2 + 4 {X} 1 + 2 {X} 3 = **{calls} calls per cycle**"
        in text
    )
    assert f"{calls} {X} 1,440 = **{calls * 1440:,} calls a day**" in text
    rows = table_rows(r"(Pro|Business and up), [\d,]+ \(.*\)")
    budgets = {
        "Pro, 15,000": pro.daily_cap // 2,
        "Pro, 30,000": pro.daily_cap,
        "Business and up, 30,000": business.daily_cap // 2,
        "Business and up, 60,000": business.daily_cap,
    }
    assert len(rows) == len(budgets)
    for first, cells in rows.items():
        (budget,) = [b for prefix, b in budgets.items() if first.startswith(prefix + " ")]
        assert cells[1] == f"{calls * 1440:,}", first
        assert cells[2].startswith("yes" if calls * 1440 <= budget else "no"), first
        assert cells[3] == f"{calls * 86400 / budget:.1f} s", first
    assert f"15,000 / 1,440 = {pro.daily_cap // 2 // 1440} calls a cycle" in text
    assert f"10 participants a page, Heavy, {pro.heavy_per_second:g}/s on Pro and" in text
    assert f"{business.heavy_per_second:g}/s on Business and up" in text
    cpu = people * 0.0002  # s a cycle
    assert f"{people} participants, {cpu * 1000:.1f} ms of CPU a cycle" in text
    assert f"30 / {cpu:.4f} = **{int(30 / cpu):,} accounts**" in text
    assert f"that is {15000 // people} accounts per replica" in text
    assert f"some {round(15000 // people * people * 34, -3):,.0f} participant series" in text


def help_text(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "exporter", *args, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_commands_in_the_runbook_exist() -> None:
    """Every flag of every `zoom-qos-exporter ...` command in the runbook is in --help."""
    main, probe = help_text(), help_text("probe")
    commands = re.findall(r"`zoom-qos-exporter ([^`]*)`", RUNBOOK)
    assert len(commands) >= 3
    for command in commands:
        before, _, after = command.partition("probe")
        for flag in re.findall(r"--[\w.-]+", before):
            assert flag in main, (command, flag)
        for flag in re.findall(r"--[\w.-]+", after):
            assert flag in probe, (command, flag)
        if "probe" in command:
            assert "--meeting" in after, f"probe needs --meeting: {command}"


def test_probe_needs_a_meeting_and_does_no_discovery() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "probe", "--demo"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 2 and "--meeting" in result.stderr
    assert "does no discovery" in " ".join(RUNBOOK.split())


def test_a_bad_config_file_exits_2_as_the_runbook_says(tmp_path: Path) -> None:
    """ZoomExporterConfigReloadFailed: `--config.file=<file> probe --meeting <id>` on a bad
    file exits with code 2 and names the setting."""
    bad = tmp_path / "config.yml"
    bad.write_text("poll_interval: 0\n")
    result = subprocess.run(
        [sys.executable, "-m", "exporter", f"--config.file={bad}", "probe", "--meeting", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2, result.stderr
    assert f"{bad}:1: poll_interval: Input should be greater than or equal to 1" in result.stderr
