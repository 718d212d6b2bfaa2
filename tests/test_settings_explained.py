"""Settings that explain themselves (issue 13, item 7): errors name where the value came from
(the flag, `file:line` at any depth, the variable, the secrets file); unknown ZOOM_EXPORTER_*
names are warned about with the closest known one; --help lists every setting; --config.check;
`probe` tells a webinar id from a meeting id."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from conftest import (
    ENV_CREDENTIALS,
    ROOT,
    clear_exporter_env,
    start_exporter,
    stop_process,
    wait_for,
)
from exporter.cli import FLAGS
from exporter.runtime import DEMO_DAILY_CAP, DEMO_POLL_INTERVAL
from exporter.settings import ENV_PREFIX, Settings, SettingsError, load_settings
from exporter.simulator import SEED_MEETING_ID, Scenario
from exporter.sources import Origins, YamlLines, describe, unknown_names

CREDS = ENV_CREDENTIALS


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_exporter_env(monkeypatch)


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith(ENV_PREFIX)}
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **(env or {})},
        cwd=cwd,
    )


# ----- file:line for loc paths of any depth ------------------------------------------------


class Rates(BaseModel):
    model_config = ConfigDict(extra="forbid")
    heavy: float = Field(default=10, gt=0)


class Account(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    plan: Literal["pro", "business"] = "pro"
    meeting_ids: list[int] = Field(default_factory=list)
    rates: Rates = Field(default_factory=Rates)


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    poll_interval: float = 60
    accounts: list[Account] = Field(default_factory=list)


NESTED = """\
poll_interval: 30
accounts:
  - name: acme
    plan: pro
  - name: globex
    plan: platinum
    meeting_ids: [1, 2, three]
  - plann: business
    rates:
      heavy: -1
