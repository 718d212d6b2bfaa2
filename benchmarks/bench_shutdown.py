"""How long SIGTERM takes while the exporter renders a big snapshot.

Serves a mock Zoom that lists M meetings of 100 participants each (the seed sample's full set of
streams), runs `python -m exporter` against it with the rate limits lifted, waits until the
first cycle has fetched every page (the render starts soon after), sends SIGTERM D seconds later
and prints how long the process took to exit (its log: /tmp/bench_shutdown.log). Asserts
nothing. Usage:
    python benchmarks/bench_shutdown.py [meetings=100] [D=2]
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "tests" / "data" / "participants_page.json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def main(meetings: int, delay: float) -> None:
    template = json.loads(PAGE.read_text())["participants"][0]
    served = 0
    every_page = asyncio.Event()

    async def token(request: web.Request) -> web.Response:
        return web.json_response({"access_token": "t", "expires_in": 3600})

    async def qos(request: web.Request) -> web.Response:
        nonlocal served
        served += 1
        if served >= meetings * 10:
            every_page.set()
        meeting = request.match_info["id"]
        page = int(request.query.get("next_page_token") or 0)
        people: list[dict[str, Any]] = []
        for i in range(10):
            person = dict(template)
            person["user_id"] = f"{meeting}-{page}-{i}"
            person["user_name"] = f"Person {meeting}-{page}-{i}"
            people.append(person)
        following = str(page + 1) if page < 9 else ""
        return web.json_response(
            {"participants": people, "next_page_token": following, "total_records": 100}
        )

    async def discovery(request: web.Request) -> web.Response:
        listed = [
            {"id": str(1000 + m), "uuid": str(1000 + m), "participants": 100}
            for m in range(meetings)
        ]
        key = "meetings" if request.path.endswith("meetings") else "webinars"
        return web.json_response({key: listed if key == "meetings" else []})

    app = web.Application()
    app.router.add_post("/oauth/token", token)
    app.router.add_get("/v2/metrics/meetings", discovery)
    app.router.add_get("/v2/metrics/webinars", discovery)
    app.router.add_get("/v2/metrics/meetings/{id}/participants/qos", qos)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    zoom_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", zoom_port).start()
    url = f"http://127.0.0.1:{zoom_port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOOM_EXPORTER_")}
    env.update(
        ZOOM_EXPORTER_ACCOUNT_ID="a",
        ZOOM_EXPORTER_CLIENT_ID="c",
        ZOOM_EXPORTER_CLIENT_SECRET="s",
        ZOOM_EXPORTER_API_URL=url + "/v2",
        ZOOM_EXPORTER_OAUTH_URL=url + "/oauth/token",
        ZOOM_EXPORTER_HEAVY_RATE="1000",
        ZOOM_EXPORTER_CONCURRENCY="16",
        ZOOM_EXPORTER_DAILY_REQUEST_BUDGET="10000000",
    )
    log = Path("/tmp/bench_shutdown.log").open("wb")  # noqa: SIM115, ASYNC230
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter",
        "--web.listen-address",
        f"127.0.0.1:{free_port()}",
        cwd=tempfile.gettempdir(),  # not the tree: PYTHONPATH picks the code
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    began = time.monotonic()
    await asyncio.wait_for(every_page.wait(), 300)
    fetched = time.monotonic() - began
    await asyncio.sleep(delay)  # the render of the first cycle is under way
    process.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    try:
        await asyncio.wait_for(process.wait(), 120)
    except TimeoutError:
        process.kill()
        await process.wait()
    took = time.monotonic() - stopped
    log.close()
    await runner.cleanup()
    print(f"participants: {meetings * 100} in {meetings} meetings; fetched in {fetched:.1f} s")
    print(f"SIGTERM during the first render: exit code {process.returncode} after {took:.2f} s")


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    asyncio.run(main(count, float(sys.argv[2]) if len(sys.argv) > 2 else 2.0))
