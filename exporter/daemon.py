"""The running exporter: wires settings, the Zoom client, the poller and the web server;
reloads on SIGHUP (and POST /-/reload); serves until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import SecretStr

from exporter import __version__, build, logfmt, signals
from exporter.clock import SYSTEM_CLOCK
from exporter.logfmt import kv
from exporter.metrics.selfmetrics import SelfMetrics
from exporter.metrics.snapshot import Snapshot
from exporter.metrics.store import SnapshotStore
from exporter.polling.health import Health
from exporter.polling.poller import Poller, PollSettings
from exporter.polling.targets import configured_targets
from exporter.settings import Settings, SettingsError
from exporter.web.app import create_app
from exporter.web.connections import KEEPALIVE_TIMEOUT, GuardedSite
from exporter.web.webconfig import WebConfig, ssl_context
from exporter.zoom.auth import TokenProvider
from exporter.zoom.client import ZoomClient
from exporter.zoom.limits import DailyBudget, Holds, RateLimiter, StateFile, seconds_until_reset
from exporter.zoom.telemetry import ApiTelemetry
from exporter.zoom.transport import DAILY_LIMIT_REACHED

log = logging.getLogger("exporter")

DEMO_POLL_INTERVAL = 10.0
# The demo account's daily cap: large, so the demo polls at the interval asked for. Set
# ZOOM_EXPORTER_DAILY_REQUEST_BUDGET to watch the planner stretch the interval.
DEMO_DAILY_CAP = 10_000_000
SHUTDOWN_GRACE = 1.0  # seconds open HTTP connections get to finish on SIGTERM
STATE_WRITE_WAIT = 2.0  # seconds SIGTERM waits for the state file
# How long a worker thread (rendering, building a large reading) may hold the GIL while the
# event loop waits for it: Python's default is 5 ms, and under load the waits add up to stalls.
GIL_SWITCH_INTERVAL = 0.001
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
        log.info("demo mode: polling the built-in Zoom simulator", extra=kv(url=sim.api_url))
        yield ZoomAccount(
            sim.api_url, sim.oauth_url, DEMO_ACCOUNT, DEMO_CLIENT, SecretStr(DEMO_SECRET)
        )


def build_client(
    session: aiohttp.ClientSession,
    settings: Settings,
    account: ZoomAccount,
    budget: DailyBudget | None = None,
) -> ZoomClient:
    """A client with state of its own (for `probe`); the daemon's share its state."""
    limits = settings.limits
    return ZoomClient(
        session,
        api_url=account.api_url,
        oauth_url=account.oauth_url,
        account_id=account.account_id,
        client_id=account.client_id,
        client_secret=account.client_secret,
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


def poll_settings(settings: Settings) -> PollSettings:
    interval = settings.poll_interval
    if settings.demo and "poll_interval" not in settings.model_fields_set:
        interval = DEMO_POLL_INTERVAL
    return PollSettings(
        interval=interval,
        max_interval=max(interval, settings.longest_poll_interval),
        configured=configured_targets(settings.meeting_ids, settings.webinar_ids),
        discovery=settings.discovery,
        concurrency=settings.concurrency,
        max_staleness=settings.max_staleness,
        privacy=settings.privacy,
        series=settings.series,
    )


# Settings a reload cannot change: they need a restart.
_RESTART_ONLY = (
    "listen_address",
    "telemetry_path",
    "demo",
    "demo_speed",
    "storage_path",
    "web_enable_lifecycle",
    "web_max_connections",
)


def token_provider(account: ZoomAccount) -> TokenProvider:
    return TokenProvider(
        oauth_url=account.oauth_url,
        account_id=account.account_id,
        client_id=account.client_id,
        client_secret=account.client_secret,
    )


class Daemon:
    """The running exporter: settings, the Zoom client and the poller; reloads on SIGHUP.

    The daemon owns everything that must outlive a reload: the token (kept unless the
    credentials change), the holds (a daily limit, refused credentials or permissions), the
    rate-limit buckets, the day's spend (also kept in the state file across restarts) and the
    API counters. A reload builds a new client around them.
    """

    def __init__(
        self,
        load: Callable[[], Settings],
        settings: Settings,
        session: aiohttp.ClientSession,
        account: ZoomAccount,
        store: SnapshotStore,
    ) -> None:
        self.load = load
        self.settings = settings
        self.session = session
        self.account = account
        self.store = store
        self.telemetry = ApiTelemetry()
        store.dropped = self.telemetry.dropped  # render drops count with the rest
        self.holds = Holds()
        self.budget = DailyBudget(daily_budget(settings))
        limits = settings.limits
        self.limiter = RateLimiter(
            limits.heavy_per_second, limits.resource_intensive_per_second, SYSTEM_CLOCK
        )
        self.token = token_provider(account)
        self.state_file = StateFile(settings.storage_path) if settings.storage_path else None
        self._writing: asyncio.Future[bool] | None = None
        self._write_stuck = False
        resumed = self._resume()
        self.poller = Poller(self.client(), self, poll_settings(settings), resumed=resumed)
        self.config_reload: tuple[bool, float | None] = (True, time.time())
        self._reload_lock = asyncio.Lock()
        self._reload_requests = self._reload_covered = 0  # reloads asked for, and read for
        self._reload_result: str | None = None

    # -- what the self-metrics read (DaemonView) ----------------------------------------------

    @property
    def health(self) -> Health:
        return self.store.health

    @property
    def token_expiry(self) -> float | None:
        return self.token.expires_at

    def overdue(self) -> float | None:
        return self.store.overdue()

    # -- the client and the state that outlives it --------------------------------------------

    def client(self) -> ZoomClient:
        return ZoomClient(
            self.session,
            api_url=self.account.api_url,
            oauth_url=self.account.oauth_url,
            account_id=self.account.account_id,
            client_id=self.account.client_id,
            client_secret=self.account.client_secret,
            timeout=self.settings.request_timeout,
            limiter=self.limiter,
            budget=self.budget,
            max_retries=self.settings.max_retries,
            token=self.token,
            holds=self.holds,
            telemetry=self.telemetry,
        )

    def _resume(self) -> bool:
        """Take today's spend (and a daily-limit pause) from the state file; True if it had
        a cycle of today."""
        if self.state_file is None or not self.state_file.claim():
            return False
        state = self.state_file.load()
        if state is None:
            return False
        now = time.time()
        budget = state.get("budget")
        resumed = isinstance(budget, dict) and self.budget.resume(now, budget)
        until = state.get("daily_limit_until")
        if isinstance(until, int | float) and now < until <= now + seconds_until_reset(now):
            self.holds.hold(Holds.ALL, float(until), "daily_limit", DAILY_LIMIT_REACHED)
        if resumed:
            log.info(
                "resumed today's API spend from the state file",
                extra=kv(used=self.budget.used(now), path=str(self.state_file.path)),
            )
        return resumed

    def _state(self) -> dict[str, Any]:
        now = time.time()
        state: dict[str, Any] = {"budget": self.budget.state(now), "saved_at": now}
        held = self.holds.active(Holds.ALL, now)
        if held is not None and held.reason == "daily_limit":
            state["daily_limit_until"] = held.until
        return state

    def save_soon(self) -> None:
        """Write the state file on a daemon thread of its own: no cycle ever waits for the disk
        (a hung mount stops the writes, never the polling). A write still running is not
        joined by another; the next cycle writes fresher numbers anyway."""
        if self.state_file is None:
            return
        if self._writing is not None and not self._writing.done():
            if not self._write_stuck:
                log.warning(
                    "the state file write has not finished; polling goes on without it",
                    extra=kv(path=str(self.state_file.path)),
                )
            self._write_stuck = True
            return
        self._write_stuck = False
        self._writing = self._write(self.state_file, self._state())

    @staticmethod
    def _write(state_file: StateFile, state: dict[str, Any]) -> asyncio.Future[bool]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()

        def settle(ok: bool) -> None:
            if not done.done():
                done.set_result(ok)

        def run() -> None:
            ok = state_file.save(state)
            with contextlib.suppress(RuntimeError):  # the loop is gone: the process is exiting
                loop.call_soon_threadsafe(settle, ok)

        threading.Thread(target=run, name="state-file", daemon=True).start()
        return done

    async def flush(self) -> None:
        """At shutdown: the last numbers to disk, waiting at most STATE_WRITE_WAIT each for a
        write in flight and for this one."""
        if self.state_file is None:
            return
        for _ in range(2):
            if self._writing is not None and not self._writing.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._writing), STATE_WRITE_WAIT)
                if not self._writing.done():
                    log.warning("the state file could not be written before exit")
                    return
            else:
                self._writing = self._write(self.state_file, self._state())

    async def publish(self, snapshot: Snapshot, health: Health) -> None:
        """The poller's Publisher: serve the cycle, then keep the day's spend on disk."""
        await self.store.publish(snapshot, health)
        self.save_soon()

    # -- reload -------------------------------------------------------------------------------

    async def reload(self) -> str | None:
        """Read the settings again and apply them, or keep the old ones and say why.

        Reloads run one at a time, in the order asked for; every failure, of any kind, is
        reported as one. Returns None on success, or the reason it failed.
        """
        ticket = self._reload_requests = self._reload_requests + 1
        async with self._reload_lock:
            if self._reload_covered >= ticket:  # a reload that began after this request
                return self._reload_result  # read the files: no need to read them again
            self._reload_covered = self._reload_requests
            self._reload_result = await self._reload_once()
            return self._reload_result

    async def _reload_once(self) -> str | None:
        try:
            settings = self.load()
            self._apply(settings)
            await self.poller.reconfigure(self.client(), poll_settings(settings))
        except SettingsError as error:
            return self._reload_failed(str(error))
        except Exception as error:  # a bug must not leave a success behind, nor kill us
            log.exception("reload failed unexpectedly")
            return self._reload_failed(f"unexpected {type(error).__name__}")
        self.config_reload = (True, time.time())
        log.info("configuration reloaded")
        return None

    def _reload_failed(self, why: str) -> str:
        log.error("reload failed, keeping the previous settings", extra=kv(error=why))
        self.config_reload = (False, self.config_reload[1])
        return why

    def _apply(self, settings: Settings) -> None:
        for name in _RESTART_ONLY:
            if getattr(settings, name) != getattr(self.settings, name):
                log.warning(
                    "reload: a setting takes effect after a restart", extra=kv(setting=name)
                )
                setattr(settings, name, getattr(self.settings, name))
        logfmt.configure(settings.log_level, settings.log_format)
        account = self.account if settings.demo else real_account(settings)
        token = token_provider(account)
        if token.identity != self.token.identity:
            log.info("reload: the credentials changed; a new token will be requested")
            self.token = token
            self.holds.release_reason("auth_failed")  # refused credentials are not these
        self.budget.budget = daily_budget(settings)
        limits = settings.limits
        self.limiter.set_rates(limits.heavy_per_second, limits.resource_intensive_per_second)
        self.settings, self.account = settings, account


