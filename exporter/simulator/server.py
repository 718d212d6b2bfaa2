"""`Simulator`: the simulator app served over real HTTP on loopback."""

from __future__ import annotations

from types import TracebackType

from aiohttp import web

from exporter.simulator.app import ACCOUNTS, State, add_account, app_state, create_app
from exporter.simulator.faults import Faults
from exporter.simulator.limits import RateLimits
from exporter.simulator.scenario import Scenario


class SimAccount:
    """One Zoom account the simulator serves: its credentials, scenario, faults, limits and
    counts (the same names as on `Simulator`, which are its first account's)."""

    def __init__(self, state: State) -> None:
        self._state = state
        self.scenario = state.scenario
        self.faults = state.faults
        self.account_id = state.credentials.account_id
        self.client_id = state.credentials.client_id

    @property
    def client_secret(self) -> str:
        return self._state.client_secret

    @property
    def stats(self) -> dict[str, int]:
        return self._state.stats.snapshot()

    def reset_stats(self) -> None:
        self._state.stats.reset()

    @property
    def daily_limit(self) -> int:
        return self._state.quota.limit

    @property
    def limit_hits(self) -> dict[str, int]:
        return dict(self._state.limit_hits)

    @property
    def quota_used(self) -> int:
        return self._state.quota.used_today(self.scenario.now())

    @property
    def quota_remaining(self) -> int:
        return self._state.quota.remaining(self.scenario.now())

    def peak_rate(self, category: str) -> int:
        return self._state.peak_rate(category)


class Simulator:
    """Serve a Scenario as Zoom's API. Use `async with sim:` or `start()`/`stop()`.

    `add_account` serves more accounts on the same port, each with its own credentials,
    scenario, limits and faults, told apart as Zoom tells them: by the token request's
    account_id, then by the bearer token.

    `rate_limits` (e.g. `RateLimits.PRO`) enforces Zoom's per-second and per-minute limits on the
    scenario clock; None (the default) enforces only the daily cap. The daily cap is
    `daily_limit`, else `rate_limits.daily`, else 30,000.
    """

    def __init__(
        self,
        scenario: Scenario | None = None,
        *,
        client_id: str = "demo-client",
        client_secret: str = "demo-secret",
        account_id: str = "demo-account",
        host: str = "127.0.0.1",
        port: int = 0,
        daily_limit: int | None = None,
        rate_limits: RateLimits | None = None,
    ) -> None:
        self.scenario = scenario if scenario is not None else Scenario()
        self.faults = Faults()
        self.client_id = client_id
        self.account_id = account_id
        self.host = host
        self.port = port
        self.app = create_app(
            self.scenario,
            self.faults,
            client_id=client_id,
            client_secret=client_secret,
            account_id=account_id,
            daily_limit=daily_limit,
            rate_limits=rate_limits,
        )
        self._runner: web.AppRunner | None = None

    def add_account(
        self,
        account_id: str,
        *,
        client_id: str,
        client_secret: str,
        scenario: Scenario | None = None,
        daily_limit: int | None = None,
        rate_limits: RateLimits | None = None,
    ) -> SimAccount:
        """Serve one more account (before or after `start`)."""
        state = add_account(
            self.app,
            scenario if scenario is not None else Scenario(),
            client_id=client_id,
            client_secret=client_secret,
            account_id=account_id,
            daily_limit=daily_limit,
            rate_limits=rate_limits,
        )
        return SimAccount(state)

    def account(self, account_id: str) -> SimAccount:
        """An account served, by its account_id (the first one's is `self.account_id`)."""
        return SimAccount(self.app[ACCOUNTS][account_id])

    async def start(self) -> None:
        """Listen on (host, port); port 0 picks a free port, readable from `base_url`."""
        if self._runner is not None:
            return
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """E.g. "http://127.0.0.1:43121" (only while started)."""
        if self._runner is None:
            raise RuntimeError("the simulator is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/v2"

    @property
    def oauth_url(self) -> str:
        return f"{self.base_url}/oauth/token"

    @property
    def stats(self) -> dict[str, int]:
        """A snapshot of request counts per endpoint name, plus "total"."""
        return app_state(self.app).stats.snapshot()

    def reset_stats(self) -> None:
        """Zero the request counts of `stats`."""
        app_state(self.app).stats.reset()

    @property
    def client_secret(self) -> str:
        """The client secret the token endpoint accepts now (after any change_credentials)."""
        return app_state(self.app).client_secret

    @property
    def rate_limits(self) -> RateLimits:
        """The per-category limits being enforced (all None when enforcement is off)."""
        return app_state(self.app).limits

    @property
    def daily_limit(self) -> int:
        """The daily request cap."""
        return app_state(self.app).quota.limit

    @property
    def limit_hits(self) -> dict[str, int]:
        """429s the simulator's own enforcement answered, by type: {"QPS": n, "Daily-limit": m}.

        Injected rate_limit faults are not counted.
        """
        return dict(app_state(self.app).limit_hits)

    @property
    def quota_used(self) -> int:
        """Requests counted against today's (scenario clock, UTC) daily cap."""
        state = app_state(self.app)
        return state.quota.used_today(self.scenario.now())

    @property
    def quota_remaining(self) -> int:
        """Requests left under today's daily cap."""
        state = app_state(self.app)
        return state.quota.remaining(self.scenario.now())

    def peak_rate(self, category: str) -> int:
        """The most accepted requests of `category` in any one window of it.

        "Heavy" counts per 1 s, "Resource-intensive" per 60 s (scenario clock); tracked whether
        or not limits are enforced, so a test can show a client stayed under a limit.
        """
        return app_state(self.app).peak_rate(category)
