"""Grafana dashboards: structure, thresholds, provisioning, and every query against live data.

The live test runs every panel target and every variable query of every dashboard against a
real Prometheus that scrapes `python -m exporter --demo` and loads deploy/prometheus/*.rules.yml.
A query that returns nothing fails, except the explicit allowlist below.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import (
    ROOT,
    RULE_FILES,
    Exporter,
    Prometheus,
    http_get,
    run_prometheus,
    start_exporter,
    start_prometheus,
    stop_process,
    wait_for,
    wait_ready,
)
from exporter.web import status_page

DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
PROVISIONING = ROOT / "grafana" / "provisioning"
RULES = ROOT / "deploy" / "prometheus" / "zoom.rules.yml"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
EXPECTED_UIDS = {
    "zoom-overview.json": "zoom-qos-overview",
    "zoom-meeting.json": "zoom-qos-meeting",
    "zoom-participant.json": "zoom-qos-participant",
    "zoom-exporter-health.json": "zoom-qos-exporter",
}
# Grafana's built-in variables and the values the live test gives them.
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m"}


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows keep their panels inside


def query_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    return (p for p in all_panels(dashboard) if p["type"] != "row")


def variable_query(variable: dict[str, Any]) -> str:
    query = variable["query"]
    return str(query["query"] if isinstance(query, dict) else query)


def exprs(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, expr) of every target."""
    for panel in query_panels(dashboard):
        for target in panel["targets"]:
            yield panel["title"], target["expr"]


def rule_thresholds() -> dict[str, float]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    out = {}
    for group in groups:
        for rule in group["rules"]:
            name = rule.get("record", "")
            match = re.fullmatch(r"vector\(([\d.]+)\)", str(rule.get("expr", "")).strip())
            if name.startswith("zoom:threshold_") and match:
                out[name.removeprefix("zoom:threshold_")] = float(match.group(1))
    return out


def step_values(thresholds: dict[str, Any]) -> dict[float, str]:
    return {s["value"]: s["color"] for s in thresholds["steps"] if s["value"] is not None}


# ---------------------------------------------------------------------------------------------
# Structure
# ---------------------------------------------------------------------------------------------


def test_the_four_dashboards_exist_with_stable_uids() -> None:
    assert {p.name: load(p)["uid"] for p in DASHBOARDS} == EXPECTED_UIDS
    titles = [load(p)["title"] for p in DASHBOARDS]
    assert len(set(titles)) == len(titles)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_structure(path: Path) -> None:
    dashboard = load(path)
    assert dashboard["id"] is None, "exported dashboards must not pin a database id"
    ids = [p["id"] for p in all_panels(dashboard)]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {path.name}"
    for panel in query_panels(dashboard):
        where = f"{path.name}: {panel['title']!r}"
        assert panel["datasource"] == DATASOURCE, where
        assert panel["targets"], where
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, where
            assert target["expr"].strip(), where
        assert panel["fieldConfig"]["defaults"].get("unit"), f"no unit: {where}"
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, where
    for panel in all_panels(dashboard):
        ref_ids = [t["refId"] for t in panel.get("targets", [])]
        assert len(ref_ids) == len(set(ref_ids))


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_variables(path: Path) -> None:
    dashboard = load(path)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    ds = variables["datasource"]
    assert (ds["type"], ds["query"]) == ("datasource", "prometheus")
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, variable["name"]
            assert variable_query(variable).startswith("label_values("), variable["name"]
    expected = {
        "zoom-overview.json": {"account", "kind"},
        "zoom-meeting.json": {"account", "kind", "meeting", "media"},
        "zoom-participant.json": {"account", "kind", "meeting", "participant", "media"},
        "zoom-exporter-health.json": {"account", "job", "instance"},
    }[path.name]
    assert expected <= set(variables)
    # The Zoom account: multi-value, All by default, and All matches every series, those of
    # an exporter without the `account` label included.
    account = variables["account"]
    assert variable_query(account) == "label_values(zoom_up, account)"
    assert account["multi"] and account["includeAll"] and account["allValue"] == ".*"
    assert account["current"]["value"] == ["$__all"]
    for variable in variables.values():
        if variable["type"] == "query" and variable["name"] != "account":
            assert 'account=~"$account"' in variable_query(variable), variable["name"]
    # Every $variable used anywhere is defined (or a Grafana built-in).
    text = json.dumps(dashboard)
    used = set(re.findall(r"\$\{?(\w+)", text)) - {"datasource"}
    used = {u for u in used if not u.startswith("__")}
    assert used <= set(variables), used - set(variables)
    # Query variables reference only variables defined before them.
    seen: set[str] = set()
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            refs = set(re.findall(r"\$(\w+)", variable_query(variable)))
            assert refs <= seen, (variable["name"], refs - seen)
        seen.add(variable["name"])


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_no_hard_coded_job_or_instance(path: Path) -> None:
    queries = [e for _, e in exprs(load(path))]
    queries += [variable_query(v) for v in load(path)["templating"]["list"] if v["type"] == "query"]
    for expr in queries:
        assert not re.search(r"\b(job|instance)\s*(=|!=|=~|!~)\s*\"(?!\$)", expr), expr


