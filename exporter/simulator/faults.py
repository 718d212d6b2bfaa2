"""Fault injection: rules that answer the next matching requests instead of the API.

A fault is a `Fault` subclass with a count, an optional endpoint filter and an optional schedule
(`after` matching requests, or from scenario time `at`); the app asks
`Faults.take(endpoint, now)` before handling each request. A fault either replaces the API's
response (429, 5xx, a malformed body, a dropped connection) or, like `timeout`, only delays the
request and lets it proceed. `Faults` also holds account-wide switches that are not per-request
faults: revoked tokens, expired page tokens, a changed client secret and omitted rate-limit
headers.
"""

from __future__ import annotations

import asyncio
import math
import socket
import struct
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Final

from aiohttp import web

from exporter.simulator.timefmt import http_date

OAUTH_ENDPOINT: Final = "oauth_token"
QPS_MESSAGE: Final = (
    "You have reached the maximum per-second rate limit for this API. Try again later."
)
DAILY_MESSAGE: Final = (
    "You have reached the maximum daily rate limit for this API. "
    "Refer to the response header for details on when you can make another request."
)
RETRY_AFTER_FORMATS: Final = frozenset({"seconds", "date"})
# The scenario time at which the gateway received a request (set before faults are consulted).
REQUEST_TIME: Final = web.RequestKey("simulator_request_time", float)
# A truncated participants page: valid JSON up to the cut, then nothing.
MALFORMED_BODY: Final = b'{"page_count": 1, "page_size": 1, "total_records": 8, "participants": [{"'


def request_time(request: web.Request) -> float:
    """The scenario time the gateway stamped on `request` (the wall clock if unstamped)."""
    if REQUEST_TIME in request:
        return request[REQUEST_TIME]
    return time.time()


class Fault(ABC):
    """Answers up to `count` requests to `endpoint` (None: any /v2 endpoint).

    Scheduling: the fault is dormant until the scenario clock reads `at` (if given); once it is
    awake, it lets the first `after` matching requests through untouched, then answers the next
    `count` ones.
    """

    name: ClassVar[str]

    def __init__(
        self,
        count: int,
        endpoint: str | None = None,
        *,
        after: int = 0,
        at: float | None = None,
    ) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        if after < 0:
            raise ValueError("after must not be negative")
        self.remaining = count
        self.endpoint = endpoint
        self.after = after  # matching requests still to let through before answering
        self.at = at

    def matches(self, endpoint: str) -> bool:
        """True for `endpoint`, or for any endpoint but the token endpoint when unfiltered."""
        if self.endpoint is None:
            return endpoint != OAUTH_ENDPOINT
        return endpoint == self.endpoint

    def awake(self, now: float | None) -> bool:
        """True once the scenario clock has reached `at` (always, without `at`)."""
        return self.at is None or (now is not None and now >= self.at)

    @abstractmethod
    async def respond(self, request: web.Request) -> web.StreamResponse | None:
        """The response that replaces the API's; None lets the request proceed as usual."""

    def describe(self) -> dict[str, Any]:
        """The fault as JSON, for `GET /_sim/faults` (`after`: requests still let through)."""
        return {
            "fault": self.name,
            "remaining": self.remaining,
            "endpoint": self.endpoint,
            "after": self.after,
            "at": self.at,
        }


class RateLimitFault(Fault):
    """HTTP 429 with Retry-After and X-RateLimit-Type, as Zoom's gateway sends it.

    Retry-After is delta-seconds, or with `retry_after_format="date"` an HTTP-date (IMF-fixdate)
    `retry_after` seconds after the request's scenario time.
    """

    name = "rate_limit"

    def __init__(
        self,
        count: int,
        retry_after: int,
        limit_type: str,
        endpoint: str | None = None,
        *,
        retry_after_format: str = "seconds",
        after: int = 0,
        at: float | None = None,
    ) -> None:
        super().__init__(count, endpoint, after=after, at=at)
        if retry_after_format not in RETRY_AFTER_FORMATS:
            raise ValueError(f"retry_after_format must be one of {sorted(RETRY_AFTER_FORMATS)}")
        self.retry_after = retry_after
        self.limit_type = limit_type
        self.retry_after_format = retry_after_format

    def retry_after_header(self, now: float) -> str:
        """The Retry-After value for a request received at scenario time `now`."""
        if self.retry_after_format == "date":
            return http_date(math.ceil(now + self.retry_after))
        return str(self.retry_after)

    async def respond(self, request: web.Request) -> web.StreamResponse:
        message = QPS_MESSAGE if self.limit_type == "QPS" else DAILY_MESSAGE
        retry_after = self.retry_after_header(request_time(request))
        return web.json_response(
            {"code": 429, "message": message},
            status=429,
            headers={"Retry-After": retry_after, "X-RateLimit-Type": self.limit_type},
        )

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "retry_after": self.retry_after,
            "type": self.limit_type,
            "retry_after_format": self.retry_after_format,
        }


