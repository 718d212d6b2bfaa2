"""Client connections to the web port, bounded: a cap on open connections, and a deadline for a
new connection's request headers.

Slowloris (many connections that send their headers a byte at a time) must neither exhaust the
process's descriptors (systemd's default soft limit is 1,024) nor crowd out Prometheus:

- a request has `HEADER_TIMEOUT` seconds from its first byte (or from the connection) to send
  its headers, or the connection is closed;
- at most `max_connections` are open; at the cap, a newcomer takes the place of the oldest
  connection that has not yet sent its headers (a scraper sends them at once), else of the
  oldest kept-alive one silent for `IDLE_AFTER` seconds (it can reconnect), and is refused
  only when every open connection is busy;
- a burst of such closures is logged once, when it starts, not once per connection.

Idle keep-alive connections are closed by aiohttp after `KEEPALIVE_TIMEOUT` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web

from exporter.logfmt import kv

log = logging.getLogger(__name__)

DEFAULT_MAX_CONNECTIONS = 256
HEADER_TIMEOUT = 10.0  # seconds a new connection has to send its request headers
KEEPALIVE_TIMEOUT = 75.0  # seconds an idle keep-alive connection stays open
IDLE_AFTER = 5.0  # seconds without a byte after which a kept-alive connection may make room
BURST_QUIET = 10.0  # seconds without a closure before the next one is logged as a new burst
_END_OF_HEADERS = b"\r\n\r\n"


class ConnectionGuard:
    """Wraps a protocol factory (aiohttp's web.Server) with the cap and the header deadline."""

    def __init__(
        self,
        factory: Callable[[], asyncio.BaseProtocol],
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        header_timeout: float = HEADER_TIMEOUT,
    ) -> None:
        self._factory = factory
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self._open: dict[_Guarded, None] = {}  # in the order they opened
        self._last_closure = float("-inf")
        self.closed: dict[str, int] = {"header_timeout": 0, "evicted": 0, "refused": 0}

    def __call__(self) -> asyncio.BaseProtocol:
        return _Guarded(self, self._factory())

    @property
    def open(self) -> int:
        return len(self._open)

    def admit(self, connection: _Guarded) -> bool:
        if len(self._open) >= self.max_connections:
            now = asyncio.get_running_loop().time()
            slow = next((c for c in self._open if not c.headers_done), None)
            if slow is None:  # then one kept alive but silent: it can reconnect
                slow = next((c for c in self._open if now - c.last_data > IDLE_AFTER), None)
            if slow is None:
                self.closing("refused")
                return False
            self.closing("evicted")
            slow.close()
            self._open.pop(slow, None)
        self._open[connection] = None
        return True

    def release(self, connection: _Guarded) -> None:
        self._open.pop(connection, None)

    def closing(self, reason: str) -> None:
        """Count a closure; the first of a burst is logged."""
        self.closed[reason] += 1
        now = asyncio.get_running_loop().time()
        if now - self._last_closure > BURST_QUIET:
            log.warning(
                "web: closing client connections (too many open, or headers too slow); "
                "logged once per burst",
                extra=kv(reason=reason, open=len(self._open), max_connections=self.max_connections),
            )
        self._last_closure = now


class _Guarded(asyncio.Protocol):
    """One connection: forwards everything to aiohttp's handler, and times each request's
    headers (data after a request's headers starts the next one: GET requests have no body;
    a body that comes late only shortens an idle keep-alive)."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.BaseProtocol) -> None:
        self._guard = guard
        self._inner: Any = inner
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""
        self._admitted = False
        self.headers_done = False
        self.last_data = asyncio.get_running_loop().time()  # when a byte last arrived

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        if not self._guard.admit(self):
            self._transport.abort()
            return
        self._admitted = True
        self._arm()
        self._inner.connection_made(transport)

    def _arm(self) -> None:
        """A request begins: its headers are due within the header timeout."""
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._guard.header_timeout, self._too_slow)

    def _too_slow(self) -> None:
        if not self.headers_done:
            self._guard.closing("header_timeout")
            self.close()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        self.last_data = asyncio.get_running_loop().time()
        if self.headers_done and data:  # the next request on a kept-alive connection
            self.headers_done, self._tail = False, b""
            self._arm()
        if not self.headers_done:
            window = self._tail + data
            if _END_OF_HEADERS in window:
                self.headers_done = True
                if self._timer is not None:
                    self._timer.cancel()
            self._tail = window[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        result: bool | None = self._inner.eof_received()
        return result

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._guard.release(self)
        if self._admitted:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class GuardedSite(web.TCPSite):
    """aiohttp's TCPSite, with every connection going through a ConnectionGuard."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        header_timeout: float = HEADER_TIMEOUT,
        **options: Any,
    ) -> None:
        super().__init__(runner, host, port, **options)
        self._limits = (max_connections, header_timeout)
        self.guard: ConnectionGuard | None = None

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        max_connections, header_timeout = self._limits
        self.guard = ConnectionGuard(
            server, max_connections=max_connections, header_timeout=header_timeout
        )
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.guard,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        if self._server.sockets:
            self._bound_port = self._server.sockets[0].getsockname()[1]