# Series of the exporter process as a whole, not of one Zoom account: no `account` label.
PROCESS_WIDE = {
    "zoom_exporter_build_info",
    "zoom_exporter_asyncio_tasks",
    "zoom_exporter_config_last_reload_successful",
    "zoom_exporter_config_last_reload_success_timestamp_seconds",
}
SELECTOR = re.compile(
    r'(?<![\w:"$])(zoom_[a-z_]+|account_kind_meeting_id\w*:[\w:]+)(\{[^}]*\})?(?![\w(])'
)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_query_follows_the_account_variable(path: Path) -> None:
    """Every selector of a Zoom series is filtered by $account; every aggregation or join over
    meetings or participants keeps `account` (ids are unique within a Zoom account only); a
    legend names the account wherever a panel shows series of several accounts."""
    for title, expr in exprs(load(path)):
        for name, braces in SELECTOR.findall(expr):
            if name not in PROCESS_WIDE:
                assert 'account=~"$account"' in braces, f"{path.name}: {title!r}: {name}"
        for labels in re.findall(r"\b(?:by|on) \(([^()]*)\)", expr):
            if "meeting_id" in labels or "instance" in labels:
                assert "account" in labels, f"{path.name}: {title!r}: ({labels})"
    for panel in query_panels(load(path)):
        if panel["type"] not in {"timeseries", "state-timeline", "stat"}:
            continue
        for target in panel["targets"]:
            grouped = re.search(r"\b(?:by|on) \([^()]*\baccount\b", target["expr"])
            if grouped and "{{" in target.get("legendFormat", ""):
                assert "{{account}}" in target["legendFormat"], f"{path.name}: {panel['title']!r}"


def panel_steps(panel: dict[str, Any]) -> list[dict[float, str]]:
    """Threshold steps of a panel's defaults and of its per-field overrides."""
    field_config = panel["fieldConfig"]
    out = [step_values(field_config["defaults"]["thresholds"])]
    for override in field_config["overrides"]:
        for prop in override["properties"]:
            if prop["id"] == "thresholds":
                out.append(step_values(prop["value"]))
    return out


