"""Command line: flags, settings, then run the daemon (optionally on the built-in simulator) or
probe once."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from exporter import __version__, daemon, logfmt, probe
from exporter.settings import Settings, SettingsError, load_settings, settings_warnings
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
        epilog="Every setting can also come from ZOOM_EXPORTER_* environment variables.",
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


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        _overrides(args),
        config_file=getattr(args, "config.file"),
        secrets_dir=getattr(args, "secrets.dir"),
    )


def _warn(args: argparse.Namespace, settings: Settings) -> None:
    for warning in settings_warnings(
        settings, config_file=getattr(args, "config.file"), secrets_dir=getattr(args, "secrets.dir")
    ):
        log.warning(warning)


def _reload_settings(args: argparse.Namespace) -> Settings:
    settings = _settings(args)
    _warn(args, settings)
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = _settings(args)
        logfmt.configure(settings.log_level, settings.log_format)  # the web config may warn
        _warn(args, settings)
        web_path = getattr(args, "web.config.file", None)
        web_config = load_web_config(web_path) if web_path else WebConfig()
    except SettingsError as error:
        print(f"zoom-qos-exporter: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "probe":
        return asyncio.run(probe.run(args, daemon.zoom_client(settings)))
    return asyncio.run(daemon.serve(lambda: _reload_settings(args), settings, web_config))
