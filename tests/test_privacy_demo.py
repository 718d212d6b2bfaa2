"""Personal data settings on the real demo exporter: what /metrics, the status page and the
logs at info level show, and what they never show."""

from __future__ import annotations

import html
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Exporter, http_get, start_exporter, stop_process, wait_for, wait_ready
from exporter.privacy import DEFAULT_PARTICIPANT_LABELS, PARTICIPANT_LABELS
from exporter.simulator.people import _FIRST, _LAST

KEY = "demo-pseudonym-key-0123456789abcdef"
# The simulator's people: "First Last", first.last@example.com, "First's Phone"/"... PC".
NAME = re.compile(rf"\b({'|'.join(_FIRST)}) ({'|'.join(_LAST)})\b")
EMAIL = re.compile(r"[\w.]+@example\.com")
PC_NAME = re.compile(rf"\b({'|'.join(_FIRST)})'s ")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
FIXED = {"account", "kind", "meeting_id", "participant_id"}
HEX = re.compile(r"[0-9a-f]{16}")


def info_series(exporter: Exporter) -> list[dict[str, str]]:
    lines = [
        line
        for line in exporter.metrics().splitlines()
        if line.startswith("zoom_participant_info{")
    ]
    return [dict(LABEL.findall(line)) for line in lines]


def hosts(exporter: Exporter) -> list[str]:
    text = exporter.metrics()
    return [
        dict(LABEL.findall(line))["host"]
        for line in text.splitlines()
        if line.startswith("zoom_meeting_info{")
    ]


def status_page(exporter: Exporter) -> str:
    status, _, body = http_get(exporter.url + "/")
    assert status == 200
    return body.decode()


def shown_names(page: str) -> list[str]:
    return [html.unescape(n) for n in re.findall(r'<td class="name">(.*?)</td>', page)]


def info_log(exporter: Exporter) -> str:
    text = exporter.log.read_text()
    assert "level=debug" not in text  # the test is about info level
    assert "level=info" in text
    return text


def settled(exporter: Exporter, named: bool = True) -> list[dict[str, str]]:
    """The info series once participants (some of them named, if `named`) are exported."""

    def probe() -> list[dict[str, str]] | None:
        series = info_series(exporter)
        if len(series) < 5:
            return None
        if named and not any(s.get("user_name") for s in series):
            return None
        return series

    return wait_for(probe, timeout=60, what="participants on /metrics")


@pytest.fixture(scope="module")
def exporters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Exporter]]:
    """Four demo exporters, started together: default, every label, pseudonyms, no labels."""
    tmp = tmp_path_factory.mktemp("privacy")
    secrets = tmp / "secrets"
    secrets.mkdir()
    (secrets / "zoom_exporter_pseudonymize_key").write_text(KEY + "\n")
    every = ",".join(PARTICIPANT_LABELS)
    envs: dict[str, tuple[dict[str, str], tuple[str, ...]]] = {
        "default": ({}, ()),
        "every": ({"ZOOM_EXPORTER_PARTICIPANT_LABELS": every}, ()),
        "pseudonyms": (
            {"ZOOM_EXPORTER_PARTICIPANT_LABELS": every, "ZOOM_EXPORTER_PSEUDONYMIZE": "true"},
            ("--secrets.dir", str(secrets)),
        ),
        "none": ({"ZOOM_EXPORTER_PARTICIPANT_LABELS": ""}, ()),
    }
    started = {
        name: start_exporter(tmp, "--demo", "--poll.interval", "1", *args, env=env)
        for name, (env, args) in envs.items()
    }
    try:
        for exporter in started.values():
            wait_ready(exporter, timeout=60)
        yield started
    finally:
        for exporter in started.values():
            stop_process(exporter.process)


def test_default_exports_names_and_technical_fields_only(exporters: dict[str, Exporter]) -> None:
    exporter = exporters["default"]
    series = settled(exporter)
    for labels in series:
        assert set(labels) == FIXED | set(DEFAULT_PARTICIPANT_LABELS)
    assert any(NAME.fullmatch(s["user_name"]) for s in series)
    text = exporter.metrics()
    assert not EMAIL.search(text)
    assert not PC_NAME.search(text)
    assert "corp.example.com" not in text
    page = status_page(exporter)
    assert any(NAME.fullmatch(name) for name in shown_names(page))
    assert not EMAIL.search(page)
    # location is opt-in: the status page's device column leaves it out too
    assert not re.search(r"\((US|GB|DE|JP|CA|IN)\)", page)
    log = info_log(exporter)
    assert not NAME.search(log) and not EMAIL.search(log)


