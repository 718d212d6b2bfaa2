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
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from typing import Any, Final

import aiohttp
from aiohttp import web
from pydantic import SecretStr

from exporter import __version__, build, logfmt, signals
from exporter.clock import SYSTEM_CLOCK, Clock
from exporter.logfmt import kv
from exporter.metrics.accounts import AccountsStore
from exporter.metrics.selfmetrics import SelfMetrics
from exporter.runtime import (
    DEMO_DAILY_CAP,
    AccountRuntime,
    ZoomAccount,
    real_account,
)
from exporter.settings import DEFAULT_ACCOUNT, AccountConfig, Settings, SettingsError
from exporter.web.app import create_app
from exporter.web.connections import KEEPALIVE_TIMEOUT, GuardedSite
from exporter.web.webconfig import WebConfig, ssl_context
from exporter.zoom.client import ZoomClient
from exporter.zoom.limits import DailyBudget, RateLimiter, StateFile, utc_day

log = logging.getLogger("exporter")

SHUTDOWN_GRACE = 1.0  # seconds open HTTP connections get to finish on SIGTERM
STATE_WRITE_WAIT = 2.0  # seconds SIGTERM waits for the state file
STATE_WRITE_STUCK = 10.0  # seconds a state file write may run before it is said to hang
# How long a worker thread (rendering, building a large reading) may hold the GIL while the
# event loop waits for it: Python's default is 5 ms, and under load the waits add up to stalls.
GIL_SWITCH_INTERVAL = 0.001
# The in-process simulator's accounts and their own throwaway credentials; nothing real.
DEMO_ACCOUNT, DEMO_CLIENT, DEMO_SECRET = "demo-account", "demo-client", "demo-secret"
DEMO_ACCOUNTS: Final = (  # (name, account_id, client_id, client_secret, scenario seed)
    ("demo-eu", DEMO_ACCOUNT, DEMO_CLIENT, DEMO_SECRET, 1),
    ("demo-us", "demo-us-account", "demo-us-client", "demo-us-secret", 4),
)


@contextlib.asynccontextmanager
async def zoom_accounts(settings: Settings) -> AsyncIterator[dict[str, ZoomAccount] | None]:
    """None: the real API, for the accounts of the settings; with --demo, an in-process
    simulator serving two accounts, by name."""
    if not settings.demo:
        yield None
        return
    from exporter.simulator import RateLimits, ScaledClock, Scenario, Simulator

    speed = settings.demo_speed

    def scenario(seed: int) -> Scenario:
        # The first account's world has the seed meeting's fixed ids; the others' are their own.
        clock = ScaledClock(speed) if speed != 1 else time.time
        return Scenario(seed, clock, fixed_ids=seed == DEMO_ACCOUNTS[0][4])

    # Zoom's per-second limits for the plan; meaningless when the demo world runs faster.
    limits = RateLimits.for_plan(settings.plan) if speed == 1 else None
    (_first, account_id, client_id, secret, seed), *others = DEMO_ACCOUNTS
    async with Simulator(
        scenario(seed),
        client_id=client_id,
        client_secret=secret,
        account_id=account_id,
        daily_limit=DEMO_DAILY_CAP,
        rate_limits=limits,
    ) as sim:
        for _name, other_id, other_client, other_secret, other_seed in others:
            sim.add_account(
                other_id,
                client_id=other_client,
                client_secret=other_secret,
                scenario=scenario(other_seed),
                daily_limit=DEMO_DAILY_CAP,
                rate_limits=limits,
            )
        log.info(
            "demo mode: polling the built-in Zoom simulator",
            extra=kv(url=sim.api_url, accounts=",".join(a[0] for a in DEMO_ACCOUNTS)),
        )
        yield {
            name: ZoomAccount(sim.api_url, sim.oauth_url, account, client, SecretStr(secret_))
            for name, account, client, secret_, _seed in DEMO_ACCOUNTS
        }


def account_names(settings: Settings) -> tuple[str, ...]:
    """The names of the accounts configured (the demo's with --demo), in order."""
    if settings.demo:
        return tuple(entry[0] for entry in DEMO_ACCOUNTS)
    return tuple(config.name for config in settings.zoom_accounts())