"""


def test_every_error_in_a_list_of_mappings_points_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "nested.yml"
    path.write_text(NESTED)
    with pytest.raises(ValidationError) as caught:
        Config.model_validate(yaml.safe_load(NESTED))
    origins = Origins(ENV_PREFIX, yaml=YamlLines.read(path))
    assert describe(caught.value, origins, Config) == [
        f"{path}:6: accounts[1].plan: Input should be 'pro' or 'business'",
        f"{path}:7: accounts[1].meeting_ids[2]: Input should be a valid integer, unable to "
        "parse string as an integer",
        f"{path}:8: accounts[2].name: Field required",  # missing: the item's own line
        f"{path}:10: accounts[2].rates.heavy: Input should be greater than 0",
        f"{path}:8: accounts[2].plann: unknown setting; did you mean plan?",
    ]


def test_the_line_of_any_path() -> None:
    lines = YamlLines(Path("x.yml"), yaml.compose(NESTED, Loader=yaml.SafeLoader))
    assert lines.line(("poll_interval",)) == 1
    assert lines.line(("accounts",)) == 2
    assert lines.line(("accounts", 0)) == 3
    assert lines.line(("accounts", 1, "meeting_ids", 2)) == 7
    assert lines.line(("accounts", 2, "rates", "heavy")) == 10
    assert lines.line(("accounts", 9, "plan")) == 2  # beyond the file: the deepest node found
    assert lines.line(("nothing", "here")) == 1


# ----- where a top-level value came from -----------------------------------------------------


def error_lines(**kwargs: object) -> list[str]:
    with pytest.raises(SettingsError) as caught:
        load_settings(**kwargs)  # type: ignore[arg-type]
    return list(caught.value.lines)


def test_the_error_names_the_flag_the_file_line_the_variable_or_the_secrets_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.yml"
    config.write_text("demo: true\nplan: free\nconcurrency: 0\nlisten_address: nope\n")
    monkeypatch.setenv("zoom_exporter_request_timeout", "-1")  # read ignoring case, shown as set
    monkeypatch.setenv("ZOOM_EXPORTER_CONCURRENCY", "100")  # beats the file: named, not the file
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "zoom_exporter_pseudonymize_key").write_text("short-key-xyz")
    assert error_lines(
        overrides={"listen_address": "nope", "poll_interval": 0},
        flags=FLAGS,
        config_file=config,
        secrets_dir=secrets,
    ) == [
        "--web.listen-address: 'nope' is not host:port",
        "--poll.interval: Input should be greater than or equal to 1",
        "zoom_exporter_request_timeout: Input should be greater than 0",
        "ZOOM_EXPORTER_CONCURRENCY: Input should be less than or equal to 64",
        f"{config}:2: plan: Input should be 'pro', 'business', 'business_plus', 'enterprise' "
        "or 'education'",
        "--secrets.dir: zoom_exporter_pseudonymize_key: must be at least 16 characters long",
    ]


def test_overrides_that_are_not_flags_name_the_variable() -> None:
    assert error_lines(overrides={"demo": True, "poll_interval": 0}) == [
        "ZOOM_EXPORTER_POLL_INTERVAL: Input should be greater than or equal to 1"
    ]


def test_a_check_across_settings_names_each_where_it_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.yml"
    config.write_text("demo: true\npoll_interval: 100\nmax_poll_interval: 30\n")
    assert error_lines(config_file=config) == [
        f"{config}:3: max_poll_interval (30 s) must not be less than {config}:2: poll_interval "
        "(100 s)"
    ]
    monkeypatch.setenv("ZOOM_EXPORTER_MAX_POLL_INTERVAL", "50")
    assert error_lines(overrides={"poll_interval": 60}, flags=FLAGS, config_file=config) == [
        "ZOOM_EXPORTER_MAX_POLL_INTERVAL (50 s) must not be less than --poll.interval (60 s)"
    ]
    monkeypatch.delenv("ZOOM_EXPORTER_MAX_POLL_INTERVAL")
    config.write_text("pseudonymize: true\n")
    assert error_lines(overrides={"demo": True}, config_file=config) == [
        f"{config}:1: pseudonymize is on but ZOOM_EXPORTER_PSEUDONYMIZE_KEY is not set"
    ]


def test_a_value_the_environment_cannot_decode_is_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A list of mappings (as `accounts:` will be) in a variable must be JSON; pydantic-settings
    raises its own error for anything else, which is one line too, without the value."""
    from pydantic_settings import BaseSettings, SettingsConfigDict
    from pydantic_settings import SettingsError as PydanticSettingsError

    from exporter.sources import source_error

    class Nested(BaseSettings):
        model_config = SettingsConfigDict(env_prefix=ENV_PREFIX)
        accounts: list[Account] = Field(default_factory=list)

    monkeypatch.setenv("ZOOM_EXPORTER_ACCOUNTS", "name=hunter2")
    with pytest.raises(PydanticSettingsError) as caught:
        Nested()
    origins = Origins.gather(ENV_PREFIX, Nested.model_fields, environ=os.environ)
    line = source_error(str(caught.value), origins)
    assert line == "ZOOM_EXPORTER_ACCOUNTS: cannot be decoded: give a list or mapping as JSON"


def test_a_typo_in_the_file_names_its_line_and_the_closest_setting(tmp_path: Path) -> None:
    config = tmp_path / "typo.yml"
    config.write_text("# comment\ndemo: true\n\npol_interval: 5\n")
    assert error_lines(config_file=config) == [
        f"{config}:4: pol_interval: unknown setting; did you mean poll_interval?"
    ]


