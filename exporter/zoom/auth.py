"""The access token: Server-to-Server OAuth, one token at a time, renewed with backoff.

The provider belongs to the daemon and outlives reloads (unless the credentials change), so a
reload costs no token request. Renewal is compare-and-clear: a call that Zoom answered with
code 124 clears the token only if it is still the one that was rejected, so any number of
concurrent 124s cause one renewal, and a token issued meanwhile is never thrown away.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import math
import random
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pydantic import SecretStr
from yarl import URL

from exporter.clock import SYSTEM_CLOCK, Clock
from exporter.logfmt import kv
from exporter.zoom.errors import (
    ZoomAuthError,
    ZoomTokenError,
    ZoomTokenUnavailableError,
    ZoomTransportError,
)
from exporter.zoom.limits import Backoff
from exporter.zoom.models import valid_utf8

log = logging.getLogger(__name__)

OAUTH_ENDPOINT = "oauth_token"
TOKEN_REFRESH_MARGIN = 300.0  # renew this many seconds before the token expires
DEFAULT_TOKEN_LIFETIME = 3600.0  # Zoom's tokens last an hour; used when expires_in is odd
TOKEN_LIFETIME_RANGE = (60.0, 86_400.0)  # expires_in is clamped to this
TOKEN_BACKOFF = Backoff(base=2.0, cap=120.0)  # the token endpoint is down or unreachable
CREDENTIALS_BACKOFF = Backoff(base=60.0, cap=600.0)  # Zoom refused the credentials

# One HTTP call: (endpoint, method, url, keyword arguments) -> (status, JSON object, headers).
Send = Callable[..., Awaitable[tuple[int, dict[str, Any], Mapping[str, str]]]]


def token_lifetime(expires_in: object) -> float:
    """Seconds the token lasts: `expires_in` clamped to a sane range; odd values mean an hour."""
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
        return DEFAULT_TOKEN_LIFETIME
    try:
        value = float(expires_in)
    except OverflowError:
        return DEFAULT_TOKEN_LIFETIME
    if not math.isfinite(value) or value <= 0:
        return DEFAULT_TOKEN_LIFETIME
    low, high = TOKEN_LIFETIME_RANGE
    return min(high, max(low, value))


class TokenProvider:
    """Fetches, caches and renews the account's access token."""

    def __init__(
        self,
        *,
        oauth_url: str,
        account_id: str,
        client_id: str,
        client_secret: SecretStr,
        clock: Clock = SYSTEM_CLOCK,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._oauth_url = oauth_url
        self._account_id = account_id
        credentials = f"{client_id}:{client_secret.get_secret_value()}".encode()
        encoded = base64.b64encode(credentials).decode("ascii")
        self._basic_auth = SecretStr("Basic " + encoded)
        # What a token endpoint that echoes our request could put in its error text: the
        # header's value, the pair it encodes, and the secret alone unless too short to tell.
        secret = client_secret.get_secret_value()
        self._echoes = (encoded, credentials.decode()) + ((secret,) if len(secret) >= 4 else ())
        # Whether a reload changed the credentials, without keeping them in the clear.
        self.identity = hashlib.sha256(
            b"\0".join([oauth_url.encode(), account_id.encode(), credentials])
        ).hexdigest()
        self._clock = clock
        self._rng = rng
        self._token: str | None = None
        self._renew_at = 0.0  # monotonic
        self.expires_at: float | None = None  # wall time the current token expires
        self._lock = asyncio.Lock()
        self._failures = 0
        self._retry_at = float("-inf")
        self._error: ZoomTokenError | None = None
        self.issued = 0  # tokens obtained since the start

    async def token(self, send: Send) -> str:
        """A valid token: the cached one, or a new one (one request at a time)."""
        async with self._lock:
            if self._token is not None and self._clock.monotonic() < self._renew_at:
                return self._token
            if self._error is not None and self._clock.monotonic() < self._retry_at:
                raise type(self._error)(OAUTH_ENDPOINT, self._error.detail)
            try:
                token = await self._fetch(send)
            except ZoomTokenError as error:
                self._failed(error)
                raise
            if self._failures:
                log.info("obtained an access token again", extra=kv(failures=self._failures))
            self._failures, self._error = 0, None
            return token

    def invalidate(self, rejected: str) -> bool:
        """Zoom rejected `rejected` (code 124): forget it, unless a newer one replaced it."""
        if self._token is not None and self._token == rejected:
            self._token = None
            return True
        return False

    @property
    def failing(self) -> ZoomTokenError | None:
        return self._error

    def _failed(self, error: ZoomTokenError) -> None:
        policy = CREDENTIALS_BACKOFF if isinstance(error, ZoomAuthError) else TOKEN_BACKOFF
        # At least half the exponential step: a refused secret is never retried in a tight loop.
        step = min(policy.cap, policy.base * 2.0**self._failures)
        delay = step / 2 + policy.delay(self._failures, self._rng) / 2
        self._failures += 1
        self._error = error
        self._retry_at = self._clock.monotonic() + delay
        log.error(
            f"{error}; next token request in {delay:.0f} s", extra=kv(endpoint=OAUTH_ENDPOINT)
        )

    async def _fetch(self, send: Send) -> str:
        form = {"grant_type": "account_credentials", "account_id": self._account_id}
        headers = {"Authorization": self._basic_auth.get_secret_value()}
        try:
            status, payload, _ = await send(
                OAUTH_ENDPOINT, "POST", URL(self._oauth_url), data=form, headers=headers
            )
        except ZoomTransportError as error:
            raise ZoomTokenUnavailableError(OAUTH_ENDPOINT, error.detail) from None
        if status != 200:
            reason = (
                _text(payload, "reason", self._echoes)
                or _text(payload, "error", self._echoes)
                or "rejected"
            )
            if status in (400, 401, 403):
                raise ZoomAuthError(
                    OAUTH_ENDPOINT,
                    f"Zoom refused the credentials (HTTP {status}: {reason}); check "
                    "ZOOM_EXPORTER_ACCOUNT_ID, ZOOM_EXPORTER_CLIENT_ID and "
                    "ZOOM_EXPORTER_CLIENT_SECRET",
                )
            raise ZoomTokenUnavailableError(OAUTH_ENDPOINT, f"HTTP {status}: {reason}")
        token = payload.get("access_token")
        if not isinstance(token, str) or not token or len(token) > 8192:
            raise ZoomTokenUnavailableError(OAUTH_ENDPOINT, "the answer has no access_token")
        lifetime = token_lifetime(payload.get("expires_in"))
        margin = min(TOKEN_REFRESH_MARGIN, lifetime / 10)
        self._token = token
        self._renew_at = self._clock.monotonic() + lifetime - margin
        self.expires_at = self._clock.time() + lifetime
        self.issued += 1
        log.debug("obtained an access token", extra=kv(lifetime_seconds=round(lifetime)))
        return token


def _text(payload: dict[str, Any], name: str, echoes: tuple[str, ...] = ()) -> str:
    """A short string field of Zoom's answer, with anything that looks like a credential cut,
    and `echoes` (our own credentials, however short) too."""
    value = payload.get(name)
    if not isinstance(value, str):
        return ""
    value = value[:4096]
    for echo in echoes:
        value = value.replace(echo, "[redacted]")
    return redact(value)[:200]


def redact(text: str) -> str:
    """Zoom's error text without anything that looks like a credential (Basic/Bearer values,
    long base64 runs) and without invalid Unicode."""
    text = valid_utf8(text)
    text = re.sub(r"(?i)\b(basic|bearer)\s+\S+", r"\1 [redacted]", text)
    return re.sub(r"[A-Za-z0-9+/_\-]{32,}={0,2}", "[redacted]", text)
