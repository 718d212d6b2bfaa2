"""The Zoom API client: Server-to-Server OAuth, timeouts, pagination, typed errors.

One aiohttp session serves every call. Secrets stay inside this module: errors and logs name
the endpoint and Zoom's code, never a token or the client secret.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
from pydantic import SecretStr, ValidationError
from yarl import URL

from exporter.clock import SYSTEM_CLOCK, Clock
from exporter.zoom.limits import (
    HEAVY,
    RESOURCE_INTENSIVE,
    Backoff,
    DailyBudget,
    RateLimiter,
    parse_retry_after,
    seconds_until_reset,
)
from exporter.zoom.models import Kind, LiveMeeting, Participant

log = logging.getLogger(__name__)

M = TypeVar("M", LiveMeeting, Participant)

QOS_PAGE_SIZE = 10  # Zoom's cap for the participant QoS lists
DISCOVERY_PAGE_SIZE = 300
TOKEN_REFRESH_MARGIN = 300.0  # renew this many seconds before the token expires
MAX_PAGES = 10_000  # a guard against a server that never stops paginating
MAX_RETRY_WAIT = 30.0  # a 429 asking for a longer wait fails the call instead of holding it
DEFAULT_BACKOFF = Backoff(base=0.5, cap=30.0)  # retries of 5xx, timeouts, resets, bad bodies
TOKEN_BACKOFF = Backoff(base=2.0, cap=120.0)  # the token endpoint is down or unreachable
CREDENTIALS_BACKOFF = Backoff(base=60.0, cap=600.0)  # Zoom refused the credentials
OAUTH_ENDPOINT = "oauth_token"
DISCOVERY_ENDPOINTS = frozenset({"list_meetings", "list_webinars"})

ZOOM_CODE_INVALID_TOKEN = 124
ZOOM_CODE_PAGE_TOKEN = 300
ZOOM_CODE_NOT_FOUND = 3001


class ZoomError(Exception):
    """Any failure talking to Zoom. `str()` is safe to log."""

    def __init__(self, endpoint: str, message: str) -> None:
        super().__init__(f"{endpoint}: {message}")
        self.endpoint = endpoint
        self.detail = message


class ZoomAPIError(ZoomError):
    """Zoom answered with an error status; `code` is Zoom's own error code when it sent one."""

    def __init__(self, endpoint: str, status: int, code: int | None, message: str) -> None:
        detail = f"HTTP {status}" + (f", Zoom code {code}" if code is not None else "")
        super().__init__(endpoint, f"{detail}: {message}" if message else detail)
        self.status = status
        self.code = code
        self.zoom_message = message

    @property
    def gone(self) -> bool:
        """The meeting (or participant) is not live any more: 404 with code 3001."""
        return self.status == 404 and self.code == ZOOM_CODE_NOT_FOUND


class ZoomRateLimitError(ZoomAPIError):
    """HTTP 429 that retries did not get past; `limit_type` is X-RateLimit-Type."""

    def __init__(self, endpoint: str, limit_type: str, message: str) -> None:
        super().__init__(endpoint, 429, None, message or f"rate limited ({limit_type})")
        self.limit_type = limit_type