def test_cli_errors_one_line_each_exit_2_no_secret_no_traceback(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text("demo: true\npseudonymize: true\npseudonymize_key: hunter2-short\n")
    result = run_cli(
        "--config.file", str(config), "--poll.interval", "0", env={"ZOOM_EXPORTER_PLAN": "x"}
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "zoom-qos-exporter: error: --poll.interval: Input should be greater than or equal to 1",
        "zoom-qos-exporter: error: ZOOM_EXPORTER_PLAN: Input should be 'pro', 'business', "
        "'business_plus', 'enterprise' or 'education'",
        f"zoom-qos-exporter: error: {config}:3: pseudonymize_key: must be at least 16 "
        "characters long",
    ]
    assert "hunter2" not in result.stdout + result.stderr


def test_invalid_yaml_gives_file_line_without_the_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.yml"
    config.write_text('demo: true\nclient_secret: "unterminated-secret-xyz\n  - : [\n')
    assert error_lines(config_file=config) == [f"{config}:4: invalid YAML (the line is not shown)"]


# ----- unknown ZOOM_EXPORTER_* names ---------------------------------------------------------


def test_unknown_variables_and_secrets_files_get_the_closest_name(tmp_path: Path) -> None:
    (tmp_path / "zoom_exporter_client_secert").write_text("x")
    (tmp_path / "zoom_exporter_client_secret").write_text("x")
    environ = {
        "ZOOM_EXPORTER_POL_INTERVAL": "hunter2",
        "zoom_exporter_plan": "pro",  # a known name in lower case: read, so no warning
        "ZOOM_EXPORTER_WEB_CONFIG_FILE": "/etc/web.yml",  # read by the healthcheck
        "ZOOM_EXPORTER_XYZZY": "1",
        "PATH": "/bin",
    }
    warnings = unknown_names(
        ENV_PREFIX,
        Settings.model_fields,
        environ=environ,
        also_known=["ZOOM_EXPORTER_WEB_CONFIG_FILE"],
        secrets_dir=tmp_path,
    )
    assert warnings == [
        "environment: ZOOM_EXPORTER_POL_INTERVAL is not a setting, ignored; did you mean "
        "ZOOM_EXPORTER_POLL_INTERVAL?",
        "environment: ZOOM_EXPORTER_XYZZY is not a setting, ignored",
        "--secrets.dir: zoom_exporter_client_secert is not a setting, ignored; did you mean "
        "zoom_exporter_client_secret?",
    ]


def test_variables_the_project_reads_outside_the_settings_are_known() -> None:
    """Every ZOOM_EXPORTER_* name the code, the deployment files and the Dockerfile mention is
    a setting, in cli.OTHER_VARIABLES or named by a YAML file as a value (a variable that file
    refers to), so none of them is ever warned about."""
    import re

    from exporter.cli import OTHER_VARIABLES

    known = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    known |= set(OTHER_VARIABLES)
    for config in [*ROOT.glob("deploy/**/*.yml"), *ROOT.glob("deploy/**/*.yaml")]:
        known |= YamlLines.read(config).variables(ENV_PREFIX)
    files = [ROOT / "Dockerfile", *ROOT.glob("exporter/**/*.py"), *ROOT.glob("deploy/**/*")]
    mentioned: set[str] = set()
    for path in files:
        if path.is_file() and path.suffix not in (".json", ".png"):
            mentioned |= set(re.findall(r"ZOOM_EXPORTER_[A-Z][A-Z_]*[A-Z]", path.read_text()))
    assert mentioned - known == set()


def test_variables_a_config_file_refers_to_are_not_typos(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text(
        "demo: true\n# accounts:\n#   - client_secret_env: ZOOM_EXPORTER_NOT_READ\n"
        "meeting_ids: [ZOOM_EXPORTER_ACME_SECRET]\n"
    )
    assert YamlLines.read(config).variables(ENV_PREFIX) == {"ZOOM_EXPORTER_ACME_SECRET"}
    result = run_cli(
        "--config.check",
        "--config.file",
        str(config),
        env={"ZOOM_EXPORTER_ACME_SECRET": "x", "ZOOM_EXPORTER_XYZZY": "y"},
    )
    assert result.returncode == 0
    assert result.stderr.splitlines() == [
        "zoom-qos-exporter: warning: environment: ZOOM_EXPORTER_XYZZY is not a setting, ignored"
    ]


def test_a_typo_in_the_environment_is_warned_about_at_start_and_on_reload(
    tmp_path: Path,
) -> None:
    env = {"ZOOM_EXPORTER_POL_INTERVAL": "5", "ZOOM_EXPORTER_WEB_CONFIG_FILE": "/none.yml"}
    exporter = start_exporter(tmp_path, "--demo", env=env)
    warning = (
        'msg="environment: ZOOM_EXPORTER_POL_INTERVAL is not a setting, ignored; did you mean '
        'ZOOM_EXPORTER_POLL_INTERVAL?"'
    )
    try:
        wait_for(lambda: "listening" in exporter.log.read_text(), what="the exporter listening")
        assert exporter.log.read_text().count(warning) == 1
        exporter.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "configuration reloaded" in exporter.log.read_text(), what="the reload")
        assert exporter.log.read_text().count(warning) == 2
    finally:
        assert stop_process(exporter.process) == 0
    assert "WEB_CONFIG_FILE" not in exporter.log.read_text()


# ----- --help ------------------------------------------------------------------------------


def test_help_lists_every_setting_with_its_variable_flag_and_defaults() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    text = result.stdout
    entries = {}  # the variable's line -> the text under it
    for block in text.split("\n  ZOOM_EXPORTER_")[1:]:
        head, _, body = block.partition("\n")
        entries[f"ZOOM_EXPORTER_{head}"] = " ".join(body.split())
    for name in Settings.model_fields:
        variable = f"{ENV_PREFIX}{name.upper()}"
        head = variable + (f", {FLAGS[name]}" if name in FLAGS else "")
        assert head in entries, f"{name} is not in --help as {head!r}"
        assert "default: " in entries[head], head
    assert (
        "default: 60; with --demo: " + f"{DEMO_POLL_INTERVAL:g}"
        in entries["ZOOM_EXPORTER_POLL_INTERVAL, --poll.interval"]
    )
    assert f"with --demo: {DEMO_DAILY_CAP // 2:,}" in entries["ZOOM_EXPORTER_DAILY_REQUEST_BUDGET"]
    assert (
        entries["ZOOM_EXPORTER_CLIENT_SECRET"]
        == "its client secret (never logged or exported); default: required unless --demo"
    )
    assert "default: input, output" in entries["ZOOM_EXPORTER_STREAMS"]
    assert "default: 0.0.0.0:9924" in entries["ZOOM_EXPORTER_LISTEN_ADDRESS, --web.listen-address"]


# ----- --config.check ----------------------------------------------------------------------


def test_config_check_passes_the_example_without_credentials() -> None:
    result = run_cli("--config.check", "--config.file", "deploy/config.example.yml")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        "zoom-qos-exporter: config ok: deploy/config.example.yml and the environment; "
        "credentials not set (not checked): ZOOM_EXPORTER_CLIENT_SECRET"
    ]
    full = run_cli(
        "--config.check",
        "--config.file",
        "deploy/config.example.yml",
        env={"ZOOM_EXPORTER_CLIENT_SECRET": "s3cret", "ZOOM_EXPORTER_PLAN": "business"},
    )
    assert full.returncode == 0
    assert full.stdout.endswith("; credentials set (not tried: that needs Zoom)\n")


