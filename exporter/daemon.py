"""The running exporter: wires settings, the Zoom client, the poller and the web server; reloads
on SIGHUP; serves until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import SecretStr

from exporter import __version__, logfmt
from exporter.clock import SYSTEM_CLOCK
from exporter.metrics.store import SnapshotStore
from exporter.polling.poller import Poller
from exporter.polling.targets import configured_targets
from exporter.settings import Settings, SettingsError
from exporter.web.app import create_app
from exporter.web.webconfig import WebConfig, ssl_context
from exporter.zoom.client import ZoomClient
from exporter.zoom.limits import DailyBudget, RateLimiter

log = logging.getLogger("exporter")

DEMO_POLL_INTERVAL = 10.0
# The demo account's daily cap: large, so the demo polls at the interval asked for. Set
# ZOOM_EXPORTER_DAILY_REQUEST_BUDGET to watch the planner stretch the interval.
DEMO_DAILY_CAP = 10_000_000
SHUTDOWN_GRACE = 1.0  # seconds open HTTP connections get to finish on SIGTERM
# The in-process simulator's own throwaway credentials; nothing real.
DEMO_ACCOUNT, DEMO_CLIENT, DEMO_SECRET = "demo-account", "demo-client", "demo-secret"


@dataclass(frozen=True)
class ZoomAccount:
    """Where the Zoom API is, and the credentials for it."""

    api_url: str
    oauth_url: str
    account_id: str
    client_id: str
    client_secret: SecretStr


def real_account(settings: Settings) -> ZoomAccount:
    return ZoomAccount(
        settings.api_url,
        settings.oauth_url,
        settings.account_id or "",
        settings.client_id or "",
        settings.client_secret or SecretStr(""),
    )


@contextlib.asynccontextmanager
async def zoom_account(settings: Settings) -> AsyncIterator[ZoomAccount]:
    """The real API's endpoints, or an in-process simulator's with --demo."""
    if not settings.demo:
        yield real_account(settings)
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
        yield ZoomAccount(
            sim.api_url, sim.oauth_url, DEMO_ACCOUNT, DEMO_CLIENT, SecretStr(DEMO_SECRET)
        )


def build_client(
    session: aiohttp.ClientSession,
    settings: Settings,
    endpoints: ZoomAccount,
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
    async with zoom_account(settings) as endpoints, http_session() as session:
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
        "privacy": settings.privacy,
    }


# Settings a reload cannot change: they need a restart.
_RESTART_ONLY = ("listen_address", "telemetry_path", "demo", "demo_speed")


class Daemon:
    """The running exporter: settings, the Zoom client and the poller; reloads on SIGHUP."""

    def __init__(
        self,
        load: Callable[[], Settings],
        settings: Settings,
        session: aiohttp.ClientSession,
        endpoints: ZoomAccount,
        store: SnapshotStore,
    ) -> None:
        self.load = load
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
            settings = self.load()
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
        endpoints = self.endpoints if settings.demo else real_account(settings)
        self.budget.budget = daily_budget(settings)
        client = build_client(self.session, settings, endpoints, self.budget)
        await self.poller.reconfigure(client, **poll_options(settings))
        self.settings, self.endpoints = settings, endpoints
        self.reload_success = time.time()
        self.poller.config_reload = (True, self.reload_success)
        log.info("configuration reloaded")
        return True


async def serve(load: Callable[[], Settings], settings: Settings, web_config: WebConfig) -> int:
    """Run the exporter until SIGTERM or SIGINT; `load` reads the settings again on SIGHUP."""
    host, port = settings.listen
    async with zoom_account(settings) as endpoints, http_session() as session:
        store = SnapshotStore()
        daemon = Daemon(load, settings, session, endpoints, store)
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
