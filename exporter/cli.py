"""Command line: run the exporter daemon (optionally on the built-in simulator), or probe once."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import SecretStr

from exporter import __version__, logfmt, probe
from exporter.budget import DailyBudget
from exporter.client import ZoomClient
from exporter.clock import SYSTEM_CLOCK
from exporter.poller import Poller, SnapshotStore, configured_targets
from exporter.ratelimit import RateLimiter
from exporter.settings import Settings, SettingsError, load_settings
from exporter.web import create_app
from exporter.webconfig import WebConfig, load_web_config, ssl_context

log = logging.getLogger("exporter")

DEMO_POLL_INTERVAL = 10.0
# The demo account's daily cap: large, so the demo polls at the interval asked for. Set
# ZOOM_EXPORTER_DAILY_REQUEST_BUDGET to watch the planner stretch the interval.
DEMO_DAILY_CAP = 10_000_000
SHUTDOWN_GRACE = 1.0  # seconds open HTTP connections get to finish on SIGTERM
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
    "demo.speed": "demo_speed",
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


@dataclass(frozen=True)
class Endpoints:
    """Where the Zoom API is, and the credentials for it."""

    api_url: str
    oauth_url: str
    account_id: str
    client_id: str
    client_secret: SecretStr


def real_endpoints(settings: Settings) -> Endpoints:
    return Endpoints(
        settings.api_url,
        settings.oauth_url,
        settings.account_id or "",
        settings.client_id or "",
        settings.client_secret or SecretStr(""),
    )


@contextlib.asynccontextmanager
async def zoom_endpoints(settings: Settings) -> AsyncIterator[Endpoints]:
    """The real API's endpoints, or an in-process simulator's with --demo."""
    if not settings.demo:
        yield real_endpoints(settings)
        return
    from exporter.simulator import RateLimits, ScaledClock, Scenario, Simulator

    speed = settings.demo_speed
    scenario = Scenario(clock=ScaledClock(speed)) if speed != 1 else Scenario()
    # Zoom's per-second limits for the plan; meaningless when the demo world runs faster.
    limits = RateLimits.for_plan(settings.plan) if speed == 1 else None
    async with Simulator(
        scenario,
        client_id=DEMO_CLIENT,
        client_secret=DEMO_SECRET,
        account_id=DEMO_ACCOUNT,
        daily_limit=DEMO_DAILY_CAP,
        rate_limits=limits,
    ) as sim:
        log.info("demo mode: polling the built-in Zoom simulator at %s", sim.api_url)
        yield Endpoints(
            sim.api_url, sim.oauth_url, DEMO_ACCOUNT, DEMO_CLIENT, SecretStr(DEMO_SECRET)
        )


def build_client(
    session: aiohttp.ClientSession,
    settings: Settings,
    endpoints: Endpoints,
    budget: DailyBudget | None = None,
) -> ZoomClient:
    limits = settings.limits
    return ZoomClient(
        session,
        api_url=endpoints.api_url,
        oauth_url=endpoints.oauth_url,
        account_id=endpoints.account_id,
        client_id=endpoints.client_id,
        client_secret=endpoints.client_secret,
        timeout=settings.request_timeout,
        limiter=RateLimiter(
            limits.heavy_per_second, limits.resource_intensive_per_second, SYSTEM_CLOCK
        ),
        budget=budget,
        max_retries=settings.max_retries,
    )


def daily_budget(settings: Settings) -> int:
    if settings.demo and settings.daily_request_budget is None:
        return DEMO_DAILY_CAP // 2
    return settings.limits.daily_budget


def http_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(headers={"User-Agent": f"zoom-qos-exporter/{__version__}"})


@contextlib.asynccontextmanager
async def zoom_client(settings: Settings) -> AsyncIterator[ZoomClient]:
    """A client for the real API, or for an in-process simulator with --demo (for `probe`)."""
    async with zoom_endpoints(settings) as endpoints, http_session() as session:
        yield build_client(session, settings, endpoints)


def poll_options(settings: Settings) -> dict[str, Any]:
    interval = settings.poll_interval
    if settings.demo and "poll_interval" not in settings.model_fields_set:
        interval = DEMO_POLL_INTERVAL
    return {
        "interval": interval,
        "max_interval": max(interval, settings.longest_poll_interval),
        "configured": configured_targets(settings.meeting_ids, settings.webinar_ids),
        "discovery": settings.discovery,
        "concurrency": settings.concurrency,
        "max_staleness": settings.max_staleness,
    }


# Settings a reload cannot change: they need a restart.
_RESTART_ONLY = ("listen_address", "telemetry_path", "demo", "demo_speed")


class Daemon:
    """The running exporter: settings, the Zoom client and the poller; reloads on SIGHUP."""

    def __init__(
        self,
        args: argparse.Namespace,
        settings: Settings,
        session: aiohttp.ClientSession,
        endpoints: Endpoints,
        store: SnapshotStore,
    ) -> None:
        self.args = args
        self.settings = settings
        self.session = session
        self.endpoints = endpoints
        self.budget = DailyBudget(daily_budget(settings))
        client = build_client(session, settings, endpoints, self.budget)
        self.poller = Poller(client, store, **poll_options(settings))
        self.reload_success: float = time.time()
        self.poller.config_reload = (True, self.reload_success)

    async def reload(self) -> bool:
        """Read the settings again; apply them, or keep the old ones and say why."""
        try:
            settings = _settings(self.args)
        except SettingsError as error:
            log.error("reload failed, keeping the previous settings: %s", error)
            self.poller.config_reload = (False, self.reload_success)
            await self.poller.republish()
            return False
        for name in _RESTART_ONLY:
            if getattr(settings, name) != getattr(self.settings, name):
                log.warning("reload: %s changed; it takes effect after a restart", name)
                setattr(settings, name, getattr(self.settings, name))
        logfmt.configure(settings.log_level)
        endpoints = self.endpoints if settings.demo else real_endpoints(settings)
        self.budget.budget = daily_budget(settings)
        client = build_client(self.session, settings, endpoints, self.budget)
        await self.poller.reconfigure(client, **poll_options(settings))
        self.settings, self.endpoints = settings, endpoints
        self.reload_success = time.time()
        self.poller.config_reload = (True, self.reload_success)
        log.info("configuration reloaded")
        return True


async def serve(args: argparse.Namespace, settings: Settings, web_config: WebConfig) -> int:
    host, port = settings.listen
    async with zoom_endpoints(settings) as endpoints, http_session() as session:
        store = SnapshotStore()
        daemon = Daemon(args, settings, session, endpoints, store)
        app = create_app(store, settings.telemetry_path, web_config)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE)
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
            daemon.poller.interval,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        reloads: set[asyncio.Task[bool]] = set()

        def on_hangup() -> None:
            log.info("SIGHUP: reloading the configuration")
            task = asyncio.create_task(daemon.reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, on_hangup)
        polling = asyncio.create_task(daemon.poller.run_forever(stop))
        await stop.wait()
        log.info("shutting down")
        for task in (polling, *reloads):
            task.cancel()
        await asyncio.gather(polling, *reloads, return_exceptions=True)
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
    return asyncio.run(serve(args, settings, web_config))