def test_config_check_fails_with_every_error_and_warns_about_typos(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text("account_id: ' acct'\nclient_id: c\nplan: free\nstreams: [input, crc]\n")
    result = run_cli(
        "--config.check",
        "--config.file",
        str(config),
        env={"ZOOM_EXPORTER_CLIENT_SCRET": "s3cret-value"},
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"zoom-qos-exporter: error: {config}:3: plan: Input should be 'pro', 'business', "
        "'business_plus', 'enterprise' or 'education'",
        f"zoom-qos-exporter: error: {config}:4: streams: 'crc' is not a stream; choose from "
        "input, output, device_from_crc, device_to_crc, device_from_rwg, device_to_rwg",
    ]
    config.write_text("account_id: ' acct'\nclient_id: c\n")
    result = run_cli(
        "--config.check",
        "--config.file",
        str(config),
        env={"ZOOM_EXPORTER_CLIENT_SCRET": "s3cret-value"},
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "zoom-qos-exporter: error: "
        f"{config}:1: account_id: has spaces or quotes, which Zoom's never have"
    ]
    config.write_text("account_id: acct\nclient_id: c\n")
    result = run_cli(
        "--config.check",
        "--config.file",
        str(config),
        env={"ZOOM_EXPORTER_CLIENT_SCRET": "s3cret-value"},
    )
    assert result.returncode == 0
    assert result.stderr.splitlines() == [
        "zoom-qos-exporter: warning: environment: ZOOM_EXPORTER_CLIENT_SCRET is not a setting, "
        "ignored; did you mean ZOOM_EXPORTER_CLIENT_SECRET?"
    ]
    assert "s3cret-value" not in result.stdout + result.stderr


def test_config_check_checks_the_web_config_too(tmp_path: Path) -> None:
    web = tmp_path / "web.yml"
    web.write_text("tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n")
    result = run_cli("--config.check", "--demo", "--web.config.file", str(web))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "zoom-qos-exporter: error: --web.config.file: cannot load TLS files: [Errno 2] No such "
        "file or directory"
    ]
    web.write_text("http_server_config:\n  headers: {}\n")
    result = run_cli("--config.check", "--demo", "--web.config.file", str(web))
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == (
        f"zoom-qos-exporter: config ok: no --config.file, {web} and the environment; "
        "--demo: no credentials needed\n"
    )