def test_thresholds_follow_zoom_guidance_and_the_rules() -> None:
    rules = rule_thresholds()
    assert rules["latency_seconds"] == 0.150 == status_page.LATENCY.poor
    assert rules["jitter_seconds"] == 0.040 == status_page.JITTER.poor
    assert rules["packet_loss_ratio"] == 0.02 == status_page.LOSS.poor
    assert status_page.bitrate_band(8999)[0] == "very bad"
    metrics = {
        "zoom_participant_latency_seconds": rules["latency_seconds"],
        "zoom_participant_jitter_seconds": rules["jitter_seconds"],
        "zoom_participant_packet_loss_ratio": rules["packet_loss_ratio"],
    }
    checked = 0
    for path in DASHBOARDS:
        for panel in query_panels(load(path)):
            text = " ".join(t["expr"] for t in panel["targets"])
            steps = panel_steps(panel)
            for metric, limit in metrics.items():
                if metric in text:
                    where = f"{path.name}: {panel['title']} ({metric})"
                    assert any(s.get(limit) == "red" for s in steps), where
                    checked += 1
            if (
                "zoom_participant_bitrate_bytes_per_second" in text
                and panel["type"] == "timeseries"
            ):
                assert panel["fieldConfig"]["defaults"]["unit"] == "Bps", panel["title"]
                # Zoom's bands 72/128/180/320/640 kbps in bytes per second.
                assert set(steps[0]) == {9000, 16000, 22500, 40000, 80000}, panel["title"]
                checked += 1
    assert checked >= 20


def test_worst_participant_tables_show_user_names() -> None:
    overview = load(ROOT / "grafana" / "dashboards" / "zoom-overview.json")
    tables = [p for p in query_panels(overview) if p["title"].startswith("Worst participants by")]
    assert {p["title"] for p in tables} == {
        "Worst participants by packet loss",
        "Worst participants by jitter",
        "Worst participants by latency",
    }
    for panel in tables:
        (target,) = panel["targets"]
        assert target["expr"].startswith("topk(10,")
        assert "group_left (user_name)" in target["expr"]
        assert "zoom_participant_info" in target["expr"]
        assert target["instant"] and target["format"] == "table"


def test_panels_do_not_overlap() -> None:
    for path in DASHBOARDS:
        taken: dict[tuple[int, int], str] = {}
        for panel in load(path)["panels"]:  # a collapsed row's panels lay out when expanded
            grid = panel["gridPos"]
            for x in range(grid["x"], grid["x"] + grid["w"]):
                for y in range(grid["y"], grid["y"] + grid["h"]):
                    other = taken.setdefault((x, y), panel["title"])
                    assert other == panel["title"], f"{path.name}: {other!r} / {panel['title']!r}"


HEALTH = ROOT / "grafana" / "dashboards" / "zoom-exporter-health.json"
# The exporter's states (zoom_exporter_state{state}), and its rate-limit and planner metrics.
EXPORTER_STATES = {
    "ok",
    "degraded",
    "unreachable",
    "auth_failed",
    "forbidden",
    "token_unavailable",
    "daily_limit",
    "budget_exhausted",
}
HEALTH_METRICS = {
    "zoom_exporter_state",
    "zoom_exporter_poll_interval_seconds",
    "zoom_exporter_daily_budget",
    "zoom_exporter_daily_budget_remaining",
    "zoom_exporter_daily_budget_reset_timestamp_seconds",
    "zoom_exporter_last_cycle_requests",
    "zoom_exporter_last_cycle_planned_requests",
    "zoom_exporter_meetings_deferred",
    "zoom_exporter_paused_until_timestamp_seconds",
    "zoom_exporter_config_last_reload_successful",
    "zoom_exporter_config_last_reload_success_timestamp_seconds",
    "zoom_exporter_asyncio_tasks",
    "zoom_api_rate_limited_total",
    "zoom_api_retries_total",
}


def test_exporter_health_shows_the_rate_limit_metrics() -> None:
    used = {m for _, expr in exprs(load(HEALTH)) for m in re.findall(r"\b[a-z_:]+(?=\{)", expr)}
    assert not HEALTH_METRICS - used, HEALTH_METRICS - used


def test_exporter_state_panels_map_every_state() -> None:
    """The state panels turn zoom_exporter_state into one number per exporter; the value
    mappings must name exactly the state behind each number."""
    panels = [
        p
        for p in query_panels(load(HEALTH))
        if any("zoom_exporter_state" in t["expr"] for t in p["targets"])
    ]
    assert {p["type"] for p in panels} == {"stat", "state-timeline"}
    for panel in panels:
        (target,) = panel["targets"]
        codes = {
            int(code): state
            for state, code in re.findall(
                r'state="(\w+)"\}\s*==\s*1\)\s*\*\s*(\d+)', target["expr"]
            )
        }
        assert set(codes.values()) == EXPORTER_STATES, panel["title"]
        (mapping,) = panel["fieldConfig"]["defaults"]["mappings"]
        texts = {int(v): o["text"].replace(" ", "_") for v, o in mapping["options"].items()}
        assert texts == codes, panel["title"]


