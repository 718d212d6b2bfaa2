"""Command line: flags, settings, then run the daemon (optionally on the built-in simulator) or
probe once."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from exporter import __version__, daemon, logfmt, probe, usage
from exporter.settings import (
    ENV_PREFIX,
    Settings,
    SettingsError,
    load_settings,
    settings_warnings,
)
from exporter.sources import Origins, YamlLines, unknown_names
from exporter.web.webconfig import WebConfig, load_web_config

log = logging.getLogger("exporter")

EXIT_USAGE = 2

# flag -> settings field, for the flags that map one to one onto settings.
_FLAG_FIELDS = {
    "web.listen_address": "listen_address",
    "web.telemetry_path": "telemetry_path",
    "poll.interval": "poll_interval",
    "zoom.meeting_ids": "meeting_ids",
    "zoom.webinar_ids": "webinar_ids",
    "zoom.api_url": "api_url",
    "zoom.oauth_url": "oauth_url",
    "log.level": "log_level",
    "log.format": "log_format",
    "storage.path": "storage_path",
    "demo.speed": "demo_speed",
    "web.max_connections": "web_max_connections",
    "shard": "shard",
}
# settings field -> the flag as typed, for errors and --help.
FLAGS = {
    **{field: "--" + dest.replace("_", "-") for dest, field in _FLAG_FIELDS.items()},
    "demo": "--demo",
    "web_enable_lifecycle": "--web.enable-lifecycle",
}
# ZOOM_EXPORTER_* variables read outside the settings (by `python -m exporter.healthcheck`).
OTHER_VARIABLES = (f"{ENV_PREFIX}WEB_CONFIG_FILE",)


def _common(parser: argparse.ArgumentParser, default: Any = None) -> None:
    """Flags accepted before and after the subcommand (a subcommand's copy must not reset them)."""
    parser.add_argument(
        "--config.file", metavar="PATH", type=Path, default=default, help="YAML file of settings"
    )
    parser.add_argument(
        "--secrets.dir",
        metavar="DIR",
        type=Path,
        default=default,
        help="directory of secret files (e.g. zoom_exporter_client_secret)",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        default=default,
        help="run against the built-in Zoom simulator; no credentials needed",
    )
    parser.add_argument(
        "--demo.speed",
        metavar="N",
        type=float,
        default=default,
        help="with --demo: run the simulated world N times faster (churn, meetings ending)",
    )
    parser.add_argument(
        "--log.level",
        metavar="LEVEL",
        help="debug, info, warning or error",
        choices=["debug", "info", "warning", "error"],
        default=default,
    )
    parser.add_argument(
        "--log.format",
        metavar="FORMAT",
        help="logfmt or json",
        choices=["logfmt", "json"],
        default=default,
    )
    parser.add_argument(
        "--zoom.api-url",
        metavar="URL",
        dest="zoom.api_url",
        default=default,
        help="Zoom API base URL",
    )
    parser.add_argument(
        "--zoom.oauth-url",
        metavar="URL",
        dest="zoom.oauth_url",
        default=default,
        help="OAuth token URL",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoom-qos-exporter",
        description="Prometheus exporter for the QoS of live Zoom meetings and webinars.",
        epilog=usage.settings_help(FLAGS),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _common(parser)
    parser.add_argument(
        "--web.listen-address",
        metavar="HOST:PORT",
        dest="web.listen_address",
        help="host:port (default 0.0.0.0:9924)",
    )
    parser.add_argument(
        "--web.telemetry-path",
        metavar="PATH",
        dest="web.telemetry_path",
        help="metrics path (default /metrics)",
    )
    parser.add_argument(
        "--web.config.file",
        metavar="PATH",
        type=Path,
        help="exporter-toolkit web config: TLS and basic auth (see README)",
    )
    parser.add_argument(
        "--config.check",
        dest="config.check",
        action="store_true",
        help="check --config.file and the environment (and --web.config.file), print one "
        "line and exit: 0 if valid, 2 with the errors; never calls Zoom",
    )
    parser.add_argument(
        "--web.enable-lifecycle",
        dest="web.enable_lifecycle",
        action="store_true",
        help="answer POST /-/reload (reload the configuration), as Prometheus does",
    )
    parser.add_argument(
        "--web.max-connections",
        metavar="N",
        type=int,
        dest="web.max_connections",
        help="open client connections at most (default 256); at the cap, connections that "
        "have not sent their request headers make room first",
    )
    parser.add_argument(
        "--storage.path",
        metavar="DIR",
        type=Path,
        dest="storage.path",
        help="directory for the state file (today's API spend survives restarts)",
    )
    parser.add_argument(
        "--poll.interval",
        metavar="SECONDS",
        type=float,
        help="seconds between poll cycles (default 60)",
    )
    parser.add_argument(
        "--zoom.meeting-ids", metavar="IDS", dest="zoom.meeting_ids", help="comma-separated"
    )
    parser.add_argument(
        "--zoom.webinar-ids", metavar="IDS", dest="zoom.webinar_ids", help="comma-separated"
    )
    parser.add_argument(
        "--shard",
        metavar="I/N",
        help="poll only the accounts whose stable hash modulo N is I (replica I of N)",
    )
    commands = parser.add_subparsers(dest="command", metavar="{probe}")
    probe_parser = commands.add_parser("probe", help="fetch one meeting's QoS once and print it")
    _common(probe_parser, default=argparse.SUPPRESS)
    probe.add_arguments(probe_parser)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    values = vars(args)
    out = {
        field: values[flag] for flag, field in _FLAG_FIELDS.items() if values.get(flag) is not None
    }
    if values.get("demo"):
        out["demo"] = True
    if values.get("web.enable_lifecycle"):
        out["web_enable_lifecycle"] = True
    return out


def _settings(args: argparse.Namespace, *, require_credentials: bool = True) -> Settings:
    return load_settings(
        _overrides(args),
        config_file=getattr(args, "config.file"),
        secrets_dir=getattr(args, "secrets.dir"),
        flags=FLAGS,
        require_credentials=require_credentials,
    )


def _warnings(args: argparse.Namespace, settings: Settings) -> list[str]:
    secrets_dir = getattr(args, "secrets.dir")
    config_file = getattr(args, "config.file")
    referenced = YamlLines.read(config_file).variables(ENV_PREFIX) if config_file else set()
    unknown = unknown_names(
        ENV_PREFIX,
        Settings.model_fields,
        environ=os.environ,
        also_known={*OTHER_VARIABLES, *referenced},
        nested_delimiter=Settings.model_config.get("env_nested_delimiter"),
        secrets_dir=secrets_dir,
    )
    return unknown + settings_warnings(settings, config_file=config_file, secrets_dir=secrets_dir)


def _warn(args: argparse.Namespace, settings: Settings) -> None:
    for warning in _warnings(args, settings):
        log.warning(warning)


def _reload_settings(args: argparse.Namespace) -> Settings:
    settings = _settings(args)
    _warn(args, settings)
    return settings


def _fail(error: SettingsError) -> int:
    for line in error.lines:
        print(f"zoom-qos-exporter: error: {line}", file=sys.stderr)
    return EXIT_USAGE


CREDENTIALS = ("account_id", "client_id", "client_secret")


def _check_credentials(args: argparse.Namespace, settings: Settings) -> None:
    """As far as is possible without Zoom: Zoom's ids and secrets have no spaces or quotes, so
    one that has them was pasted with its surroundings."""
    bad = []
    for name in CREDENTIALS:
        value = getattr(settings, name)
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if text and any(c.isspace() or c in "\"'" for c in text):
            bad.append((name,))
    if bad:
        origins = Origins.gather(
            ENV_PREFIX,
            Settings.model_fields,
            overrides=_overrides(args),
            flags=FLAGS,
            environ=os.environ,
            secrets_dir=getattr(args, "secrets.dir"),
            config_file=getattr(args, "config.file"),
        )
        raise SettingsError(
            *(f"{origins.where(loc)}: has spaces or quotes, which Zoom's never have" for loc in bad)
        )


def _credential_text(value: object) -> str:
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value or "")


def check_config(args: argparse.Namespace) -> int:
    """--config.check: validate every source without starting (and without calling Zoom)."""
    config_file = getattr(args, "config.file")
    web_path = getattr(args, "web.config.file", None)
    try:
        settings = _settings(args, require_credentials=False)
        if web_path:
            load_web_config(web_path)
        _check_credentials(args, settings)
    except SettingsError as error:
        return _fail(error)
    for warning in _warnings(args, settings):
        print(f"zoom-qos-exporter: warning: {warning}", file=sys.stderr)
    checked = [str(config_file) if config_file else "no --config.file"]
    if web_path:
        checked.append(str(web_path))
    summary = f"ok: {', '.join(checked)} and the environment"
    if settings.demo:
        summary += "; --demo: no credentials needed"
    elif settings.accounts:
        accounts = settings.zoom_accounts()
        summary += f"; {len(accounts)} account{'' if len(accounts) == 1 else 's'}"
        if settings.shard:
            mine = [a.name for a in settings.my_accounts()]
            summary += (
                f", {len(mine)} of them on shard {settings.shard}: {', '.join(mine) or 'none'}"
            )
        unset = [
            f"{account.name}.{name}"
            for account in accounts
            for name in CREDENTIALS
            if not _credential_text(getattr(account, name))
        ]
        if unset:
            summary += f"; credentials not available here (not checked): {', '.join(unset)}"
        else:
            summary += "; credentials set (not tried: that needs Zoom)"
    else:
        missing = [
            f"{ENV_PREFIX}{name.upper()}" for name in CREDENTIALS if not getattr(settings, name)
        ]
        if missing:
            summary += f"; credentials not set (not checked): {', '.join(missing)}"
        else:
            summary += "; credentials set (not tried: that needs Zoom)"
    print(f"zoom-qos-exporter: config {summary}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "config.check", False):
        return check_config(args)
    try:
        settings = _settings(args)
        logfmt.configure(settings.log_level, settings.log_format)  # the web config may warn
        _warn(args, settings)
        web_path = getattr(args, "web.config.file", None)
        web_config = load_web_config(web_path) if web_path else WebConfig()
    except SettingsError as error:
        return _fail(error)
    if args.command == "probe":
        names = daemon.account_names(settings)
        if args.account is not None and args.account not in names:
            return _fail(
                SettingsError(
                    f"probe --account: {args.account!r} is not configured "
                    f"(accounts: {', '.join(names)})"
                )
            )
        return asyncio.run(probe.run(args, daemon.zoom_client(settings, args.account)))
    return asyncio.run(daemon.serve(lambda: _reload_settings(args), settings, web_config))