class ServerErrorFault(Fault):
    """An HTTP 5xx with a JSON body."""

    name = "server_error"

    def __init__(
        self,
        count: int,
        status: int,
        endpoint: str | None = None,
        *,
        after: int = 0,
        at: float | None = None,
    ) -> None:
        super().__init__(count, endpoint, after=after, at=at)
        if not 500 <= status <= 599:
            raise ValueError("status must be 5xx")
        self.status = status

    async def respond(self, request: web.Request) -> web.StreamResponse:
        body = {"code": self.status, "message": "Internal server error."}
        return web.json_response(body, status=self.status)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "status": self.status}


class ErrorFault(Fault):
    """Any answer Zoom has been seen to give: a status, Zoom's code and message, and headers
    (e.g. 403, 400 with code 4711, 200 with code 200 "Only available for paid account", or a
    429 whose headers say something odd)."""

    name = "error"

    def __init__(
        self,
        count: int,
        status: int,
        code: int | None,
        message: str,
        endpoint: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        after: int = 0,
        at: float | None = None,
    ) -> None:
        super().__init__(count, endpoint, after=after, at=at)
        if not 100 <= status <= 599:
            raise ValueError("status must be an HTTP status")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    async def respond(self, request: web.Request) -> web.StreamResponse:
        body: dict[str, Any] = {"message": self.message}
        if self.code is not None:
            body["code"] = self.code
        return web.json_response(body, status=self.status, headers=self.headers)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "status": self.status,
            "code": self.code,
            "message": self.message,
            "headers": self.headers,
        }


class TimeoutFault(Fault):
    """Holds the request for `seconds` (a cancellable asyncio.sleep), then lets it proceed.

    Other requests are served meanwhile; a client with a shorter timeout gives up first.
    """

    name = "timeout"

    def __init__(
        self,
        count: int,
        seconds: float,
        endpoint: str | None = None,
        *,
        after: int = 0,
        at: float | None = None,
    ) -> None:
        super().__init__(count, endpoint, after=after, at=at)
        if not seconds >= 0:
            raise ValueError("seconds must not be negative")
        self.seconds = seconds

    async def respond(self, request: web.Request) -> None:
        await asyncio.sleep(self.seconds)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "seconds": self.seconds}


class ResetFault(Fault):
    """Drops the TCP connection without sending a byte of response.

    With `rst` (the default) the socket is closed with SO_LINGER 0, so the peer gets a TCP RST
    and aiohttp raises ClientOSError (ECONNRESET); without it the close is an orderly FIN and
    aiohttp raises ServerDisconnectedError. Note that aiohttp's client retries an idempotent
    request (GET) once on either error, so a GET only fails on two resets in a row.
    """

    name = "reset"

    def __init__(
        self,
        count: int,
        endpoint: str | None = None,
        *,
        rst: bool = True,
        after: int = 0,
        at: float | None = None,
    ) -> None:
        super().__init__(count, endpoint, after=after, at=at)
        self.rst = rst

    async def respond(self, request: web.Request) -> web.StreamResponse:
        transport = request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if self.rst and sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        # Never sent: the transport is closed, and aiohttp drops the write quietly.
        return web.Response(status=500)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "rst": self.rst}


class MalformedFault(Fault):
    """Answers `status` with Content-Type application/json and a truncated, invalid JSON body."""

    name = "malformed"

    def __init__(
        self,
        count: int,
        endpoint: str | None = None,
        *,
        status: int = 200,
        after: int = 0,
        at: float | None = None,
    ) -> None:
        super().__init__(count, endpoint, after=after, at=at)
        if not 200 <= status <= 599:
            raise ValueError("status must be between 200 and 599")
        self.status = status

    async def respond(self, request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=MALFORMED_BODY,
            status=self.status,
            content_type="application/json",
            charset="utf-8",
        )

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "status": self.status}


def _schedule(after: int, at: float | None) -> dict[str, Any]:
    """The scheduling keywords, converted from JSON-ish values."""
    return {"after": int(after), "at": None if at is None else float(at)}


def _endpoint(endpoint: str | None) -> str | None:
    return None if endpoint is None else str(endpoint)


