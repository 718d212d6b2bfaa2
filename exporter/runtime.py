"""One Zoom account in the running exporter: its own token, holds, rate-limit buckets, daily
budget, API counters, poller, store and poll task.

An `AccountRuntime` lives as long as its account is configured: a reload that changes the
account keeps all of it (a new token only when the credentials change); a reload that changes
other accounts does not touch it. Its cycles run as a task of their own, so an account whose
credentials are refused, whose daily limit is hit or whose API hangs delays no other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
from pydantic import SecretStr

from exporter import logfmt
from exporter.clock import SYSTEM_CLOCK, Clock
from exporter.logfmt import kv
from exporter.metrics.exposition import Exposition
from exporter.metrics.snapshot import Snapshot
from exporter.metrics.store import SnapshotStore
from exporter.polling.health import Health
from exporter.polling.poller import Poller, PollSettings
from exporter.polling.targets import configured_targets
from exporter.settings import DEFAULT_ACCOUNT, AccountConfig, Settings
from exporter.zoom.auth import TokenProvider
from exporter.zoom.client import ZoomClient
from exporter.zoom.limits import DailyBudget, Holds, RateLimiter, seconds_until_reset
from exporter.zoom.telemetry import ApiTelemetry
from exporter.zoom.transport import DAILY_LIMIT_REACHED

log = logging.getLogger("exporter")

DEMO_POLL_INTERVAL = 10.0
# The demo accounts' daily cap: large, so the demo polls at the interval asked for. Set
# ZOOM_EXPORTER_DAILY_REQUEST_BUDGET to watch the planner stretch the interval.
DEMO_DAILY_CAP = 10_000_000


@dataclass(frozen=True)
class ZoomAccount:
    """Where the Zoom API is, and the credentials for it."""

    api_url: str
    oauth_url: str
    account_id: str
    client_id: str
    client_secret: SecretStr


def real_account(settings: Settings, config: AccountConfig) -> ZoomAccount:
    return ZoomAccount(
        settings.api_url,
        settings.oauth_url,
        config.account_id,
        config.client_id,
        config.client_secret,
    )


def token_provider(account: ZoomAccount, clock: Clock = SYSTEM_CLOCK) -> TokenProvider:
    return TokenProvider(
        oauth_url=account.oauth_url,
        account_id=account.account_id,
        client_id=account.client_id,
        client_secret=account.client_secret,
        clock=clock,
    )


def daily_budget(settings: Settings, config: AccountConfig) -> int:
    if settings.demo and settings.daily_request_budget is None:
        return DEMO_DAILY_CAP // 2
    return config.limits.daily_budget


def poll_settings(settings: Settings, config: AccountConfig | None = None) -> PollSettings:
    """The polling settings of one account (the first, without `config`)."""
    config = config if config is not None else settings.zoom_accounts()[0]
    interval = settings.poll_interval
    if settings.demo and "poll_interval" not in settings.model_fields_set:
        interval = DEMO_POLL_INTERVAL
    return PollSettings(
        interval=interval,
        max_interval=max(interval, settings.longest_poll_interval),
        configured=configured_targets(list(config.meeting_ids), list(config.webinar_ids)),
        discovery=config.discovery,
        concurrency=settings.concurrency,
        max_staleness=settings.max_staleness,
        privacy=settings.privacy,
        series=settings.series,
    )


class AccountRuntime:
    """One account's state for as long as it is configured, and its poll task."""

    def __init__(
        self,
        config: AccountConfig,
        settings: Settings,
        zoom: ZoomAccount,
        session: aiohttp.ClientSession,
        *,
        published: Callable[[AccountRuntime], Awaitable[None]],
        saved: dict[str, Any] | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.name = config.name
        self.clock = clock
        self.config, self.settings, self.zoom, self.session = config, settings, zoom, session
        self._published = published
        self.telemetry = ApiTelemetry()
        self.store = SnapshotStore(self.telemetry.dropped, clock)  # render drops count too
        self.store.exposition = Exposition.render(Snapshot(account=self.name))
        self.holds = Holds()
        self.budget = DailyBudget(daily_budget(settings, config))
        limits = config.limits
        self.limiter = RateLimiter(
            limits.heavy_per_second, limits.resource_intensive_per_second, clock
        )
        self.token = token_provider(zoom, clock)
        resumed = self.resume(saved)
        self.poller = Poller(
            self.client(), self, poll_settings(settings, config), clock=clock, resumed=resumed
        )
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- what the self-metrics read (AccountView) ---------------------------------------------

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
        zoom = self.zoom
        return ZoomClient(
            self.session,
            api_url=zoom.api_url,
            oauth_url=zoom.oauth_url,
            account_id=zoom.account_id,
            client_id=zoom.client_id,
            client_secret=zoom.client_secret,
            timeout=self.settings.request_timeout,
            limiter=self.limiter,
            budget=self.budget,
            max_retries=self.settings.max_retries,
            token=self.token,
            holds=self.holds,
            telemetry=self.telemetry,
            clock=self.clock,
        )

    def resume(self, saved: dict[str, Any] | None) -> bool:
        """Take today's spend (and a daily-limit pause) from the account's state-file entry;
        True if it had a cycle of today."""
        if saved is None:
            return False
        now = time.time()
        budget = saved.get("budget")
        resumed = isinstance(budget, dict) and self.budget.resume(now, budget)
        until = saved.get("daily_limit_until")
        if isinstance(until, int | float) and now < until <= now + seconds_until_reset(now):
            self.holds.hold(Holds.ALL, float(until), "daily_limit", DAILY_LIMIT_REACHED)
        if resumed:
            log.info(
                "resumed today's API spend from the state file",
                extra=kv(account=self.name, used=self.budget.used(now)),
            )
        return resumed

    def state(self, now: float) -> dict[str, Any]:
        """The account's state-file entry: today's spend, and a daily-limit pause."""
        state: dict[str, Any] = {"budget": self.budget.state(now)}
        if self.zoom.account_id:  # to find the entry again after a rename
            state["account_id"] = self.zoom.account_id
        held = self.holds.active(Holds.ALL, now)
        if held is not None and held.reason == "daily_limit":
            state["daily_limit_until"] = held.until
        return state

    async def publish(self, snapshot: Snapshot, health: Health) -> None:
        """The poller's Publisher: serve the cycle under this account's name."""
        await self.store.publish(replace(snapshot, account=self.name), health)
        await self._published(self)

    # -- reload -------------------------------------------------------------------------------

    def _polled_as(self) -> tuple[object, ...]:
        """Everything of the settings that this account's polling depends on."""
        settings, config = self.settings, self.config
        return (
            config,
            self.zoom,
            poll_settings(settings, config),
            settings.request_timeout,
            settings.max_retries,
            daily_budget(settings, config),
        )

    def apply(self, settings: Settings, config: AccountConfig, zoom: ZoomAccount) -> bool:
        """New settings for this account; its token, holds, buckets, spend and counters stay
        (a new token only for new credentials). True if any of its own changed."""
        before = self._polled_as()
        token = token_provider(zoom, self.clock)
        if token.identity != self.token.identity:
            log.info(
                "reload: the credentials changed; a new token will be requested",
                extra=kv(account=self.name),
            )
            self.token = token
            self.holds.release_reason("auth_failed")  # refused credentials are not these
        self.budget.budget = daily_budget(settings, config)
        limits = config.limits
        self.limiter.set_rates(limits.heavy_per_second, limits.resource_intensive_per_second)
        self.settings, self.config, self.zoom = settings, config, zoom
        return self._polled_as() != before

    async def reconfigure(self, *, wake: bool = True) -> None:
        """Hand the poller the new settings; `wake`: for a cycle at once (an account whose
        settings did not change waits for its interval: a storm of SIGHUPs, or a reload that
        adds one account, never makes every account poll again and again)."""
        await self.poller.reconfigure(
            self.client(), poll_settings(self.settings, self.config), wake=wake
        )

    # -- the poll task ------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"poll {self.name}")

    async def _run(self) -> None:
        if self.name != DEFAULT_ACCOUNT:  # the single account's lines stay as they were
            logfmt.ACCOUNT.set(self.name)  # this task's context only
        await self.poller.run_forever(self._stop)

    async def stop(self) -> None:
        """End the poll task (a cycle in flight is cancelled)."""
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
