"""Settings from environment, YAML, secrets files and flags; clear errors that name the setting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ENV_CREDENTIALS, clear_exporter_env
from exporter.privacy import DEFAULT_PARTICIPANT_LABELS
from exporter.settings import SettingsError, load_settings

CREDS = ENV_CREDENTIALS


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_exporter_env(monkeypatch)


def test_defaults_with_demo() -> None:
    settings = load_settings({"demo": True})
    assert settings.api_url == "https://api.zoom.us/v2"
    assert settings.oauth_url == "https://zoom.us/oauth/token"
    assert settings.listen == ("0.0.0.0", 9924)
    assert settings.poll_interval == 60
    assert settings.discovery is True
    assert settings.meeting_ids == []


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in CREDS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("ZOOM_EXPORTER_MEETING_IDS", "123, 456,,/abc//def==")
    monkeypatch.setenv("ZOOM_EXPORTER_WEBINAR_IDS", "789")
    monkeypatch.setenv("ZOOM_EXPORTER_POLL_INTERVAL", "2.5")
    monkeypatch.setenv("ZOOM_EXPORTER_DISCOVERY", "false")
    settings = load_settings()
    assert settings.meeting_ids == ["123", "456", "/abc//def=="]
    assert settings.webinar_ids == ["789"]
    assert settings.poll_interval == 2.5
    assert settings.discovery is False
    assert settings.client_secret is not None
    assert settings.client_secret.get_secret_value() == "top-secret-value"
    assert "top-secret-value" not in repr(settings)


def test_yaml_file_and_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.yml"
    config.write_text(
        "account_id: from-file\nclient_id: cid\nclient_secret: s\npoll_interval: 30\n"
        "meeting_ids: [111, 222]\n"
    )
    monkeypatch.setenv("ZOOM_EXPORTER_POLL_INTERVAL", "45")
    settings = load_settings({"listen_address": "127.0.0.1:1234"}, config_file=config)
    assert settings.account_id == "from-file"
    assert settings.poll_interval == 45  # environment beats the file
    assert settings.meeting_ids == ["111", "222"]
    assert settings.listen == ("127.0.0.1", 1234)
    flags = load_settings({"poll_interval": 5}, config_file=config)
    assert flags.poll_interval == 5  # flags beat the environment


def test_secrets_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "zoom_exporter_client_secret").write_text("from-a-file")
    monkeypatch.setenv("ZOOM_EXPORTER_ACCOUNT_ID", "a")
    monkeypatch.setenv("ZOOM_EXPORTER_CLIENT_ID", "c")
    settings = load_settings(secrets_dir=tmp_path)
    assert settings.client_secret is not None
    assert settings.client_secret.get_secret_value() == "from-a-file"


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"poll_interval": 0.5}, "ZOOM_EXPORTER_POLL_INTERVAL"),
        ({"poll_interval": "soon"}, "ZOOM_EXPORTER_POLL_INTERVAL"),
        ({"listen_address": "nope"}, "ZOOM_EXPORTER_LISTEN_ADDRESS"),
        ({"listen_address": "1.2.3.4:99999"}, "ZOOM_EXPORTER_LISTEN_ADDRESS"),
        ({"api_url": "ftp://x"}, "ZOOM_EXPORTER_API_URL"),
        ({"discovery": "perhaps"}, "ZOOM_EXPORTER_DISCOVERY"),
    ],
)
def test_invalid_values_name_the_setting(overrides: dict[str, object], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        load_settings({"demo": True, **overrides})


def test_missing_credentials_mention_demo() -> None:
    with pytest.raises(SettingsError, match="--demo") as caught:
        load_settings()
    assert "ZOOM_EXPORTER_CLIENT_SECRET" in str(caught.value)


def test_bad_yaml_never_echoes_secrets(tmp_path: Path) -> None:
    config = tmp_path / "bad.yml"
    config.write_text('client_secret: "unterminated-secret-xyz\n  - : [\n')
    with pytest.raises(SettingsError, match="invalid YAML") as caught:
        load_settings({"demo": True}, config_file=config)
    assert "secret-xyz" not in str(caught.value)
    config.write_text("- a list\n")
    with pytest.raises(SettingsError, match="mapping"):
        load_settings({"demo": True}, config_file=config)
    with pytest.raises(SettingsError, match="not a readable file"):
        load_settings({"demo": True}, config_file=tmp_path / "missing.yml")


def test_unknown_key_in_file(tmp_path: Path) -> None:
    config = tmp_path / "typo.yml"
    config.write_text("pol_interval: 5\n")
    with pytest.raises(SettingsError, match="unknown setting"):
        load_settings({"demo": True}, config_file=config)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith("ZOOM_EXPORTER_")}
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**base, **(env or {})},
    )


@pytest.mark.parametrize("interval", ["0.1", "0"])
def test_cli_invalid_setting_exits_2_with_one_line(interval: str) -> None:
    result = run_cli("--demo", "--poll.interval", interval)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "zoom-qos-exporter: error: --poll.interval: Input should be greater than or equal to 1"
    ]  # the flag that gave the value, not the variable that did not


def test_cli_missing_credentials_exit_2_and_mention_demo() -> None:
    result = run_cli(env={"ZOOM_EXPORTER_CLIENT_SECRET": "hunter2-secret"})
    assert result.returncode == 2
    assert "--demo" in result.stderr
    assert "hunter2-secret" not in result.stderr + result.stdout


def test_shipped_example_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    example = Path(__file__).resolve().parent.parent / "deploy" / "config.example.yml"
    monkeypatch.setenv("ZOOM_EXPORTER_CLIENT_SECRET", "from-env")
    settings = load_settings(config_file=example)
    assert settings.poll_interval == 60
    assert settings.client_id == "your-client-id"


def test_plan_sets_limits_and_the_default_budget_is_half_the_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pro = load_settings({"demo": True}).limits
    assert (pro.heavy_per_second, pro.daily_cap, pro.daily_budget) == (10, 30_000, 15_000)
    assert pro.resource_intensive_per_second == pytest.approx(10 / 60)
    monkeypatch.setenv("ZOOM_EXPORTER_PLAN", "Business+")
    business = load_settings({"demo": True}).limits
    assert (business.heavy_per_second, business.daily_cap, business.daily_budget) == (
        40,
        60_000,
        30_000,
    )
    assert business.resource_intensive_per_second == pytest.approx(20 / 60)


def test_explicit_rates_and_budget_override_the_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZOOM_EXPORTER_PLAN", "enterprise")
    monkeypatch.setenv("ZOOM_EXPORTER_HEAVY_RATE", "5")
    monkeypatch.setenv("ZOOM_EXPORTER_RESOURCE_INTENSIVE_RATE", "0.05")
    monkeypatch.setenv("ZOOM_EXPORTER_DAILY_REQUEST_BUDGET", "12000")
    limits = load_settings({"demo": True}).limits
    assert (limits.heavy_per_second, limits.resource_intensive_per_second) == (5, 0.05)
    assert (limits.daily_cap, limits.daily_budget) == (60_000, 12_000)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"plan": "free"}, "ZOOM_EXPORTER_PLAN"),
        ({"daily_request_budget": 0}, "ZOOM_EXPORTER_DAILY_REQUEST_BUDGET"),
        ({"heavy_rate": -1}, "ZOOM_EXPORTER_HEAVY_RATE"),
        ({"max_retries": 11}, "ZOOM_EXPORTER_MAX_RETRIES"),
        ({"poll_interval": 120, "max_poll_interval": 60}, "ZOOM_EXPORTER_MAX_POLL_INTERVAL"),
        ({"demo_speed": 0}, "ZOOM_EXPORTER_DEMO_SPEED"),
    ],
)
def test_bad_rate_limit_settings_name_the_setting(overrides: dict[str, object], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        load_settings({"demo": True, **overrides})


PSEUDONYM_KEY = "a-pseudonym-key-of-32-characters"


def test_participant_labels_default_and_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = load_settings({"demo": True})
    assert tuple(default.participant_labels) == DEFAULT_PARTICIPANT_LABELS
    assert default.privacy.key is None
    monkeypatch.setenv("ZOOM_EXPORTER_PARTICIPANT_LABELS", " device, Email,device ,,ip_address")
    assert load_settings({"demo": True}).participant_labels == ["device", "email", "ip_address"]
    monkeypatch.delenv("ZOOM_EXPORTER_PARTICIPANT_LABELS")
    config = tmp_path / "config.yml"
    config.write_text("participant_labels: [user_name, location, pc_name, domain]\n")
    settings = load_settings({"demo": True}, config_file=config)
    assert settings.privacy.labels == ("user_name", "location", "pc_name", "domain")
    monkeypatch.setenv("ZOOM_EXPORTER_PARTICIPANT_LABELS", "")
    assert load_settings({"demo": True}).privacy.labels == ()  # no descriptive labels at all


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ("user_name,mac_addr", "mac_addr is never exported"),
        ("harddisk_id", "harddisk_id is never exported"),
        ("user_name,emial", "'emial' is not a participant label; choose from user_name"),
        ("user_id", "'user_id' is not a participant label"),
    ],
)
def test_participant_labels_refused(
    labels: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZOOM_EXPORTER_PARTICIPANT_LABELS", labels)
    with pytest.raises(SettingsError, match="ZOOM_EXPORTER_PARTICIPANT_LABELS") as caught:
        load_settings({"demo": True})
    assert message in str(caught.value)


def test_pseudonymize_key_from_env_file_or_secrets_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZOOM_EXPORTER_PSEUDONYMIZE", "true")
    monkeypatch.setenv("ZOOM_EXPORTER_PSEUDONYMIZE_KEY", PSEUDONYM_KEY)
    from_env = load_settings({"demo": True})
    assert from_env.privacy.key == PSEUDONYM_KEY.encode()
    assert PSEUDONYM_KEY not in repr(from_env) + repr(from_env.privacy)
    monkeypatch.delenv("ZOOM_EXPORTER_PSEUDONYMIZE_KEY")
    (tmp_path / "zoom_exporter_pseudonymize_key").write_text(PSEUDONYM_KEY + "\n")
    from_secrets = load_settings({"demo": True}, secrets_dir=tmp_path)
    assert from_secrets.privacy.key == PSEUDONYM_KEY.encode()
    config = tmp_path / "config.yml"
    config.write_text(f"pseudonymize: true\npseudonymize_key: {PSEUDONYM_KEY}\n")
    monkeypatch.delenv("ZOOM_EXPORTER_PSEUDONYMIZE")
    from_file = load_settings({"demo": True}, config_file=config)
    assert from_file.privacy.key == PSEUDONYM_KEY.encode()
    # a key alone does not pseudonymize
    config.write_text(f"pseudonymize_key: {PSEUDONYM_KEY}\n")
    assert load_settings({"demo": True}, config_file=config).privacy.key is None


def test_pseudonymize_without_a_key_or_with_a_short_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZOOM_EXPORTER_PSEUDONYMIZE", "true")
    with pytest.raises(SettingsError, match="ZOOM_EXPORTER_PSEUDONYMIZE_KEY is not set"):
        load_settings({"demo": True})
    monkeypatch.setenv("ZOOM_EXPORTER_PSEUDONYMIZE_KEY", "short-key-123")
    with pytest.raises(SettingsError, match="at least 16 characters") as caught:
        load_settings({"demo": True})
    assert "short-key-123" not in str(caught.value)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ZOOM_EXPORTER_PARTICIPANT_LABELS": "user_name,mac_addr"}, "PARTICIPANT_LABELS"),
        ({"ZOOM_EXPORTER_PARTICIPANT_LABELS": "nickname"}, "PARTICIPANT_LABELS"),
        ({"ZOOM_EXPORTER_PSEUDONYMIZE": "true"}, "PSEUDONYMIZE_KEY"),
        (
            {"ZOOM_EXPORTER_PSEUDONYMIZE": "1", "ZOOM_EXPORTER_PSEUDONYMIZE_KEY": "tiny-secret"},
            "PSEUDONYMIZE_KEY",
        ),
    ],
)
def test_cli_privacy_settings_errors_exit_2(env: dict[str, str], named: str) -> None:
    result = run_cli("--demo", env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0]
    assert "tiny-secret" not in result.stderr + result.stdout


def test_participant_series_and_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    default = load_settings({"demo": True}).series
    assert (default.participants, default.streams) == ("all", frozenset({"input", "output"}))
    monkeypatch.setenv("ZOOM_EXPORTER_PARTICIPANT_SERIES", "Worst:20")
    monkeypatch.setenv("ZOOM_EXPORTER_STREAMS", "input, output,device_to_rwg")
    series = load_settings({"demo": True}).series
    assert (series.participants, series.worst) == ("worst", 20)
    assert series.streams == {"input", "output", "device_to_rwg"}
    monkeypatch.setenv("ZOOM_EXPORTER_PARTICIPANT_SERIES", "none")
    assert load_settings({"demo": True}).series.participants == "none"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ZOOM_EXPORTER_PARTICIPANT_SERIES": "worst:0"}, "ZOOM_EXPORTER_PARTICIPANT_SERIES: must"),
        ({"ZOOM_EXPORTER_PARTICIPANT_SERIES": "top:5"}, "all, none or worst:N"),
        ({"ZOOM_EXPORTER_STREAMS": "input,crc"}, "'crc' is not a stream; choose from input"),
        ({"ZOOM_EXPORTER_STREAMS": ","}, "ZOOM_EXPORTER_STREAMS: name at least one stream"),
    ],
)
def test_series_settings_refused(
    env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings({"demo": True})
    assert message in str(caught.value)