def test_sparse_counters_fall_back_to_zero() -> None:
    """zoom_api_rate_limited_total and zoom_api_retries_total have no series until the first
    429 or retry: their panels show 0 instead of "No data" while the exporter is up."""
    for title, expr in exprs(load(HEALTH)):
        if re.search(r"zoom_api_(rate_limited|retries)_total", expr):
            assert re.search(r"\bor on \(\)\s*label_replace\(0 \* max\(zoom_up\{", expr), title


def test_provisioning() -> None:
    (datasource_file,) = (PROVISIONING / "datasources").glob("*.yml")
    datasources = yaml.safe_load(datasource_file.read_text())
    assert datasources["apiVersion"] == 1
    assert [d["type"] for d in datasources["datasources"]] == ["prometheus"]
    (provider_file,) = (PROVISIONING / "dashboards").glob("*.yml")
    providers = yaml.safe_load(provider_file.read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/var/lib/grafana/dashboards")
    assert "grafana/dashboards" in provider_file.read_text()  # the comment says what to mount


# ---------------------------------------------------------------------------------------------
# Every query against the live demo
# ---------------------------------------------------------------------------------------------


def label_values(prom: Prometheus, query: str) -> tuple[str, list[str]]:
    """What Grafana's `label_values([selector,] label)` lists: (label, its values)."""
    match = re.fullmatch(r"label_values\((?:(.*),\s*)?(\w+)\)", query.strip())
    assert match, f"unsupported variable query {query!r}"
    selector, label = match.groups()
    params = {"start": str(time.time() - 300)}
    if selector:
        params["match[]"] = selector
    status, _, body = http_get(
        f"{prom.url}/api/v1/label/{label}/values?{urllib.parse.urlencode(params)}"
    )
    payload = json.loads(body)
    assert status == 200 and payload["status"] == "success", payload
    return label, sorted(payload["data"])


def choose(prom: Prometheus, label: str, values: list[str], chosen: dict[str, str]) -> str:
    """The value whose series cover the most metric names (then series): the richest demo
    participant or meeting, so that every panel has something to show."""

    def score(value: str) -> tuple[int, int]:
        matchers = ", ".join(f'{k}="{v}"' for k, v in {**chosen, label: value}.items())
        rows = prom.query(f'count by (__name__) ({{__name__=~"zoom_.+", {matchers}}})')
        return len(rows), sum(int(float(r["value"][1])) for r in rows)

    return max(values, key=score)


def substitute(expr: str, values: dict[str, str]) -> str:
    def repl(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return values[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", repl, expr)


# Series that come from the participant series: with ZOOM_EXPORTER_PARTICIPANT_SERIES=none
# they are empty, and the panels that read them say so in their description.
PARTICIPANT_SERIES = re.compile(
    r"(?<![:\w])zoom_participant_\w+|kind_meeting_id_participant_id\w*:|:zoom_participant_\w+:avg"
)


@pytest.fixture(scope="module", params=["all", "worst:2", "none"])
def moded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Prometheus]]:
    """A real Prometheus scraping the demo with each ZOOM_EXPORTER_PARTICIPANT_SERIES; `all`
    is the session's shared pair."""
    mode = request.param
    if mode == "all":
        yield mode, request.getfixturevalue("prometheus")
        return
    tmp = tmp_path_factory.mktemp("moded")
    exporter = start_exporter(
        tmp, "--demo", "--poll.interval", "2", env={"ZOOM_EXPORTER_PARTICIPANT_SERIES": mode}
    )
    try:
        wait_ready(exporter)
        prom = start_prometheus(tmp, [exporter.url.removeprefix("http://")], RULE_FILES)
        try:
            yield mode, prom
        finally:
            stop_process(prom.process)
    finally:
        stop_process(exporter.process)


def test_every_dashboard_query_returns_data(moded: tuple[str, Prometheus]) -> None:
    """Every panel returns data in every mode, except, with `none`, those that need the
    participant series (and the participant dashboard, whose participants are all gone but
    for the panel that says so)."""
    mode, prometheus = moded
    started = time.monotonic()
    # Rules and rates need a few scrapes and evaluations.
    prometheus.wait_query("account_kind_meeting_id:zoom_participants_poor:ratio", timeout=60)
    prometheus.wait_query("rate(zoom_api_requests_total[1m]) > 0", timeout=60)
    without = mode == "none"

    proven: list[str] = []
    skipped: list[str] = []
    for path in DASHBOARDS:
        dashboard = load(path)
        if without and path.name == "zoom-participant.json":
            # No participant at all: the panel that says so must show it.
            (notice,) = (p for p in query_panels(dashboard) if "left out" in p["title"])
            expr = substitute(notice["targets"][0]["expr"], {**BUILTINS, "account": ".*"})
            rows = prometheus.wait_query(expr, timeout=30)
            dropped = {r["metric"]["reason"]: float(r["value"][1]) for r in rows}
            assert dropped["participants"] > 0, dropped
            proven.append(f"{path.name}: {notice['title']}")
            continue
        # With worst:N the exported participants change as their quality does: one chosen for
        # the participant dashboard may leave the worst N before every panel is read. Choose
        # again then (at most twice), rather than read a participant that is not exported.
        churns = mode.startswith("worst") and path.name == "zoom-participant.json"
        for attempt in range(3 if churns else 1):
            try:
                found_here = prove_dashboard(prometheus, path, dashboard, mode, started)
            except AssertionError:
                if attempt == (2 if churns else 0):
                    raise
                continue
            proven += found_here[0]
            skipped += found_here[1]
            break
    print(
        f"\n{mode}: {len(proven)} dashboard queries returned data, {len(skipped)} need participants"
    )
    assert len(proven) >= (50 if without else 80)


def prove_dashboard(
    prometheus: Prometheus,
    path: Path,
    dashboard: dict[str, Any],
    mode: str,
    started: float,
    account: str | None = None,
) -> tuple[list[str], list[str]]:
    """Choose the richest value of each variable, then wait until every panel returns data;
    return the panels (and variables) proven, and those that need participant series. With
    `account`, $account is that one account, and no panel may show another's series."""
    without = mode == "none"
    proven: list[str] = []
    skipped: list[str] = []
    values: dict[str, str] = dict(BUILTINS)
    labels: dict[str, str] = {}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = substitute(variable_query(variable), values)
        label, found = label_values(prometheus, query)
        if account is not None and variable["name"] == "account":
            (account,) = [v for v in found if v.split("/")[0] == account][:1] or [account]
            assert account in found, (path.name, found)
            labels[label] = account
            values["account"] = re.escape(account).replace("\\", "\\\\")
            continue
        if variable.get("includeAll") and variable["current"].get("value") == ["$__all"]:
            # All by default ($account): test what a newcomer sees, Grafana's All value. An
            # exporter from before accounts exports no `account` label, so no values: All
            # (.*) still matches its series.
            labelled = prometheus.query(f'count({{__name__=~"zoom_.+", {label}!=""}})')
            assert found or not labelled, f"{path.name}: variable {variable['name']} ({query})"
            proven.append(f"{path.name}: ${variable['name']} (All)")
            values[variable["name"]] = variable["allValue"]
            continue
        assert found, f"{path.name}: variable {variable['name']} ({query}) has no values"
        proven.append(f"{path.name}: ${variable['name']}")
        value = choose(prometheus, label, found, labels)
        labels[label] = value
        # Grafana regex-escapes values for =~ inside a PromQL string (so backslashes double).
        values[variable["name"]] = re.escape(value).replace("\\", "\\\\")
    for panel in query_panels(dashboard):
        title = panel["title"]
        for target in panel["targets"]:
            concrete = substitute(target["expr"], values)
            prometheus.query(concrete)  # a syntax error fails here, at once
            if without and PARTICIPANT_SERIES.search(target["expr"]):
                assert "Needs participant series" in panel["description"], title
                skipped.append(f"{path.name}: {title}")
                continue
            try:
                rows = prometheus.wait_query(
                    concrete, timeout=max(5.0, 60 - (time.monotonic() - started))
                )
            except AssertionError:
                raise AssertionError(
                    f"{path.name}: panel {title!r} returns no data ({mode}):\n{concrete}"
                ) from None
            if account is not None:
                # A process-wide series (build info, say) carries only its target's
                # account: "acme" beside "acme/demo-eu".
                mine = {account, account.split("/")[0]}
                others = {r["metric"].get("account", account) for r in rows} - mine
                assert not others, f"{path.name}: panel {title!r} shows {others}:\n{concrete}"
            proven.append(f"{path.name}: {title}")
    return proven, skipped


# ---------------------------------------------------------------------------------------------
# Two Zoom accounts
# ---------------------------------------------------------------------------------------------

ACCOUNTS = ("acme", "globex")


@pytest.fixture(scope="module")
def two_accounts(
    demo_exporter: Exporter, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    """A real Prometheus with our rules that sees two Zoom accounts with the very same meeting
    and participant ids: the demo exporter scraped twice, each scrape job labelling its target
    with an `account`. An exporter that exports `account` itself (its demo's accounts) gets
    `acme/<its account>`, so that every account stays apart."""
    tmp = tmp_path_factory.mktemp("two-accounts")
    target = demo_exporter.url.removeprefix("http://")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in RULE_FILES],
        "scrape_configs": [
            {
                "job_name": f"zoom-{name}",
                "static_configs": [{"targets": [target], "labels": {"account": name}}],
                "metric_relabel_configs": [
                    {
                        "source_labels": ["account", "exported_account"],
                        "separator": "/",
                        "regex": "(.+)/(.+)",
                        "target_label": "account",
                        "replacement": "$1/$2",
                    },
                    {"action": "labeldrop", "regex": "exported_account"},
                ],
            }
            for name in ACCOUNTS
        ],
    }
    prometheus = run_prometheus(tmp, config)
    try:
        yield prometheus
    finally:
        stop_process(prometheus.process)