def test_every_label_but_never_the_machine_ids(exporters: dict[str, Exporter]) -> None:
    exporter = exporters["every"]
    series = settled(exporter)
    for labels in series:
        assert set(labels) == FIXED | set(PARTICIPANT_LABELS)
    assert any(EMAIL.fullmatch(s["email"]) for s in series)
    assert any(s["ip_address"] for s in series)
    assert any(PC_NAME.match(s["pc_name"]) for s in series)
    assert any(s["domain"] == "corp.example.com" for s in series)
    text = exporter.metrics()
    assert "mac_addr" not in text and "harddisk_id" not in text
    assert not re.search(r"([0-9A-F]{2}:){5}[0-9A-F]{2}", text)  # no MAC address anywhere
    page = status_page(exporter)
    assert re.search(r"\((US|GB|DE|JP|CA|IN)\)", page)  # the location, now allowed
    log = info_log(exporter)
    assert not NAME.search(log) and not EMAIL.search(log) and not PC_NAME.search(log)


def test_pseudonyms_everywhere(exporters: dict[str, Exporter]) -> None:
    exporter = exporters["pseudonyms"]
    series = settled(exporter)
    names = {s["user_name"] for s in series} - {""}
    emails = {s["email"] for s in series} - {""}
    assert names and emails
    assert all(HEX.fullmatch(value) for value in names | emails)
    assert all(HEX.fullmatch(host) for host in hosts(exporter))
    assert any(PC_NAME.match(s["pc_name"]) for s in series)  # opt-in, and not a pseudonym field
    text = exporter.metrics()
    assert not NAME.search(text) and not EMAIL.search(text)
    assert "Seed Sample" not in text and "Boardroom" not in text
    page = status_page(exporter)
    assert not NAME.search(page) and not EMAIL.search(page)
    shown = shown_names(page)
    assert set(shown) & names  # the pseudonyms are what the page shows
    assert all(HEX.fullmatch(name) or name.isdigit() for name in shown)
    log = info_log(exporter)
    assert not NAME.search(log) and not EMAIL.search(log) and KEY not in log


def test_no_descriptive_labels(exporters: dict[str, Exporter]) -> None:
    exporter = exporters["none"]
    series = settled(exporter, named=False)
    assert all(set(labels) == FIXED for labels in series)
    assert all(host == "" for host in hosts(exporter))
    page = status_page(exporter)
    shown = shown_names(page)
    assert shown and all(name.isdigit() for name in shown)  # participant ids instead
    assert not NAME.search(page) and not EMAIL.search(page)


def test_reload_switches_pseudonyms_on(tmp_path: Path) -> None:
    """SIGHUP applies new privacy settings from the next cycle; earlier readings are dropped."""
    config = tmp_path / "config.yml"
    config.write_text("participant_labels: [user_name, email]\n")
    exporter = start_exporter(
        tmp_path, "--demo", "--poll.interval", "1", "--config.file", str(config)
    )
    try:
        wait_ready(exporter, timeout=60)
        series = settled(exporter)
        assert any(NAME.fullmatch(s["user_name"]) for s in series)
        config.write_text(
            f"participant_labels: [user_name, email]\npseudonymize: true\npseudonymize_key: {KEY}\n"
        )
        exporter.process.send_signal(signal.SIGHUP)

        def pseudonymous() -> bool:
            values = {v for s in info_series(exporter) for v in (s["user_name"], s["email"])}
            return bool(values - {""}) and all(HEX.fullmatch(v) for v in values - {""})

        wait_for(pseudonymous, timeout=60, what="pseudonyms after the reload")
        assert not NAME.search(exporter.metrics())
        assert not NAME.search(status_page(exporter))
        assert "configuration reloaded" in exporter.log.read_text()
        assert KEY not in exporter.log.read_text()
    finally:
        stop_process(exporter.process)
