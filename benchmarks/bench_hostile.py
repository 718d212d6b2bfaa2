"""Hostile answers from a mock Zoom, one class at a time: what each costs the exporter.

Each scenario runs in a fresh process (so peak RSS is its own) against a hostile Zoom served
in that process: meeting 111 gets the hostile answers, meeting 222 normal ones. The poller runs
on a manual clock for waits (Retry-After, pacing), on real time for slowness. Prints, per
scenario: the cycles published, the calls to the hostile meeting, the clock seconds a cycle
took (manual clock, i.e. waits) and the real seconds, the state, and the peak RSS.

Asserts nothing. Uses only APIs that older versions have too, so the same script measures a
checkout from before a change:
    python benchmarks/bench_hostile.py                       # this tree
    git archive <commit> exporter | tar -x -C /tmp/before
    PYTHONPATH=/tmp/before python benchmarks/bench_hostile.py  # that commit
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import time
import zlib
from collections import Counter
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import SecretStr

from exporter.metrics.store import SnapshotStore
from exporter.polling.poller import Poller, PollSettings
from exporter.polling.targets import configured_targets
from exporter.simulator.clock import ManualClock
from exporter.zoom.client import ZoomClient
from exporter.zoom.limits import DailyBudget, RateLimiter

VICTIM, BYSTANDER = "111", "222"
SCENARIOS = (
    "invalid_unicode",
    "huge_numbers",
    "absurd_count",
    "endless_pages",
    "long_retry_after",
    "slow_meeting",
    "body_200mib",
    "gzip_bomb",
    "token_expires_0",
)


def person(pid: str) -> dict[str, Any]:
    return {
        "user_id": pid,
        "user_name": f"user {pid}",
        "user_qos": [{"date_time": "2026-11-18T11:06:00Z", "audio_input": {"bitrate": "23 kbps"}}],
    }


def normal_page(meeting: str) -> web.Response:
    people = [person(f"{meeting}-1"), person(f"{meeting}-2")]
    return web.json_response({"participants": people, "next_page_token": ""})


async def run(name: str) -> dict[str, Any]:
    calls: Counter[str] = Counter()
    pages = Counter[str]()

    async def token(request: web.Request) -> web.StreamResponse:
        calls["token"] += 1
        expires = 0 if name == "token_expires_0" else 3600
        return web.json_response({"access_token": "t", "expires_in": expires})

    async def discovery(request: web.Request) -> web.StreamResponse:
        calls["discovery"] += 1
        listed = []
        if name == "absurd_count" and request.path.endswith("meetings"):
            listed = [
                {"id": VICTIM, "uuid": VICTIM, "participants": 10**9},
                {"id": BYSTANDER, "uuid": BYSTANDER, "participants": 2},
            ]
        return web.json_response({"meetings": listed, "webinars": [], "next_page_token": ""})

    async def qos(request: web.Request) -> web.StreamResponse:
        meeting = request.match_info["id"]
        calls[meeting] += 1
        if meeting != VICTIM:
            return normal_page(meeting)
        if name == "invalid_unicode":
            raw = '{"participants": [{"user_id": "1", "user_name": "Zo\\ud800"}]}'
            return web.Response(text=raw, content_type="application/json")
        if name == "huge_numbers":
            raw = (
                '{"participants": [{"user_id": "1", "user_qos": [{"date_time": '
                '"2026-11-18T11:06:00Z", "audio_input": {"bitrate": 1e400, "latency": '
                + "9" * 5000
                + "}}]}]}"
            )
            return web.Response(text=raw, content_type="application/json")
        if name == "endless_pages":
            pages["n"] += 1
            people = [person(f"p{pages['n']}-{i}") for i in range(10)]
            return web.json_response({"participants": people, "next_page_token": f"t{pages['n']}"})
        if name == "long_retry_after":
            return web.json_response(
                {"code": 429, "message": "Too many requests"},
                status=429,
                headers={"Retry-After": "90", "X-RateLimit-Type": "QPS"},
            )
        if name == "slow_meeting":
            pages["n"] += 1
            await asyncio.sleep(2)  # 3 pages of 2 s each
            token = f"t{pages['n']}" if pages["n"] % 3 else ""
            return web.json_response({"participants": [person("1")], "next_page_token": token})
        if name == "body_200mib":
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
            try:
                for _ in range(200):
                    await response.write(b" " * 2**20)
            except Exception:
                pass
            return response
        if name == "gzip_bomb":
            return web.Response(body=BOMB, headers={"Content-Encoding": "gzip"})
        return normal_page(meeting)

    app = web.Application()
    app.router.add_post("/oauth/token", token)
    app.router.add_get("/v2/metrics/meetings", discovery)
    app.router.add_get("/v2/metrics/webinars", discovery)
    app.router.add_get("/v2/metrics/meetings/{id}/participants/qos", qos)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    clock = ManualClock(1_795_000_000.0)
    out: dict[str, Any] = {"scenario": name}
    async with aiohttp.ClientSession() as session:
        client = ZoomClient(
            session,
            api_url=url + "/v2",
            oauth_url=url + "/oauth/token",
            account_id="a",
            client_id="c",
            client_secret=SecretStr("s"),
            clock=clock,
            limiter=RateLimiter(10, 10 / 60, clock),
            budget=DailyBudget(15_000),
        )
        store = SnapshotStore()
        discovering = name == "absurd_count"
        options: dict[str, Any] = {
            "interval": 60.0,
            "max_interval": 300.0,
            "configured": [] if discovering else configured_targets([VICTIM, BYSTANDER], []),
            "discovery": discovering,
        }
        deadline = 1.0 if name == "slow_meeting" else None  # the default: max(30 s, interval)
        poller = Poller(client, store, PollSettings(**options), clock=clock, deadline=deadline)
        cycles = 3 if name in ("long_retry_after", "token_expires_0") else 1
        clock_seconds, real_seconds, errors = [], [], 0
        for _ in range(cycles):
            clock.advance(60)
            began, real = clock.now, time.monotonic()
            try:
                report = await asyncio.wait_for(poller.run_cycle(), 120)
            except Exception as error:  # the old code's failures are the measurement
                errors += 1
                out["error"] = f"{type(error).__name__}: {str(error)[:80]}"
            else:
                out["state"] = report.health.state
                out["interval"] = report.health.poll_interval_seconds
                out["deferred"] = report.health.meetings_deferred
            clock_seconds.append(round(clock.now - began, 1))
            real_seconds.append(round(time.monotonic() - real, 2))
        out.update(
            cycles_published=store.health.complete_cycles,
            cycles_raised=errors,
            victim_calls=calls[VICTIM],
            bystander_calls=calls[BYSTANDER],
            token_calls=calls["token"],
            clock_seconds=clock_seconds,
            real_seconds=real_seconds,
        )
    await runner.cleanup()
    out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


BOMB = b""


def main() -> None:
    global BOMB
    if len(sys.argv) > 2 and sys.argv[1] == "--one":
        if sys.argv[2] == "gzip_bomb":  # 200 MiB of spaces, compressed a MiB at a time
            packer = zlib.compressobj(9, zlib.DEFLATED, 31)
            chunk = b" " * 2**20
            BOMB = b"".join(packer.compress(chunk) for _ in range(200)) + packer.flush()
        print(json.dumps(asyncio.run(run(sys.argv[2]))))
        return
    wanted = sys.argv[1:] or list(SCENARIOS)
    for name in wanted:
        began = time.monotonic()
        result = subprocess.run(
            [sys.executable, __file__, "--one", name],
            capture_output=True,
            text=True,
            timeout=600,
        )
        line = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
        took = time.monotonic() - began
        print(
            line or f'{{"scenario": "{name}", "crashed": {result.returncode}}}', f"# {took:.1f} s"
        )


if __name__ == "__main__":
    main()
