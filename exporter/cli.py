"""Command line: run the exporter daemon (optionally on the built-in simulator), or probe once."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import SecretStr

from exporter import __version__, logfmt, probe
from exporter.client import ZoomClient
from exporter.poller import Poller, SnapshotStore, configured_targets
from exporter.settings import Settings, SettingsError, load_settings
from exporter.web import create_app
from exporter.webconfig import WebConfig, load_web_config, ssl_context

log = logging.getLogger("exporter")

DEMO_POLL_INTERVAL = 10.0
# The in-process simulator's own throwaway credentials; nothing real.
DEMO_ACCOUNT, DEMO_CLIENT, DEMO_SECRET = "demo-account", "demo-client", "demo-secret"
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
        "--log.level",
        metavar="LEVEL",
        help="debug, info, warning or error",
        choices=["debug", "info", "warning", "error"],
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
    return out


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        _overrides(args),
        config_file=getattr(args, "config.file"),
        secrets_dir=getattr(args, "secrets.dir"),
    )


@contextlib.asynccontextmanager
async def zoom_client(settings: Settings) -> AsyncIterator[ZoomClient]:
    """A client for the real API, or for an in-process simulator with --demo."""
    async with contextlib.AsyncExitStack() as stack:
        api_url, oauth_url = settings.api_url, settings.oauth_url
        account, client_id = settings.account_id or "", settings.client_id or ""
        secret = settings.client_secret or SecretStr("")
        if settings.demo:
            from exporter.simulator import Scenario, Simulator

            sim = Simulator(
                Scenario(),
                client_id=DEMO_CLIENT,
                client_secret=DEMO_SECRET,
                account_id=DEMO_ACCOUNT,
            )
            await stack.enter_async_context(sim)
            api_url, oauth_url = sim.api_url, sim.oauth_url
            account, client_id, secret = DEMO_ACCOUNT, DEMO_CLIENT, SecretStr(DEMO_SECRET)
            log.info("demo mode: polling the built-in Zoom simulator at %s", api_url)
        session = await stack.enter_async_context(
            aiohttp.ClientSession(headers={"User-Agent": f"zoom-qos-exporter/{__version__}"})
        )
        yield ZoomClient(
            session,
            api_url=api_url,
            oauth_url=oauth_url,
            account_id=account,
            client_id=client_id,
            client_secret=secret,
            timeout=settings.request_timeout,
        )


async def serve(settings: Settings, web_config: WebConfig) -> int:
    interval = settings.poll_interval
    if settings.demo and "poll_interval" not in settings.model_fields_set:
        interval = DEMO_POLL_INTERVAL
    host, port = settings.listen
    async with zoom_client(settings) as client:
        store = SnapshotStore()
        poller = Poller(
            client,
            store,
            interval=interval,
            configured=configured_targets(settings.meeting_ids, settings.webinar_ids),
            discovery=settings.discovery,
            concurrency=settings.concurrency,
            max_staleness=settings.max_staleness,
        )
        app = create_app(store, settings.telemetry_path, web_config)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        tls = ssl_context(web_config)
        try:
            await web.TCPSite(runner, host, port, ssl_context=tls).start()
        except OSError as error:
            await runner.cleanup()
            log.error("cannot listen on %s: %s", settings.listen_address, error.strerror)
            return 1
        log.info(
            "zoom-qos-exporter %s listening on %s://%s:%d%s (poll every %.3g s)",
            __version__,
            "https" if tls else "http",
            host,
            port,
            settings.telemetry_path,
            interval,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        polling = asyncio.create_task(poller.run_forever(stop))
        await stop.wait()
        log.info("shutting down")
        polling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await polling
        await runner.cleanup()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = _settings(args)
        web_path = getattr(args, "web.config.file", None)
        web_config = load_web_config(web_path) if web_path else WebConfig()
    except SettingsError as error:
        print(f"zoom-qos-exporter: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    logfmt.configure(settings.log_level)
    if args.command == "probe":
        return asyncio.run(probe.run(args, zoom_client(settings)))
    return asyncio.run(serve(settings, web_config))
