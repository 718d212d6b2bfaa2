"""One call to Zoom, and what to do with its answer.

`classify` is a pure function of the answer (status, Zoom's code, headers, message) that says
what the retry loop in `Transport.get` does next; `daily_remaining` says when a rate-limit
header may be trusted as the day's remaining count. `Transport` holds the I/O: pacing, the
budget, holds, the token, and bounded retries.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import random
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
from yarl import URL

from exporter.clock import SYSTEM_CLOCK, Clock
from exporter.logfmt import kv
from exporter.zoom.auth import CREDENTIALS_BACKOFF, TokenProvider, redact
from exporter.zoom.errors import (
    ZOOM_CODE_INVALID_TOKEN,
    ZoomAPIError,
    ZoomAuthError,
    ZoomBudgetExhaustedError,
    ZoomDailyLimitError,
    ZoomForbiddenError,
    ZoomPausedError,
    ZoomRateLimitError,
    ZoomTransportError,
)
from exporter.zoom.limits import (
    HEAVY,
    RESOURCE_INTENSIVE,
    Backoff,
    DailyBudget,
    Holds,
    RateLimiter,
    parse_retry_after,
    seconds_until_reset,
)
from exporter.zoom.telemetry import ApiTelemetry

log = logging.getLogger(__name__)

DEFAULT_BACKOFF = Backoff(base=0.5, cap=30.0)  # retries of 5xx, timeouts, resets, bad bodies
MAX_RETRY_WAIT = 30.0  # a 429 asking for a longer wait fails the call instead of waiting
# A per-second limit never needs a long wait: a QPS Retry-After is capped at a minute (longer
# ones are either a daily limit in disguise or nonsense), and while it lasts only that
# rate-limit category is held.
MAX_QPS_RETRY_AFTER = 60.0
# The largest answer accepted from Zoom, before and after decompression: a 10-participant QoS
# page is about 30 KiB, a 300-meeting discovery page about 150 KiB.
MAX_BODY_BYTES = 4 * 1024 * 1024
# Larger bodies are decompressed and decoded in a thread. zlib releases the GIL, so the loop
# runs meanwhile; json's C decoder does not, so what bounds the loop's stall is the size cap
# (about 30 ms to decode 4 MiB of QoS pages).
THREAD_DECODE_BYTES = 512 * 1024
_CHUNK = 64 * 1024
DISCOVERY_ENDPOINTS = frozenset({"list_meetings", "list_webinars"})
# A remaining count is the day's only beside a limit at least this large (Zoom's daily caps are
# 30,000 and up; per-second limits are tens).
DAILY_LIMIT_FLOOR = 1000
ZOOM_CODE_NO_FEATURE = 200  # "Only available for paid account and enabled Dashboard feature."
ZOOM_CODES_NO_SCOPE = frozenset({4700, 4711})  # the token lacks a scope
LIMIT_TYPES = frozenset({"QPS", "Daily-limit"})
CATEGORIES = frozenset({HEAVY, RESOURCE_INTENSIVE})
DAILY_LIMIT_REACHED = "Zoom's daily request limit is reached"


class Action(enum.Enum):
    """What the retry loop does with an answer."""

    OK = "ok"
    RENEW_TOKEN = "renew_token"  # 401/124: the token was revoked or expired
    RETRY = "retry"  # 5xx: try again after a backoff
    QPS_LIMIT = "qps_limit"  # 429 per-second (or unknown) limit: wait, then try again
    DAILY_LIMIT = "daily_limit"  # 429 daily cap: hold every call until the reset
    AUTH_FAILED = "auth_failed"  # 401 other than 124: the credentials no longer work
    FORBIDDEN = "forbidden"  # 403, a missing scope, the Dashboard feature off or not paid
    FAIL = "fail"  # any other error: the call fails


def classify(status: int, code: int | None, headers: Mapping[str, str], message: str) -> Action:
    """Decide what an answer means. Pure: the same answer always gets the same action."""
    text = message.lower()
    if status == 401:
        return Action.RENEW_TOKEN if code == ZOOM_CODE_INVALID_TOKEN else Action.AUTH_FAILED
    if status == 429:
        kind = limit_type(headers)
        if kind == "Daily-limit" or (kind != "QPS" and "daily" in text):
            return Action.DAILY_LIMIT
        return Action.QPS_LIMIT
    if status == 403 or code in ZOOM_CODES_NO_SCOPE:
        return Action.FORBIDDEN
    if code == ZOOM_CODE_NO_FEATURE and (status >= 400 or "paid account" in text):
        return Action.FORBIDDEN  # Zoom has sent this one with HTTP 400, and with HTTP 200
    if status >= 500:
        return Action.RETRY
    if status >= 400:
        return Action.FAIL
    return Action.OK


def limit_type(headers: Mapping[str, str]) -> str:
    """X-RateLimit-Type as one of the documented values ("QPS", "Daily-limit"), whatever its
    case, or "" for none or anything else."""
    value = headers.get("X-RateLimit-Type", "").strip().lower()
    return {"qps": "QPS", "daily-limit": "Daily-limit"}.get(value, "")


def daily_remaining(headers: Mapping[str, str]) -> int | None:
    """X-RateLimit-Remaining, when it is the day's count: beside an X-RateLimit-Limit of daily
    size, or on a Daily-limit answer. Anything else (a per-second figure, a 0 on a QPS 429, a
    value that is no number) is not trusted."""
    remaining = headers.get("X-RateLimit-Remaining", "").strip()
    if not remaining.isdigit() or len(remaining) > 9:
        return None
    kind = limit_type(headers)
    if kind == "QPS":
        return None
    limit = headers.get("X-RateLimit-Limit", "").strip()
    if kind == "Daily-limit":
        return int(remaining)
    if not limit.isdigit() or len(limit) > 9 or int(limit) < DAILY_LIMIT_FLOOR:
        return None
    return min(int(remaining), int(limit))


def category_of(endpoint: str) -> str:
    """Zoom's rate-limit category of an endpoint: discovery lists are Resource-intensive."""
    return RESOURCE_INTENSIVE if endpoint in DISCOVERY_ENDPOINTS else HEAVY