# ----- probe: a webinar id without --webinar -------------------------------------------------


def webinar_id() -> str:
    """The demo's webinar: the scenario is deterministic for its seed (the default)."""
    (webinar,) = Scenario().meetings("webinar", time.time())
    return str(webinar.id)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--meeting", webinar_id()),
            f"{webinar_id()} is a live webinar, not a meeting: use --webinar",
        ),
        (
            ("--meeting", webinar_id(), "--participant", "16778240"),
            f"{webinar_id()} is a live webinar, not a meeting: use --webinar",
        ),
        (
            ("--meeting", str(SEED_MEETING_ID), "--webinar"),
            f"{SEED_MEETING_ID} is a live meeting, not a webinar: leave out --webinar",
        ),
    ],
)
def test_probe_says_which_kind_an_id_is(args: tuple[str, ...], message: str) -> None:
    """Against the simulator over real sockets (--demo runs it in the probe's process)."""
    result = run_cli("probe", "--demo", *args)
    assert result.returncode == 2
    assert f"zoom-qos-exporter probe: {message}" in result.stderr.splitlines()
    assert "Traceback" not in result.stderr


def test_probe_of_an_id_live_as_neither_relays_zoom_and_says_so() -> None:
    result = run_cli("probe", "--demo", "--meeting", "123")
    assert result.returncode == 1
    assert (
        "zoom-qos-exporter probe: meeting_participants_qos: HTTP 404, Zoom code 3001: This "
        "meeting's detail info is not available (nor is it a live webinar)"
    ) in result.stderr.splitlines()
    participant = run_cli(
        "probe", "--demo", "--meeting", str(SEED_MEETING_ID), "--participant", "999"
    )
    assert participant.returncode == 1
    assert participant.stderr.splitlines()[-1] == (
        "zoom-qos-exporter probe: meeting_participant_qos: HTTP 404, Zoom code 3001: "
        "Participant not found."
    )
    webinar = run_cli("probe", "--demo", "--webinar", "--meeting", webinar_id(), "--json")
    assert webinar.returncode == 0, webinar.stderr


def test_probe_asks_the_account_it_is_told_to() -> None:
    """--account picks the account probe calls as: demo-eu's seeded meeting is live there, and
    not in demo-us (whose meeting ids are its own); an unknown name lists the known ones."""
    seeded = ("--meeting", str(SEED_MEETING_ID), "--json")
    first = run_cli("probe", "--demo", *seeded)
    assert first.returncode == 0, first.stderr
    named = run_cli("probe", "--demo", "--account", "demo-eu", *seeded)
    assert named.returncode == 0, named.stderr
    other = run_cli("probe", "--demo", "--account", "demo-us", *seeded)
    assert other.returncode == 1, other.stderr
    assert "Zoom code 3001" in other.stderr
    unknown = run_cli("probe", "--demo", "--account", "demo-xx", *seeded)
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines()[-1] == (
        "zoom-qos-exporter: error: probe --account: 'demo-xx' is not configured "
        "(accounts: demo-eu, demo-us)"
    )
