"""Hostile or careless configuration: secrets files that are not UTF-8, secrets anyone can read
or kept in the YAML file, a password that is not a bcrypt hash, credentials sent without TLS."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, http_get, start_exporter, stop_process, wait_for, wait_ready
from exporter.settings import load_settings, settings_warnings
from exporter.web.webconfig import load_web_config

NOT_UTF8 = b"\xff\xfe secret \xc3\x28"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOOM_EXPORTER_")}
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def test_a_secrets_file_that_is_not_utf8_exits_2_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "zoom_exporter_client_secret").write_bytes(NOT_UTF8)
    result = run_cli("--demo", "--secrets.dir", str(tmp_path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "zoom-qos-exporter: error: --secrets.dir: zoom_exporter_client_secret is not UTF-8 text"
    ]


def test_a_secrets_file_that_turns_bad_is_a_failed_reload_on_sighup(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    secret = secrets / "zoom_exporter_client_secret"
    secret.write_text("fine")
    secret.chmod(0o600)
    exporter = start_exporter(
        tmp_path, "--demo", "--poll.interval", "2", "--secrets.dir", str(secrets)
    )
    try:
        wait_ready(exporter)
        secret.write_bytes(NOT_UTF8)
        exporter.process.send_signal(signal.SIGHUP)
        wait_for(
            lambda: "reload failed" in exporter.log.read_text(), timeout=20, what="failed reload"
        )
        status, _, body = http_get(exporter.url + "/metrics")
        assert status == 200
        assert b"zoom_exporter_config_last_reload_successful 0.0" in body
        assert exporter.process.poll() is None  # still serving
    finally:
        assert stop_process(exporter.process) == 0
    log = exporter.log.read_text()
    assert "zoom_exporter_client_secret is not UTF-8 text" in log
    assert "Traceback" not in log


def test_careless_settings_are_warned_about_without_the_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("ZOOM_EXPORTER_"):
            monkeypatch.delenv(name)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "zoom_exporter_client_secret").write_text("hunter2-in-a-file")
    (secrets / "zoom_exporter_client_secret").chmod(0o644)
    config = tmp_path / "config.yml"
    config.write_text(
        json.dumps(
            {
                "account_id": "a",
                "client_id": "c",
                "pseudonymize_key": "hunter2-in-the-yaml-0123456789abcdef",
                "oauth_url": "http://zoom.example.com/oauth/token",
            }
        )
    )
    config.chmod(0o644)
    settings = load_settings(config_file=config, secrets_dir=secrets)
    warnings = settings_warnings(settings, config_file=config, secrets_dir=secrets)
    text = "\n".join(warnings)
    assert "zoom_exporter_client_secret is readable by every user" in text
    assert "holds pseudonymize_key" in text
    assert "holds a secret and is readable by every user" in text
    assert "ZOOM_EXPORTER_OAUTH_URL is http://" in text
    assert "hunter2" not in text
    (secrets / "zoom_exporter_client_secret").chmod(0o600)
    config.write_text(json.dumps({"account_id": "a", "client_id": "c"}))
    settings = load_settings(config_file=config, secrets_dir=secrets)
    assert settings_warnings(settings, config_file=config, secrets_dir=secrets) == []


def test_a_basic_auth_value_that_is_not_a_bcrypt_hash_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "web.yml"
    path.write_text(json.dumps({"basic_auth_users": {"alice": "plain-password"}}))
    with caplog.at_level(logging.WARNING):
        load_web_config(path)
    assert "not a bcrypt hash" in caplog.text and "plain-password" not in caplog.text