async def serve(load: Callable[[], Settings], settings: Settings, web_config: WebConfig) -> int:
    """Run the exporter until SIGTERM or SIGINT; `load` reads the settings again on a reload."""
    loop = asyncio.get_running_loop()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    stop = asyncio.Event()
    reloads: set[asyncio.Task[str | None]] = set()
    daemon: Daemon | None = None
    early = signals.take_early()

    def reload_soon() -> None:
        nonlocal early
        if daemon is None:  # before the daemon runs: carried out as soon as it does
            early = True
            return
        task = asyncio.create_task(daemon.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    def on_hangup() -> None:
        log.info("SIGHUP: reloading the configuration")
        reload_soon()

    # Before anything else, and long before the port opens: a SIGHUP never ends the process.
    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    host, port = settings.listen
    async with zoom_account(settings) as account, http_session() as session:
        store = SnapshotStore()
        daemon = Daemon(load, settings, session, account, store)
        if early or signals.take_early():
            reload_soon()

        async def lifecycle_reload() -> str | None:
            assert daemon is not None
            return await daemon.reload()

        app = create_app(
            store,
            settings.telemetry_path,
            web_config,
            self_metrics=SelfMetrics(daemon),
            reloader=lifecycle_reload if settings.web_enable_lifecycle else None,
        )
        runner = web.AppRunner(
            app,
            access_log=None,
            shutdown_timeout=SHUTDOWN_GRACE,
            keepalive_timeout=KEEPALIVE_TIMEOUT,
        )
        await runner.setup()
        tls = ssl_context(web_config)
        site = GuardedSite(
            runner, host, port, ssl_context=tls, max_connections=settings.web_max_connections
        )
        try:
            await site.start()
        except OSError as error:
            await runner.cleanup()
            log.error(
                "cannot listen", extra=kv(address=settings.listen_address, error=error.strerror)
            )
            return 1
        log.info(
            "listening",
            extra=kv(
                version=__version__,
                revision=build.revision(),
                url=f"{'https' if tls else 'http'}://{host}:{port}{settings.telemetry_path}",
                poll_interval_seconds=daemon.poller.interval,
            ),
        )
        polling = asyncio.create_task(daemon.poller.run_forever(stop))
        await stop.wait()
        log.info("shutting down")
        for task in (polling, *reloads):
            task.cancel()
        await asyncio.gather(polling, *reloads, return_exceptions=True)
        await daemon.flush()
        await runner.cleanup()
    return 0