class ZoomPausedError(ZoomError):
    """No call was made: calls are paused until `until` (epoch seconds)."""

    reason = "paused"

    def __init__(self, endpoint: str, until: float, why: str) -> None:
        when = datetime.fromtimestamp(until, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        super().__init__(endpoint, f"{why}; calls paused until {when}")
        self.until = until


class ZoomDailyLimitError(ZoomPausedError):
    """Zoom answered 429 Daily-limit: the account's daily cap is spent until the reset."""

    reason = "daily_limit"


class ZoomBudgetExhaustedError(ZoomPausedError):
    """This exporter's own daily request budget is spent until the reset."""

    reason = "budget_exhausted"


class ZoomTokenError(ZoomError):
    """No access token: nothing can be called until one is obtained."""


class ZoomAuthError(ZoomTokenError):
    """The token endpoint refused the credentials."""


class ZoomTokenUnavailableError(ZoomTokenError):
    """The token endpoint is down, slow, or answered nonsense; retried with backoff."""


class ZoomTransportError(ZoomError):
    """No usable answer: timeout, connection failure, or a body that is not the JSON we expect.

    `reason` is "timeout", "connection" or "malformed" (the label of zoom_api_retries_total).
    """

    def __init__(self, endpoint: str, message: str, reason: str = "malformed") -> None:
        super().__init__(endpoint, message)
        self.reason = reason


def encode_meeting_id(meeting_id: str) -> str:
    """Percent-encode an id for a URL path; UUIDs that start with / or hold // twice over."""
    once = quote(meeting_id, safe="")
    if meeting_id.startswith("/") or "//" in meeting_id:
        return quote(once, safe="")
    return once


def endpoint_name(kind: Kind, what: str) -> str:
    """Stable `endpoint` label values, e.g. meeting_participants_qos."""
    return f"{kind}_{what}"


def category_of(endpoint: str) -> str:
    """Zoom's rate-limit category of an endpoint: discovery lists are Resource-intensive."""
    return RESOURCE_INTENSIVE if endpoint in DISCOVERY_ENDPOINTS else HEAVY


class Tally:
    """A counter by a pair of label values, e.g. (endpoint, code); read as sorted triples."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str]] = Counter()

    def add(self, first: str, second: str) -> None:
        self._counts[(first, second)] += 1

    def snapshot(self) -> tuple[tuple[str, str, int], ...]:
        return tuple((a, b, n) for (a, b), n in sorted(self._counts.items()))

    def total(self, *, excluding: str | None = None) -> int:
        return sum(n for (first, _), n in self._counts.items() if first != excluding)


class ZoomClient:
    """Zoom's Dashboard QoS API, paced and budgeted, with bounded retries.

    - `limiter` paces calls per rate-limit category (None: no pacing).
    - `budget` counts every API call against the daily budget; at zero, calls stop until the
      reset (None: no budget).
    - 5xx answers, timeouts, dropped connections and bodies that are not JSON are retried up
      to `max_retries` times with exponential backoff and jitter; a 429 QPS waits its
      Retry-After (plus jitter) first; a 429 Daily-limit pauses every call until the reset.
    - The token is renewed once on 401/124; a failing token endpoint is retried with backoff.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        api_url: str,
        oauth_url: str,
        account_id: str,
        client_id: str,
        client_secret: SecretStr,
        timeout: float = 10.0,
        clock: Clock = SYSTEM_CLOCK,
        limiter: RateLimiter | None = None,
        budget: DailyBudget | None = None,
        max_retries: int = 3,
        backoff: Backoff = DEFAULT_BACKOFF,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._session = session
        self._api_url = api_url.rstrip("/")
        self._oauth_url = oauth_url
        self._account_id = account_id
        credentials = f"{client_id}:{client_secret.get_secret_value()}".encode()
        self._basic_auth = SecretStr("Basic " + base64.b64encode(credentials).decode("ascii"))
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._clock = clock
        self.limiter = limiter
        self.budget = budget
        self._max_retries = max_retries
        self._backoff = backoff
        self._rng = rng
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_lock = asyncio.Lock()
        self._token_failures = 0
        self._token_retry_at = float("-inf")
        self._token_error: ZoomTokenError | None = None
        self.paused_until: float | None = None  # epoch; set by a 429 Daily-limit
        self.requests = Tally()  # (endpoint, HTTP code or "error")
        self.rate_limited = Tally()  # (category, type) of 429 answers
        self.retries = Tally()  # (endpoint, reason)

    # -- OAuth -------------------------------------------------------------------------------

    async def _access_token(self) -> str:
        async with self._token_lock:
            if self._token is not None and self._clock.monotonic() < self._token_expires:
                return self._token
            if self._token_error is not None and self._clock.monotonic() < self._token_retry_at:
                raise type(self._token_error)(OAUTH_ENDPOINT, self._token_error.detail)
            try:
                token = await self._fetch_token()
            except ZoomTokenError as error:
                self._token_failed(error)
                raise
            if self._token_failures:
                log.info("obtained an access token again after %d failures", self._token_failures)
            self._token_failures, self._token_error = 0, None
            return token

    def _token_failed(self, error: ZoomTokenError) -> None:
        policy = CREDENTIALS_BACKOFF if isinstance(error, ZoomAuthError) else TOKEN_BACKOFF
        # At least half the exponential step: a refused secret is never retried in a tight loop.
        step = min(policy.cap, policy.base * 2.0**self._token_failures)
        delay = step / 2 + policy.delay(self._token_failures, self._rng) / 2
        self._token_failures += 1
        self._token_error = error
        self._token_retry_at = self._clock.monotonic() + delay
        log.error("%s; next token request in %.0f s", error, delay)

    def invalidate_token(self) -> None:
        self._token = None

    async def _fetch_token(self) -> str:
        form = {"grant_type": "account_credentials", "account_id": self._account_id}
        headers = {"Authorization": self._basic_auth.get_secret_value()}
        try:
            status, payload, _ = await self._send(
                OAUTH_ENDPOINT, "POST", URL(self._oauth_url), data=form, headers=headers
            )
        except ZoomTransportError as error:
            raise ZoomTokenUnavailableError(OAUTH_ENDPOINT, error.detail) from None
        if status != 200:
            reason = _field(payload, "reason") or _field(payload, "error") or "rejected"
            if status in (400, 401, 403):
                raise ZoomAuthError(
                    OAUTH_ENDPOINT,
                    f"Zoom refused the credentials (HTTP {status}: {reason}); check "
                    "ZOOM_EXPORTER_ACCOUNT_ID, ZOOM_EXPORTER_CLIENT_ID and "
                    "ZOOM_EXPORTER_CLIENT_SECRET",
                )
            raise ZoomTokenUnavailableError(OAUTH_ENDPOINT, f"HTTP {status}: {reason}")
        token = payload.get("access_token")
        if not isinstance(token, str) or not token:
            raise ZoomTokenUnavailableError(OAUTH_ENDPOINT, "the answer has no access_token")
        expires_in = payload.get("expires_in")
        lifetime = float(expires_in) if isinstance(expires_in, int | float) else 3600.0
        margin = min(TOKEN_REFRESH_MARGIN, lifetime / 10)
        self._token = token
        self._token_expires = self._clock.monotonic() + lifetime - margin
        log.debug("obtained an access token valid for %.0f s", lifetime)
        return token

    # -- requests ----------------------------------------------------------------------------

    async def _send(
        self, endpoint: str, method: str, url: URL, **kwargs: Any
    ) -> tuple[int, dict[str, Any], Mapping[str, str]]:
        """One HTTP call; returns (status, JSON object, headers). Counts it, whatever happens."""
        try:
            async with self._session.request(
                method, url, timeout=self._timeout, **kwargs
            ) as response:
                raw = await response.read()
                status = response.status
                headers = response.headers
        except TimeoutError:
            self.requests.add(endpoint, "error")
            raise ZoomTransportError(endpoint, "timed out", "timeout") from None
        except aiohttp.ClientError as error:
            self.requests.add(endpoint, "error")
            raise ZoomTransportError(endpoint, type(error).__name__, "connection") from None
        self.requests.add(endpoint, str(status))
        try:
            payload = json.loads(raw) if raw else {}
        except (ValueError, UnicodeDecodeError):
            if status >= 400:
                return status, {}, headers
            raise ZoomTransportError(
                endpoint, f"HTTP {status} with a body that is not JSON"
            ) from None
        if not isinstance(payload, dict):
            raise ZoomTransportError(endpoint, f"HTTP {status} with JSON that is not an object")
        return status, payload, headers

    def paused(self, endpoint: str = "api") -> ZoomPausedError | None:
        """Why a call to `endpoint` cannot go now (Zoom's daily cap, or our budget), or None."""
        now = self._clock.time()
        if self.paused_until is not None:
            if now < self.paused_until:
                return ZoomDailyLimitError(
                    endpoint, self.paused_until, "Zoom's daily request limit is reached"
                )
            log.info("the daily limit pause is over; polling resumes")
            self.paused_until = None
        if self.budget is not None and self.budget.remaining(now) <= 0:
            return ZoomBudgetExhaustedError(
                endpoint,
                now + seconds_until_reset(now),
                f"the daily request budget of {self.budget.budget} is spent",
            )
        return None

    def _observe(self, headers: Mapping[str, str]) -> None:
        remaining = headers.get("X-RateLimit-Remaining", "").strip()
        if self.budget is not None and remaining.isdigit():
            self.budget.observe(self._clock.time(), int(remaining))

    async def _retry(self, endpoint: str, reason: str, attempt: int, wait: float | None) -> None:
        self.retries.add(endpoint, reason)
        delay = self._backoff.delay(attempt, self._rng) if wait is None else wait
        log.debug("%s: retrying in %.2f s (%s)", endpoint, delay, reason)
        await self._clock.sleep(delay)

    def _rate_limited(
        self, endpoint: str, payload: dict[str, Any], headers: Mapping[str, str], attempt: int
    ) -> float:
        """Handle a 429; return how long to wait before a retry, or raise if there is none."""
        category = headers.get("X-RateLimit-Category") or category_of(endpoint)
        limit_type = headers.get("X-RateLimit-Type") or "unknown"
        self.rate_limited.add(category, limit_type)
        now = self._clock.time()
        after = parse_retry_after(headers.get("Retry-After"), now)
        if limit_type == "Daily-limit":
            until = now + (after if after is not None else seconds_until_reset(now))
            if self.paused_until is None or until > self.paused_until:
                self.paused_until = until
            error = ZoomDailyLimitError(endpoint, until, "Zoom's daily request limit is reached")
            log.error("%s; the last data is kept and served meanwhile", error)
            raise error
        wait = (after if after is not None else self._backoff.delay(attempt, self._rng)) + (
            self._rng() * self._backoff.base
        )
        if self.limiter is not None:
            self.limiter.pause(category_of(endpoint), wait)
        if attempt >= self._max_retries or wait > MAX_RETRY_WAIT:
            raise ZoomRateLimitError(endpoint, limit_type, _field(payload, "message"))
        return 0.0 if self.limiter is not None else wait  # the paused bucket does the waiting

    def _url(self, path: str, params: dict[str, str]) -> URL:
        return URL(self._api_url + path, encoded=True).update_query(params)

    async def get(self, endpoint: str, path: str, params: dict[str, str]) -> dict[str, Any]:
        """GET an API path (already percent-encoded): paced, budgeted, retried when it helps."""
        url = self._url(path, params)
        category = category_of(endpoint)
        renewed = False
        attempt = 0
        while True:
            paused = self.paused(endpoint)
            if paused is not None:
                raise paused
            if self.limiter is not None:
                await self.limiter.acquire(category)
            token = await self._access_token()
            if self.budget is not None:
                self.budget.spend(self._clock.time())
            headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
            try:
                status, payload, answer = await self._send(endpoint, "GET", url, headers=headers)
            except ZoomTransportError as error:
                if attempt >= self._max_retries:
                    raise
                await self._retry(endpoint, error.reason, attempt, None)
                attempt += 1
                continue
            self._observe(answer)
            code = _code(payload)
            if status == 401 and code == ZOOM_CODE_INVALID_TOKEN and not renewed:
                log.info("%s: access token rejected (code 124); renewing it once", endpoint)
                self.invalidate_token()
                self.retries.add(endpoint, "token_renewed")
                renewed = True
                continue
            if status == 429:
                wait = self._rate_limited(endpoint, payload, answer, attempt)
                await self._retry(endpoint, "rate_limited", attempt, wait)
                attempt += 1
                continue
            if status >= 500 and attempt < self._max_retries:
                await self._retry(endpoint, "server_error", attempt, None)
                attempt += 1
                continue
            if status >= 400:
                raise ZoomAPIError(endpoint, status, code, _field(payload, "message"))
            return payload

    async def collect(
        self,
        endpoint: str,
        path: str,
        params: dict[str, str],
        page_size: int,
        key: str,
        model: type[M],
    ) -> list[M]:
        """Every item under `key` across all pages, following `next_page_token`.

        A page token that expired mid-listing (code 300) restarts the listing once.
        """
        first = {**params, "page_size": str(page_size)}
        query, seen, found = first, set[str](), list[M]()
        restarted = False
        while len(seen) < MAX_PAGES:
            try:
                page = await self.get(endpoint, path, query)
            except ZoomAPIError as error:
                if error.code != ZOOM_CODE_PAGE_TOKEN or "next_page_token" not in query:
                    raise
                if restarted:
                    raise ZoomAPIError(
                        endpoint, 400, ZOOM_CODE_PAGE_TOKEN, "the next page token expired twice"
                    ) from None
                restarted = True
                self.retries.add(endpoint, "page_token_expired")
                log.info("%s: the next page token expired; listing again from the start", endpoint)
                query, seen, found = first, set(), []
                continue
            found.extend(_validated(model, page.get(key), endpoint))
            token = page.get("next_page_token")
            if not isinstance(token, str) or not token:
                return found
            if token in seen:
                raise ZoomTransportError(endpoint, "pagination repeats a next_page_token")
            seen.add(token)
            query = {**first, "next_page_token": token}
        raise ZoomTransportError(endpoint, f"more than {MAX_PAGES} pages")

    # -- endpoints ---------------------------------------------------------------------------

    async def live_meetings(self, kind: Kind) -> list[LiveMeeting]:
        """Discovery: the live meetings (or webinars) of the account.

        Zoom wants a date range even for live meetings: yesterday to today (UTC), so a meeting
        that began before midnight is still listed.
        """
        key = f"{kind}s"
        today = datetime.fromtimestamp(self._clock.time(), UTC).date()
        params = {
            "type": "live",
            "from": (today - timedelta(days=1)).isoformat(),
            "to": today.isoformat(),
        }
        return await self.collect(
            f"list_{key}", f"/metrics/{key}", params, DISCOVERY_PAGE_SIZE, key, LiveMeeting
        )

    async def participants_qos(self, kind: Kind, meeting_id: str) -> list[Participant]:
        """Every participant's QoS in a live meeting or webinar, across all pages."""
        endpoint = endpoint_name(kind, "participants_qos")
        path = f"/metrics/{kind}s/{encode_meeting_id(meeting_id)}/participants/qos"
        return await self.collect(
            endpoint, path, {"type": "live"}, QOS_PAGE_SIZE, "participants", Participant
        )

    async def participant_qos(
        self, kind: Kind, meeting_id: str, participant_id: str
    ) -> Participant:
        """One participant's QoS, from the single-participant endpoint."""
        endpoint = endpoint_name(kind, "participant_qos")
        path = (
            f"/metrics/{kind}s/{encode_meeting_id(meeting_id)}"
            f"/participants/{quote(participant_id, safe='')}/qos"
        )
        payload = await self.get(endpoint, path, {"type": "live"})
        try:
            return Participant.model_validate(payload)
        except ValidationError:
            raise ZoomTransportError(
                endpoint, "the participant does not match the schema"
            ) from None


def _validated(model: type[M], items: Any, endpoint: str) -> list[M]:
    """Validate list items one by one: a malformed record is skipped and logged, not fatal."""
    if items is None:
        return []
    if not isinstance(items, list):
        raise ZoomTransportError(endpoint, "the list in the answer is not a JSON array")
    out: list[M] = []
    for index, item in enumerate(items):
        try:
            out.append(model.model_validate(item))
        except ValidationError:
            log.warning("%s: skipped record %d, which does not match the schema", endpoint, index)
    return out


def _code(payload: dict[str, Any]) -> int | None:
    code = payload.get("code")
    if isinstance(code, int) and not isinstance(code, bool):
        return code
    if isinstance(code, str) and code.isdigit():
        return int(code)
    return None


def _field(payload: dict[str, Any], name: str) -> str:
    value = payload.get(name)
    return value[:200] if isinstance(value, str) else ""