def scope_of(endpoint: str) -> str:
    """The permission scope an endpoint needs: webinars' and meetings' are separate."""
    return "webinar" if "webinar" in endpoint else "meeting"


def _number(text: str) -> int | float:
    """JSON integers of more than 18 digits become floats (inf beyond a float's range), so no
    number can make json.loads raise or a later conversion overflow."""
    return int(text) if len(text) <= 18 else float(text)


def decode_json(raw: bytes) -> Any:
    """Zoom's JSON: NaN and Infinity are no value; huge integers become floats. Raises
    ValueError (UnicodeDecodeError and JSONDecodeError among them) or RecursionError."""
    return json.loads(raw, parse_int=_number, parse_constant=lambda _: None)


class BodyTooLarge(Exception):
    """The answer is larger than MAX_BODY_BYTES, compressed or not."""


def decompress(raw: bytes, encoding: str, limit: int = MAX_BODY_BYTES) -> bytes:
    """`raw` decoded per Content-Encoding (identity, gzip, deflate), never more than `limit`
    bytes out: a gzip bomb stops at the limit. Raises BodyTooLarge or ValueError."""
    coding = encoding.strip().lower()
    if coding in ("", "identity"):
        return raw
    if coding not in ("gzip", "x-gzip", "deflate"):
        raise ValueError(f"unsupported Content-Encoding {coding[:20]!r}")
    # 47: a gzip or zlib header, detected; raw deflate (some servers' "deflate") as a fallback.
    for wbits in (47, -15):
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(raw, limit + 1)
        except zlib.error:
            continue
        if len(out) > limit:
            raise BodyTooLarge
        return out
    raise ValueError("a compressed body that does not decompress")


def zoom_code(payload: dict[str, Any]) -> int | None:
    code = payload.get("code")
    if isinstance(code, int) and not isinstance(code, bool) and abs(code) < 10**9:
        return code
    if isinstance(code, str) and code.isdigit() and len(code) < 10:
        return int(code)
    return None


def zoom_message(payload: dict[str, Any]) -> str:
    value = payload.get("message")
    return redact(value)[:200] if isinstance(value, str) else ""


TOO_LARGE = "too_large"  # ZoomTransportError.reason of a refused body: never retried


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    """The raw (maybe compressed) body, refused as soon as it passes MAX_BODY_BYTES."""
    declared = response.content_length
    if declared is not None and declared > MAX_BODY_BYTES:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _decode(raw: bytes, encoding: str) -> Any:
    body = decompress(raw, encoding)
    return decode_json(body) if body else {}