@contextlib.asynccontextmanager
async def zoom_account(settings: Settings, name: str | None = None) -> AsyncIterator[ZoomAccount]:
    """The endpoints and credentials of the account `name` (one of account_names), or of the
    first: what `probe` calls."""
    async with zoom_accounts(settings) as demo:
        if demo is not None:
            yield demo[name] if name is not None else next(iter(demo.values()))
        else:
            configs = {config.name: config for config in settings.zoom_accounts()}
            config = configs[name] if name is not None else next(iter(configs.values()))
            yield real_account(settings, config)


def demo_configs(settings: Settings, demo: Mapping[str, ZoomAccount]) -> tuple[AccountConfig, ...]:
    """The demo accounts, with the top-level settings' plan, limits and meeting lists."""
    return tuple(
        AccountConfig(
            name=name,
            account_id=zoom.account_id,
            client_id=zoom.client_id,
            client_secret=zoom.client_secret,
            plan=settings.plan,
            limits=settings.limits,
            meeting_ids=tuple(settings.meeting_ids),
            webinar_ids=tuple(settings.webinar_ids),
            discovery=settings.discovery,
        )
        for name, zoom in demo.items()
    )


def build_client(
    session: aiohttp.ClientSession,
    settings: Settings,
    account: ZoomAccount,
    budget: DailyBudget | None = None,
) -> ZoomClient:
    """A client with state of its own (for `probe`); the daemon's accounts keep theirs."""
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


def http_session() -> aiohttp.ClientSession:
    """The session every account's calls share. No cap on its connections (aiohttp's default
    is 100): accounts whose API hangs would otherwise hold them all and stall the others;
    each account's own concurrency bounds what it opens."""
    return aiohttp.ClientSession(
        headers={"User-Agent": f"zoom-qos-exporter/{__version__}"},
        connector=aiohttp.TCPConnector(limit=0),
    )


@contextlib.asynccontextmanager
async def zoom_client(settings: Settings, name: str | None = None) -> AsyncIterator[ZoomClient]:
    """A client for the real API, or for an in-process simulator with --demo (for `probe`),
    as the account `name` (the first without)."""
    async with zoom_account(settings, name) as endpoints, http_session() as session:
        yield build_client(session, settings, endpoints)


# Settings a reload cannot change: they need a restart.
RESTART_ONLY = (
    "listen_address",
    "telemetry_path",
    "demo",
    "demo_speed",
    "storage_path",
    "web_enable_lifecycle",
    "web_max_connections",
)


def _used(entry: Mapping[str, Any]) -> int:
    """The spend of a state-file entry, if of today (-1 otherwise)."""
    budget = entry.get("budget")
    if not isinstance(budget, dict) or budget.get("day") != utc_day(time.time()):
        return -1
    used = budget.get("used")
    return used if isinstance(used, int) and not isinstance(used, bool) else -1


