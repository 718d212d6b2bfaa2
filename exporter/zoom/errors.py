"""Every way a call to Zoom can fail, as typed errors whose `str()` is safe to log."""

from __future__ import annotations

from datetime import UTC, datetime

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


class ZoomForbiddenError(ZoomError):
    """Zoom refused the call for want of permission: a missing scope, or the Dashboard feature
    off or not on the account's plan. `zoom_message` is Zoom's answer ("HTTP 400, Zoom code
    4711: ..."); `until` is set when no call was made because an earlier refusal holds them."""

    reason = "forbidden"

    def __init__(self, endpoint: str, zoom_message: str, until: float | None = None) -> None:
        super().__init__(
            endpoint,
            f"Zoom refused the call ({zoom_message or 'forbidden'}); check the app's scopes and "
            "that the account's plan has the Dashboard feature on",
        )
        self.zoom_message = zoom_message
        self.until = until


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
