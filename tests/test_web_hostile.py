"""Hostile clients on the web port: a flood of wrong passwords, user enumeration by timing, and
slowloris at systemd's default of 1,024 descriptors. Scrapes must still be answered."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import bcrypt
import pytest
from aiohttp import web
from pydantic import SecretStr

from conftest import ROOT, free_port, http_get, stop_process, wait_for
from exporter.metrics.store import SnapshotStore
from exporter.web.app import create_app
from exporter.web.connections import GuardedSite
from exporter.web.webconfig import BCRYPT_QUEUE, BasicAuthChecker, WebConfig

ROUNDS = 10  # about 50 ms a compare: dear enough to measure, cheap enough for CI


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture(scope="module")
def hashed() -> str:
    return bcrypt.hashpw(b"right", bcrypt.gensalt(rounds=ROUNDS)).decode()


@pytest.fixture
async def guarded(hashed: str) -> AsyncIterator[str]:
    """The exporter's web app behind basic auth, served through the connection guard."""
    store = SnapshotStore()
    store.ready.set()
    config = WebConfig(basic_auth_users={"alice": SecretStr(hashed)})
    runner = web.AppRunner(create_app(store, web_config=config), access_log=None)
    await runner.setup()
    site = GuardedSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site.port}"
    finally:
        await runner.cleanup()


async def test_a_wrong_password_flood_leaves_scrapes_answered(guarded: str) -> None:
    async with aiohttp.ClientSession() as session:
        good = basic("alice", "right")
        assert (await session.get(guarded + "/metrics", headers=good)).status == 200  # cached

        async def wrong(i: int) -> int:
            async with session.get(guarded + "/metrics", headers=basic("alice", f"x{i}")) as r:
                return r.status

        async def scrape() -> float:
            began = time.monotonic()
            async with session.get(guarded + "/metrics", headers=good) as r:
                assert r.status == 200
                await r.read()
            return time.monotonic() - began

        flood = [asyncio.create_task(wrong(i)) for i in range(64)]
        await asyncio.sleep(0.05)  # the flood is queued
        scrapes = [await scrape() for _ in range(10)]
        statuses = await asyncio.gather(*flood)
    assert max(scrapes) < 0.5, scrapes  # answered at once, not after 64 compares
    assert set(statuses) <= {401, 429}
    assert statuses.count(401) <= BCRYPT_QUEUE + 2  # the rest were turned away at once
    assert statuses.count(429) >= 64 - BCRYPT_QUEUE - 2


async def test_unknown_users_cost_as_much_as_known_ones(hashed: str) -> None:
    checker = BasicAuthChecker({"alice": SecretStr(hashed)})

    async def timed(user: str) -> float:
        began = time.perf_counter()
        assert not await checker.allowed(basic(user, "wrong")["Authorization"])
        return time.perf_counter() - began

    known = [await timed("alice") for _ in range(5)]
    unknown = [await timed(f"mallory{i}") for i in range(5)]
    ratio = statistics.median(unknown) / statistics.median(known)
    assert 0.5 < ratio < 2.0, (known, unknown)


def test_slowloris_at_1024_descriptors_leaves_scrapes_answered(tmp_path: Path) -> None:
    """The exporter limited to 1,024 descriptors, 1,024 connections dribbling headers: every
    scrape is still answered, and the log says so once per burst, not per connection."""
    port = free_port()
    log = tmp_path / "exporter.log"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "exporter", "--demo", "--poll.interval", "5",
             "--web.listen-address", f"127.0.0.1:{port}"],
            stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT, preexec_fn=limit,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    sockets: list[socket.socket] = []
    try:
        wait_for(lambda: http_get(url + "/-/ready")[0] == 200, timeout=30, what="readiness")
        answered = 0
        for i in range(1024):
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=2)
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                sockets.append(sock)
            except OSError:
                pass  # refused or reset: the guard made room
            if i % 128 == 127:  # a scrape in the middle of the attack
                status, _, body = http_get(url + "/metrics", timeout=5)
                assert status == 200 and b"zoom_up" in body
                answered += 1
        for sock in sockets:  # keep dribbling
            with contextlib.suppress(OSError):
                sock.sendall(b"X-Slow: 1\r\n")
        for _ in range(5):
            status, _, _ = http_get(url + "/metrics", timeout=5)
            assert status == 200
            answered += 1
        assert answered == 13
        assert process.poll() is None
    finally:
        for sock in sockets:
            sock.close()
        stop_process(process)
    text = log.read_text()
    assert text.count("closing client connections") <= 3, text[-2000:]
    assert "Too many open files" not in text
    assert len(text) < 100_000


@pytest.fixture
async def small_site() -> AsyncIterator[tuple[str, int, GuardedSite]]:
    """The app without auth behind a guard of 4 connections and a 0.3 s header timeout."""
    store = SnapshotStore()
    store.ready.set()
    runner = web.AppRunner(create_app(store), access_log=None)
    await runner.setup()
    site = GuardedSite(runner, "127.0.0.1", 0, max_connections=4, header_timeout=0.3)
    await site.start()
    try:
        yield "127.0.0.1", site.port, site
    finally:
        await runner.cleanup()


CLOSE_WITHIN = 3.0  # seconds a test waits for the server to close a connection


async def closed(reader: asyncio.StreamReader) -> bool:
    """Whether the server closes the connection (after any answer) within CLOSE_WITHIN."""
    try:
        async with asyncio.timeout(CLOSE_WITHIN):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return True


async def test_headers_that_dribble_are_cut_off_on_every_request_of_a_connection(
    small_site: tuple[str, int, GuardedSite],
) -> None:
    host, port, site = small_site
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n")  # never finished
    assert await closed(reader)
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")  # one good request...
    assert b"200 OK" in await reader.readuntil(b"Healthy\n")
    writer.write(b"GET /-/healthy HTTP/1.1\r\n")  # ...then the next one dribbles
    assert await closed(reader)
    assert site.guard is not None and site.guard.closed["header_timeout"] == 2
    writer.close()


async def test_at_the_cap_a_newcomer_replaces_a_slow_or_idle_connection(
    small_site: tuple[str, int, GuardedSite], monkeypatch: pytest.MonkeyPatch
) -> None:
    from exporter.web import connections

    monkeypatch.setattr(connections, "IDLE_AFTER", 0.1)
    host, port, site = small_site
    idle = []
    for _ in range(4):  # the cap, filled with kept-alive connections that went quiet
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readuntil(b"Healthy\n")
        idle.append((reader, writer))
    await asyncio.sleep(0.2)
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            async with session.get(f"http://{host}:{port}/-/healthy") as response:
                assert response.status == 200
    assert site.guard is not None and site.guard.open <= 4
    assert site.guard.closed["evicted"] >= 1 and site.guard.closed["refused"] == 0
    assert await closed(idle[0][0])  # the oldest quiet one made room
    for _, writer in idle:
        writer.close()