class Daemon:
    """The running exporter: settings, and one AccountRuntime per account it polls; reloads
    on SIGHUP.

    Each account's runtime owns what must outlive a reload: its token (kept unless its
    credentials change), its holds (a daily limit, refused credentials or permissions), its
    rate-limit buckets, its day's spend (also in the state file, keyed by account, across
    restarts) and its API counters. A reload adds and removes accounts and applies new
    settings to the others; an account it leaves alone keeps everything.
    """

    def __init__(
        self,
        load: Callable[[], Settings],
        settings: Settings,
        session: aiohttp.ClientSession,
        demo: Mapping[str, ZoomAccount] | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.load = load
        self.clock = clock
        self.settings = settings
        self.session = session
        self.demo = dict(demo) if demo is not None else None
        self.store = AccountsStore()
        self.state_file = StateFile(settings.storage_path) if settings.storage_path else None
        self._saved = self._load_state()
        self._writing: asyncio.Future[bool] | None = None
        self._write_stuck = False
        self._write_again = False  # a cycle ended while a write ran: write once more after it
        self._writes = {True: 0, False: 0}  # state file writes that succeeded, and that failed
        self._write_began = 0.0  # monotonic time the write in flight began
        self._running = False
        self.runtimes: dict[str, AccountRuntime] = {}
        configs = self._configs(settings)
        for config in configs:
            self.runtimes[config.name] = self._runtime(settings, config, {c.name for c in configs})
        self.store.set_stores({name: r.store for name, r in self.runtimes.items()})
        self.config_reload: tuple[bool, float | None] = (True, time.time())
        self._reload_lock = asyncio.Lock()
        self._reload_requests = self._reload_covered = 0  # reloads asked for, and read for
        self._reload_result: str | None = None
        if not self.runtimes:
            log.warning(
                "this replica polls no account: none falls to its shard",
                extra=kv(shard=settings.shard),
            )

    # -- accounts -----------------------------------------------------------------------------

    def _configs(self, settings: Settings) -> tuple[AccountConfig, ...]:
        if self.demo is not None:
            return demo_configs(settings, self.demo)
        return settings.my_accounts()

    def _zoom(self, settings: Settings, config: AccountConfig) -> ZoomAccount:
        if self.demo is not None:
            return self.demo[config.name]
        return real_account(settings, config)

    def _runtime(
        self, settings: Settings, config: AccountConfig, configured: Collection[str]
    ) -> AccountRuntime:
        return AccountRuntime(
            config,
            settings,
            self._zoom(settings, config),
            self.session,
            published=self._published,
            saved=self._saved_entry(config, configured),
            clock=self.clock,
        )

    def _saved_entry(
        self, config: AccountConfig, configured: Collection[str]
    ) -> dict[str, Any] | None:
        """The account's state-file entry: by its name, else (renamed) the entry of a name no
        longer configured that was the same Zoom account: Zoom's daily cap is the account's,
        whatever the exporter calls it."""
        entry = self._saved.get(config.name)
        if entry is not None and entry.get("account_id", config.account_id) != config.account_id:
            entry = None  # the name is another Zoom account's now: its spend is not this one's
        if entry is not None or not config.account_id:
            return entry
        renamed = [
            other
            for name, other in self._saved.items()
            if name not in configured and other.get("account_id") == config.account_id
        ]
        return max(renamed, key=_used, default=None)  # renamed twice today: the latest spend

    def accounts(self) -> Sequence[AccountRuntime]:
        """The accounts polled, in name order (the self-metrics' DaemonView)."""
        return tuple(self.runtimes[name] for name in sorted(self.runtimes))

    def account(self, name: str | None = None) -> AccountRuntime:
        """One account's runtime: by name, or the first (the only one, without a list)."""
        if name is None:
            return self.accounts()[0]
        return self.runtimes[name]

    @property
    def interval(self) -> float:
        return min((r.poller.interval for r in self.runtimes.values()), default=0.0)

    def start(self) -> None:
        """Start every account's poll task."""
        self._running = True
        for runtime in self.accounts():
            runtime.start()

    async def stop(self) -> None:
        self._running = False
        await asyncio.gather(*(r.stop() for r in self.runtimes.values()))

    async def _published(self, runtime: AccountRuntime) -> None:
        """An account's cycle is served: compose the exposition, keep the spend on disk."""
        if self.runtimes.get(runtime.name) is runtime:  # not one a reload just removed
            await self.store.refresh()
        self.save_soon()

    # -- the state file -----------------------------------------------------------------------

    def _load_state(self) -> dict[str, dict[str, Any]]:
        """Each account's saved entry, by name; the single-account format is "default"'s."""
        if self.state_file is None or not self.state_file.claim():
            return {}
        state = self.state_file.load()
        if state is None:
            return {}
        accounts = state.get("accounts")
        if isinstance(accounts, dict):
            return {k: v for k, v in accounts.items() if isinstance(v, dict)}
        return {DEFAULT_ACCOUNT: state} if "budget" in state else {}

    def _state(self) -> dict[str, Any]:
        """Every account's entry; those of accounts no longer polled too, while they are of
        today (one added back resumes its spend: Zoom's daily cap never forgot it)."""
        now = time.time()
        today = utc_day(now)
        accounts = {
            name: entry
            for name, entry in self._saved.items()
            if name not in self.runtimes
            and isinstance(budget := entry.get("budget"), dict)
            and budget.get("day") == today
        }
        accounts.update({name: r.state(now) for name, r in self.runtimes.items()})
        return {"accounts": dict(sorted(accounts.items())), "saved_at": now}

    def save_soon(self) -> None:
        """Write the state file on a daemon thread of its own: no cycle ever waits for the disk
        (a hung mount stops the writes, never the polling). A write still running is not
        joined by another: one more follows it with the numbers of then (with many accounts,
        cycles end while a write runs all the time; the last one's spend must reach the disk).
        Only a write running longer than STATE_WRITE_STUCK is said to hang."""
        if self.state_file is None:
            return
        if self._writing is not None and not self._writing.done():
            self._write_again = True
            if not self._write_stuck and time.monotonic() - self._write_began > STATE_WRITE_STUCK:
                log.warning(
                    "the state file write has not finished; polling goes on without it",
                    extra=kv(path=str(self.state_file.path)),
                )
                self._write_stuck = True
            return
        self._write_stuck = self._write_again = False
        self._write_began = time.monotonic()
        self._writing = self._write(self.state_file, self._state())
        self._writing.add_done_callback(self._written)

    @property
    def state_file_writes(self) -> tuple[int, int] | None:
        """(succeeded, failed) writes of the state file; None without --storage.path."""
        return None if self.state_file is None else (self._writes[True], self._writes[False])

    def _written(self, done: asyncio.Future[bool]) -> None:
        if not done.cancelled():
            self._writes[done.result()] += 1
        if self._write_again:
            self.save_soon()

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
            configs = self._apply(settings)
            await self._accounts_to(settings, configs)
        except SettingsError as error:
            return self._reload_failed(str(error))
        except Exception as error:  # a bug must not leave a success behind, nor kill us
            log.exception("reload failed unexpectedly")
            return self._reload_failed(f"unexpected {type(error).__name__}")
        self.config_reload = (True, time.time())
        log.info("configuration reloaded", extra=kv(accounts=len(self.runtimes)))
        return None

    def _reload_failed(self, why: str) -> str:
        log.error("reload failed, keeping the previous settings", extra=kv(error=why))
        self.config_reload = (False, self.config_reload[1])
        return why

    def _apply(self, settings: Settings) -> tuple[AccountConfig, ...]:
        for name in RESTART_ONLY:
            if getattr(settings, name) != getattr(self.settings, name):
                log.warning(
                    "reload: a setting takes effect after a restart", extra=kv(setting=name)
                )
                setattr(settings, name, getattr(self.settings, name))
        configs = self._configs(settings)  # may raise: nothing is changed yet
        logfmt.configure(settings.log_level, settings.log_format)
        return configs

    async def _accounts_to(self, settings: Settings, configs: Sequence[AccountConfig]) -> None:
        """Add, change and remove accounts; an account that stays keeps all of its state."""
        wanted = {config.name: config for config in configs}
        # A name whose Zoom account changed is another account: a runtime of its own (the old
        # one's spend, daily-limit pause and token are not the new account's).
        other = [
            n
            for n, r in self.runtimes.items()
            if n in wanted and wanted[n].account_id != r.config.account_id
        ]
        for name in [n for n in self.runtimes if n not in wanted] + other:
            log.info("reload: an account is no longer polled", extra=kv(account=name))
            removed = self.runtimes.pop(name)
            await removed.stop()
            self._saved[name] = removed.state(time.time())  # if it is added back today
        for name, config in wanted.items():
            runtime = self.runtimes.get(name)
            if runtime is None:
                log.info("reload: a new account is polled", extra=kv(account=name))
                runtime = self.runtimes[name] = self._runtime(settings, config, wanted)
                if self._running:
                    runtime.start()
            else:
                changed = runtime.apply(settings, config, self._zoom(settings, config))
                await runtime.reconfigure(wake=changed)
        self.settings = settings
        self.store.set_stores({name: r.store for name, r in self.runtimes.items()})


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
    async with zoom_accounts(settings) as demo, http_session() as session:
        daemon = Daemon(load, settings, session, demo)
        if early or signals.take_early():
            reload_soon()

        async def lifecycle_reload() -> str | None:
            assert daemon is not None
            return await daemon.reload()

        app = create_app(
            daemon.store,
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
                poll_interval_seconds=daemon.interval,
                accounts=",".join(daemon.runtimes),
                shard=settings.shard,
            ),
        )
        daemon.start()
        await stop.wait()
        log.info("shutting down")
        for task in reloads:
            task.cancel()
        await asyncio.gather(daemon.stop(), *reloads, return_exceptions=True)
        await daemon.flush()
        await runner.cleanup()
    return 0
