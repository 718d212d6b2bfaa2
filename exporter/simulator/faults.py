"""Fault injection: rules that answer the next matching requests instead of the API.

A fault is a `Fault` subclass with a count and an optional endpoint filter; the app asks
`Faults.take(endpoint)` before handling each request. New kinds of faults (timeouts, resets,
malformed bodies...) are new subclasses plus a method on `Faults`, listed in `ACTIONS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Final

from aiohttp import web

OAUTH_ENDPOINT: Final = "oauth_token"
QPS_MESSAGE: Final = (
    "You have reached the maximum per-second rate limit for this API. Try again later."
)
DAILY_MESSAGE: Final = (
    "You have reached the maximum daily rate limit for this API. "
    "Refer to the response header for details on when you can make another request."
)


class Fault(ABC):
    """Answers up to `count` requests to `endpoint` (None: any /v2 endpoint)."""

    name: ClassVar[str]

    def __init__(self, count: int, endpoint: str | None = None) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        self.remaining = count
        self.endpoint = endpoint

    def matches(self, endpoint: str) -> bool:
        if self.endpoint is None:
            return endpoint != OAUTH_ENDPOINT
        return endpoint == self.endpoint

    @abstractmethod
    async def respond(self, request: web.Request) -> web.StreamResponse:
        """The response that replaces the API's."""

    def describe(self) -> dict[str, Any]:
        return {"fault": self.name, "remaining": self.remaining, "endpoint": self.endpoint}


class RateLimitFault(Fault):
    """HTTP 429 with Retry-After and X-RateLimit-Type, as Zoom's gateway sends it."""

    name = "rate_limit"

    def __init__(
        self, count: int, retry_after: int, limit_type: str, endpoint: str | None = None
    ) -> None:
        super().__init__(count, endpoint)
        self.retry_after = retry_after
        self.limit_type = limit_type

    async def respond(self, request: web.Request) -> web.StreamResponse:
        message = QPS_MESSAGE if self.limit_type == "QPS" else DAILY_MESSAGE
        return web.json_response(
            {"code": 429, "message": message},
            status=429,
            headers={"Retry-After": str(self.retry_after), "X-RateLimit-Type": self.limit_type},
        )

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "retry_after": self.retry_after, "type": self.limit_type}


class ServerErrorFault(Fault):
    """An HTTP 5xx with a JSON body."""

    name = "server_error"

    def __init__(self, count: int, status: int, endpoint: str | None = None) -> None:
        super().__init__(count, endpoint)
        if not 500 <= status <= 599:
            raise ValueError("status must be 5xx")
        self.status = status

    async def respond(self, request: web.Request) -> web.StreamResponse:
        body = {"code": self.status, "message": "Internal server error."}
        return web.json_response(body, status=self.status)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "status": self.status}


class Faults:
    """The fault-injection controller (`sim.faults`)."""

    ACTIONS: ClassVar[frozenset[str]] = frozenset(
        {"rate_limit", "server_error", "revoke_tokens", "expire_page_tokens", "clear"}
    )

    def __init__(self) -> None:
        self._rules: list[Fault] = []
        self.token_generation = 0  # access tokens issued before the current one are revoked
        self.page_generation = 0  # likewise for next_page_tokens

    def add(self, fault: Fault) -> None:
        """Queue any Fault; rules are consulted in the order added."""
        self._rules.append(fault)

    def rate_limit(
        self, count: int = 1, retry_after: int = 1, type: str = "QPS", endpoint: str | None = None
    ) -> None:
        """The next `count` /v2 calls answer 429 (type "QPS" or "Daily-limit")."""
        self.add(RateLimitFault(int(count), int(retry_after), str(type), endpoint))

    def server_error(self, count: int = 1, status: int = 500, endpoint: str | None = None) -> None:
        """The next `count` /v2 calls answer `status` (5xx)."""
        self.add(ServerErrorFault(int(count), int(status), endpoint))

    def revoke_tokens(self) -> None:
        """Every access token issued so far becomes invalid (401, code 124)."""
        self.token_generation += 1

    def expire_page_tokens(self) -> None:
        """Every next_page_token issued so far becomes invalid (400, code 300)."""
        self.page_generation += 1

    def clear(self) -> None:
        """Drop all pending faults."""
        self._rules.clear()

    def take(self, endpoint: str) -> Fault | None:
        """The first pending fault for `endpoint`, with one use consumed."""
        for fault in self._rules:
            if fault.matches(endpoint):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._rules.remove(fault)
                return fault
        return None

    def pending(self) -> list[dict[str, Any]]:
        """The queued faults, for `GET /_sim/faults`."""
        return [fault.describe() for fault in self._rules]

    def apply(self, spec: Mapping[str, Any]) -> None:
        """Run an action from JSON, e.g. {"fault": "rate_limit", "count": 2}."""
        options = dict(spec)
        action = options.pop("fault", None)
        if action not in self.ACTIONS:
            raise ValueError(f"unknown fault {action!r}; known: {sorted(self.ACTIONS)}")
        try:
            getattr(self, action)(**options)
        except TypeError as error:
            raise ValueError(str(error)) from error