class Transport:
    """Zoom's API, one GET at a time: paced, budgeted, held, authorised and retried.

    - `limiter` paces calls per rate-limit category (None: no pacing).
    - `budget` counts every API call against the daily budget; at zero, calls stop until the
      reset (None: no budget).
    - `holds` keeps calls back after a daily limit, refused credentials or a permission error.
    - 5xx, timeouts, dropped connections and bodies that are not JSON are retried up to
      `max_retries` times with exponential backoff and jitter; a 429 QPS waits its
      Retry-After (plus jitter) first; a 429 Daily-limit holds every call until the reset.
    - The token is renewed once on 401/124 (compare-and-clear, see `auth`).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        token: TokenProvider,
        *,
        api_url: str,
        timeout: float = 10.0,
        clock: Clock = SYSTEM_CLOCK,
        limiter: RateLimiter | None = None,
        budget: DailyBudget | None = None,
        holds: Holds | None = None,
        telemetry: ApiTelemetry | None = None,
        max_retries: int = 3,
        backoff: Backoff = DEFAULT_BACKOFF,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._session = session
        self.token = token
        self._api_url = api_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._clock = clock
        self.limiter = limiter
        self.budget = budget
        self.holds = holds if holds is not None else Holds()
        self.telemetry = telemetry if telemetry is not None else ApiTelemetry()
        self._max_retries = max_retries
        self._backoff = backoff
        self._rng = rng

    async def send(
        self, endpoint: str, method: str, url: URL, **kwargs: Any
    ) -> tuple[int, dict[str, Any], Mapping[str, str]]:
        """One HTTP call; returns (status, JSON object, headers). Counts it, whatever happens.

        The body is read in chunks and refused beyond MAX_BODY_BYTES, compressed or not (we
        decompress it ourselves, capped); a large one is decoded off the event loop.
        """
        began = self._clock.monotonic()
        headers_out = {**kwargs.pop("headers", {}), "Accept-Encoding": "gzip, deflate"}
        try:
            async with self._session.request(
                method,
                url,
                timeout=self._timeout,
                headers=headers_out,
                auto_decompress=False,
                **kwargs,
            ) as response:
                status = response.status
                headers = response.headers
                raw = await _read_capped(response)
        except BodyTooLarge:
            self.telemetry.requests.add(endpoint, "error")
            raise ZoomTransportError(
                endpoint, f"the answer is larger than {MAX_BODY_BYTES // 2**20} MiB", TOO_LARGE
            ) from None
        except TimeoutError:
            self.telemetry.requests.add(endpoint, "error")
            raise ZoomTransportError(endpoint, "timed out", "timeout") from None
        except aiohttp.ClientError as error:
            self.telemetry.requests.add(endpoint, "error")
            raise ZoomTransportError(endpoint, type(error).__name__, "connection") from None
        finally:
            elapsed = max(0.0, self._clock.monotonic() - began)
            self.telemetry.durations.labels(endpoint).observe(elapsed)
        encoding = headers.get("Content-Encoding", "")
        try:
            if len(raw) > THREAD_DECODE_BYTES:
                payload = await asyncio.to_thread(_decode, raw, encoding)
            else:
                payload = _decode(raw, encoding)
        except BodyTooLarge:  # a bomb: refused like a body too large before decompression
            self.telemetry.requests.add(endpoint, "error")
            raise ZoomTransportError(
                endpoint, f"the answer is larger than {MAX_BODY_BYTES // 2**20} MiB", TOO_LARGE
            ) from None
        except (ValueError, RecursionError):
            self.telemetry.requests.add(endpoint, str(status))
            if status >= 400:
                return status, {}, headers
            raise ZoomTransportError(
                endpoint, f"HTTP {status} with a body that is not JSON"
            ) from None
        self.telemetry.requests.add(endpoint, str(status))
        if not isinstance(payload, dict):
            raise ZoomTransportError(endpoint, f"HTTP {status} with JSON that is not an object")
        return status, payload, headers

    def paused(
        self, endpoint: str = "api"
    ) -> ZoomPausedError | ZoomAuthError | ZoomForbiddenError | None:
        """Why a call to `endpoint` cannot go now, or None: a hold (Zoom's daily cap, refused
        credentials, a permission error) or our own budget."""
        now = self._clock.time()
        held = self.holds.active(Holds.ALL if endpoint == "api" else scope_of(endpoint), now)
        if held is not None:
            if held.reason == "daily_limit":
                return ZoomDailyLimitError(endpoint, held.until, held.message)
            if held.reason == "forbidden":
                return ZoomForbiddenError(endpoint, held.message, held.until)
            return ZoomAuthError(endpoint, held.message)
        if self.budget is not None and self.budget.remaining(now) <= 0:
            return ZoomBudgetExhaustedError(
                endpoint,
                now + seconds_until_reset(now),
                f"the daily request budget of {self.budget.budget} is spent",
            )
        return None

    def _observe(self, headers: Mapping[str, str]) -> None:
        remaining = daily_remaining(headers)
        if self.budget is not None and remaining is not None:
            self.budget.observe(self._clock.time(), remaining)

    async def _retry(self, endpoint: str, reason: str, attempt: int, wait: float | None) -> None:
        self.telemetry.retries.add(endpoint, reason)
        delay = self._backoff.delay(attempt, self._rng) if wait is None else wait
        log.debug("retrying", extra=kv(endpoint=endpoint, reason=reason, delay=round(delay, 2)))
        await self._clock.sleep(delay)

    def _limit_labels(self, endpoint: str, headers: Mapping[str, str], action: Action) -> None:
        category = headers.get("X-RateLimit-Category", "").strip()
        if category not in CATEGORIES:
            category = category_of(endpoint)
        kind = "Daily-limit" if action is Action.DAILY_LIMIT else "QPS"
        self.telemetry.rate_limited.add(category, kind)

    def _daily_limit(self, endpoint: str, headers: Mapping[str, str]) -> ZoomDailyLimitError:
        now = self._clock.time()
        after = parse_retry_after(headers.get("Retry-After"), now)
        until = now + seconds_until_reset(now)
        if after is not None and after > 0:
            until = min(until, now + after)  # never beyond the reset; a past time means it
        held = self.holds.hold(Holds.ALL, until, "daily_limit", DAILY_LIMIT_REACHED)
        error = ZoomDailyLimitError(endpoint, held.until, DAILY_LIMIT_REACHED)
        log.error(f"{error}; the last data is kept meanwhile", extra=kv(endpoint=endpoint))
        return error

    def _check_rate_hold(self, endpoint: str, category: str) -> None:
        """Fail at once, without a call, while a long QPS Retry-After holds the category."""
        held = self.holds.active_only(category, self._clock.time())
        if held is not None:
            raise ZoomRateLimitError(endpoint, "QPS", held.message)

    def _qps_wait(
        self, endpoint: str, payload: dict[str, Any], headers: Mapping[str, str], attempt: int
    ) -> float:
        """How long to wait after a 429 QPS before the retry; raise if no retry is left.

        A Retry-After beyond MAX_RETRY_WAIT fails the call at once and holds that category
        only (every other call goes on) for the wait, capped at MAX_QPS_RETRY_AFTER.
        """
        now = self._clock.time()
        after = parse_retry_after(headers.get("Retry-After"), now)
        if after is not None:
            after = min(after, MAX_QPS_RETRY_AFTER)
        wait = (after if after is not None else self._backoff.delay(attempt, self._rng)) + (
            self._rng() * self._backoff.base
        )
        if attempt >= self._max_retries or wait > MAX_RETRY_WAIT:
            limit_type = headers.get("X-RateLimit-Type", "").strip()
            message = zoom_message(payload)
            if wait > MAX_RETRY_WAIT:
                category = category_of(endpoint)
                why = f"{category} calls held for {wait:.0f} s after a 429 with Retry-After"
                self.holds.hold(category, now + wait, "rate_limited", why)
                log.warning(why, extra=kv(endpoint=endpoint))
                message = message or why
            raise ZoomRateLimitError(
                endpoint, limit_type if limit_type in LIMIT_TYPES else "QPS", message
            )
        if self.limiter is not None:
            self.limiter.pause(category_of(endpoint), wait)
            return 0.0  # the paused bucket does the waiting
        return wait

    def _refused(
        self, endpoint: str, status: int, code: int | None, message: str, action: Action
    ) -> ZoomAuthError | ZoomForbiddenError:
        """401 (not 124) or a permission error: hold the calls it concerns, with backoff."""
        scope = "all" if action is Action.AUTH_FAILED else scope_of(endpoint)
        now = self._clock.time()
        reason = "auth_failed" if action is Action.AUTH_FAILED else "forbidden"
        current = self.holds.active_only(scope, now)
        if current is not None and current.reason == reason:
            delay = current.until - now  # concurrent refusals: one step, not one each
        else:
            failures = self.holds.failures(scope)
            step = min(CREDENTIALS_BACKOFF.cap, CREDENTIALS_BACKOFF.base * 2.0**failures)
            delay = step / 2 + CREDENTIALS_BACKOFF.delay(failures, self._rng) / 2
        until = now + delay
        if action is Action.AUTH_FAILED:
            why = (
                f"Zoom no longer accepts the access token (HTTP {status}: "
                f"{message or 'unauthorised'}); check ZOOM_EXPORTER_ACCOUNT_ID, "
                "ZOOM_EXPORTER_CLIENT_ID and ZOOM_EXPORTER_CLIENT_SECRET and that the app is "
                "activated"
            )
            self.holds.hold(scope, until, "auth_failed", why)
            error: ZoomAuthError | ZoomForbiddenError = ZoomAuthError(endpoint, why)
        else:
            answer = f"HTTP {status}" + (f", Zoom code {code}" if code is not None else "")
            answer += f": {message}" if message else ""
            self.holds.hold(scope, until, "forbidden", answer)
            error = ZoomForbiddenError(endpoint, answer)
        log.error(
            f"{error}; calls held back for {delay:.0f} s",
            extra=kv(endpoint=endpoint, code=code, status=status),
        )
        return error

    def url(self, path: str, params: dict[str, str]) -> URL:
        return URL(self._api_url + path, encoded=True).update_query(params)

    async def get(self, endpoint: str, path: str, params: dict[str, str]) -> dict[str, Any]:
        """GET an API path (already percent-encoded): paced, budgeted, retried when it helps."""
        url = self.url(path, params)
        category = category_of(endpoint)
        renewed = False
        attempt = 0
        while True:
            paused = self.paused(endpoint)
            if paused is not None:
                raise paused
            self._check_rate_hold(endpoint, category)
            if self.limiter is not None:
                await self.limiter.acquire(category)
            token = await self.token.token(self.send)
            if self.budget is not None:
                self.budget.spend(self._clock.time())
            headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
            try:
                status, payload, answer = await self.send(endpoint, "GET", url, headers=headers)
            except ZoomTransportError as error:
                if attempt >= self._max_retries or error.reason == TOO_LARGE:
                    raise
                await self._retry(endpoint, error.reason, attempt, None)
                attempt += 1
                continue
            code, message = zoom_code(payload), zoom_message(payload)
            action = classify(status, code, answer, message)
            if action is not Action.QPS_LIMIT:  # a per-second 429's counts are not the day's
                self._observe(answer)
            if action is Action.OK:
                self.holds.succeeded(scope_of(endpoint), self._clock.time())
                return payload
            if action is Action.RENEW_TOKEN and renewed:
                action = Action.AUTH_FAILED  # a fresh token rejected too: no renewal loop
            if action is Action.RENEW_TOKEN:
                if self.token.invalidate(token):
                    log.info(
                        "access token rejected (code 124); renewing it", extra=kv(endpoint=endpoint)
                    )
                self.telemetry.retries.add(endpoint, "token_renewed")
                renewed = True
                continue
            if action in (Action.QPS_LIMIT, Action.DAILY_LIMIT):
                self._limit_labels(endpoint, answer, action)
                if action is Action.DAILY_LIMIT:
                    raise self._daily_limit(endpoint, answer)
                wait = self._qps_wait(endpoint, payload, answer, attempt)
                await self._retry(endpoint, "rate_limited", attempt, wait)
                attempt += 1
                continue
            if action in (Action.AUTH_FAILED, Action.FORBIDDEN):
                raise self._refused(endpoint, status, code, message, action)
            if action is Action.RETRY and attempt < self._max_retries:
                await self._retry(endpoint, "server_error", attempt, None)
                attempt += 1
                continue
            raise ZoomAPIError(endpoint, status, code, message)