class Faults:
    """The fault-injection controller (`sim.faults`).

    Every method is also reachable as `POST /_sim/faults {"fault": "<method>", ...keywords}`.
    """

    ACTIONS: ClassVar[frozenset[str]] = frozenset(
        {
            "rate_limit",
            "server_error",
            "error",
            "revoke_on_issue",
            "timeout",
            "reset",
            "malformed",
            "token_endpoint_down",
            "revoke_tokens",
            "expire_page_tokens",
            "change_credentials",
            "rate_limit_headers",
            "clear",
        }
    )

    def __init__(self) -> None:
        self._rules: list[Fault] = []
        self.token_generation = 0  # access tokens issued before the current one are revoked
        self.page_generation = 0  # likewise for next_page_tokens
        self.client_secret: str | None = None  # replaces the app's secret once changed
        self.send_rate_limit_headers = True
        self.revoking = False  # a new token revokes every older one (Zoom's strictest)

    def add(self, fault: Fault) -> None:
        """Queue any Fault; rules are consulted in the order added."""
        self._rules.append(fault)

    def rate_limit(
        self,
        count: int = 1,
        retry_after: int = 1,
        type: str = "QPS",
        endpoint: str | None = None,
        retry_after_format: str = "seconds",
        after: int = 0,
        at: float | None = None,
    ) -> None:
        """The next `count` /v2 calls answer 429 (type "QPS" or "Daily-limit").

        `retry_after_format` "seconds" sends Retry-After as delta-seconds, "date" as an
        HTTP-date computed from the scenario clock.
        """
        self.add(
            RateLimitFault(
                int(count),
                int(retry_after),
                str(type),
                _endpoint(endpoint),
                retry_after_format=str(retry_after_format),
                **_schedule(after, at),
            )
        )

    def server_error(
        self,
        count: int = 1,
        status: int = 500,
        endpoint: str | None = None,
        after: int = 0,
        at: float | None = None,
    ) -> None:
        """The next `count` /v2 calls (or calls to `endpoint`) answer `status` (5xx)."""
        self.add(
            ServerErrorFault(int(count), int(status), _endpoint(endpoint), **_schedule(after, at))
        )

    def timeout(
        self,
        count: int = 1,
        seconds: float = 30.0,
        endpoint: str | None = None,
        after: int = 0,
        at: float | None = None,
    ) -> None:
        """The next `count` calls wait `seconds` (real time) before being answered normally."""
        self.add(
            TimeoutFault(int(count), float(seconds), _endpoint(endpoint), **_schedule(after, at))
        )

    def reset(
        self,
        count: int = 1,
        endpoint: str | None = None,
        rst: bool = True,
        after: int = 0,
        at: float | None = None,
    ) -> None:
        """The next `count` calls get their connection dropped with no response (see ResetFault)."""
        self.add(
            ResetFault(int(count), _endpoint(endpoint), rst=_flag(rst), **_schedule(after, at))
        )

    def malformed(
        self,
        count: int = 1,
        endpoint: str | None = None,
        status: int = 200,
        after: int = 0,
        at: float | None = None,
    ) -> None:
        """The next `count` calls answer `status` with a JSON content type and invalid JSON."""
        self.add(
            MalformedFault(
                int(count), _endpoint(endpoint), status=int(status), **_schedule(after, at)
            )
        )

    def token_endpoint_down(
        self, count: int = 1, status: int = 503, after: int = 0, at: float | None = None
    ) -> None:
        """The next `count` token requests (POST /oauth/token) answer `status` (5xx)."""
        self.server_error(count, status, OAUTH_ENDPOINT, after, at)

    def error(
        self,
        status: int,
        code: int | None = None,
        message: str = "",
        count: int = 1,
        endpoint: str | None = None,
        headers: Mapping[str, str] | None = None,
        after: int = 0,
        at: float | None = None,
    ) -> None:
        """The next `count` /v2 calls (or `endpoint`'s) answer this status, code and message."""
        self.add(
            ErrorFault(
                count,
                status,
                code,
                message,
                _endpoint(endpoint),
                headers=headers,
                after=after,
                at=at,
            )
        )

    def revoke_on_issue(self, enabled: bool) -> None:
        """With True, issuing a token revokes every token issued before it, as Zoom may do
        for Server-to-Server apps: two clients of one app knock out each other's token."""
        self.revoking = _flag(enabled)

    def revoke_tokens(self) -> None:
        """Every access token issued so far becomes invalid (401, code 124)."""
        self.token_generation += 1

    def expire_page_tokens(self) -> None:
        """Every next_page_token issued so far becomes invalid (400, code 300)."""
        self.page_generation += 1

    def change_credentials(self, client_secret: str) -> None:
        """From now on the token endpoint accepts only `client_secret`.

        Access tokens already issued stay valid until they expire or are revoked.
        """
        if not isinstance(client_secret, str) or not client_secret:
            raise ValueError("client_secret must be a non-empty string")
        self.client_secret = client_secret

    def rate_limit_headers(self, enabled: bool) -> None:
        """With False, responses carry no X-RateLimit-* headers (Zoom sometimes omits them)."""
        self.send_rate_limit_headers = _flag(enabled)

    def clear(self) -> None:
        """Drop all pending faults (the switches above keep their state)."""
        self._rules.clear()

    def take(self, endpoint: str, now: float | None = None) -> Fault | None:
        """The fault that answers a request to `endpoint` at scenario time `now`, if any.

        Every awake fault for the endpoint that is still letting requests through counts this
        request; the first awake fault with nothing left to let through answers it, with one
        use consumed. Faults scheduled with `at` stay dormant when `now` is None.
        """
        chosen: Fault | None = None
        for fault in self._rules:
            if not fault.matches(endpoint) or not fault.awake(now):
                continue
            if fault.after > 0:
                fault.after -= 1
            elif chosen is None:
                chosen = fault
        if chosen is not None:
            chosen.remaining -= 1
            if chosen.remaining <= 0:
                self._rules.remove(chosen)
        return chosen

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


def _flag(value: object) -> bool:
    """A JSON boolean; anything else is a ValueError (so "false" is not taken as true)."""
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value