def test_two_accounts_with_the_same_ids_do_not_mix(two_accounts: Prometheus) -> None:
    """The recording rules keep the accounts apart although their meeting and participant ids
    are the same (a join without `account` would fail as many-to-many), the alerts are
    pending for each account, and every dashboard returns data with All accounts and with
    one, showing nothing of the other then."""
    started = time.monotonic()

    def both(expr: str) -> bool:
        found = {r["metric"].get("account", "") for r in two_accounts.query(expr)}
        return {a.split("/")[0] for a in found} == set(ACCOUNTS)

    for expr in (
        "count by (account) (account_kind_meeting_id:zoom_participants_poor:ratio)",
        "count by (account) (account_kind_meeting_id_participant_id:zoom_participant_poor:bool)",
        'count by (account) (ALERTS{alertname=~"ZoomParticipantPoor(Audio|Video)"})',
    ):
        wait_for(lambda e=expr: both(e), timeout=60, interval=0.5, what=f"{expr}: both accounts")
    two_accounts.wait_query("rate(zoom_api_requests_total[1m]) > 0", timeout=60)
    proven: list[str] = []
    for path in DASHBOARDS:
        for account in (None, "acme"):
            churns = path.name == "zoom-participant.json"
            for attempt in range(3 if churns else 1):
                try:
                    found, _ = prove_dashboard(
                        two_accounts, path, load(path), "all", started, account=account
                    )
                except AssertionError:
                    if attempt == (2 if churns else 0):
                        raise
                    continue
                proven += found
                break
    assert len(proven) >= 160
