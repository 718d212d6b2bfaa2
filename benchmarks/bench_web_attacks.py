"""Hostile clients against a running demo exporter limited to 1,024 descriptors (systemd's
default): slowloris, a flood of wrong passwords, and user enumeration by timing.

Starts `python -m exporter --demo` (from a scratch directory, so PYTHONPATH picks the code)
with basic auth (bcrypt cost 10) and prints, per attack, the
scrapes answered and failed, their latency, and the size of the exporter's log. Asserts
nothing; uses only command-line flags, so it measures older checkouts too:
    python benchmarks/bench_web_attacks.py
    PYTHONPATH=/tmp/before python benchmarks/bench_web_attacks.py
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def get(url: str, headers: dict[str, str], timeout: float = 5.0) -> tuple[int, float]:
    began = time.monotonic()
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=timeout
        ) as r:
            r.read()
            status = r.status
    except urllib.error.HTTPError as error:
        status = error.code
    except OSError:
        status = 0  # no answer
    return status, time.monotonic() - began


def summary(results: list[tuple[int, float]]) -> str:
    ok = [t for s, t in results if s == 200]
    failed = len(results) - len(ok)
    if not ok:
        return f"answered 0/{len(results)}"
    return (
        f"answered {len(ok)}/{len(results)} (failed {failed}), "
        f"median {statistics.median(ok) * 1000:.0f} ms, max {max(ok) * 1000:.0f} ms"
    )


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-web-"))
    hashed = bcrypt.hashpw(b"right", bcrypt.gensalt(rounds=10)).decode()
    web_config = folder / "web.yml"
    web_config.write_text(json.dumps({"basic_auth_users": {"alice": hashed}}))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = folder / "exporter.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOOM_EXPORTER_")}

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "exporter", "--demo", "--poll.interval", "5",
             "--web.listen-address", f"127.0.0.1:{port}", "--web.config.file", str(web_config)],
            stdout=sink, stderr=subprocess.STDOUT, cwd=folder, env=env, preexec_fn=limit,
        )  # fmt: skip
    good = basic("alice", "right")
    try:
        deadline = time.monotonic() + 60
        while get(url + "/-/ready", {})[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        get(url + "/metrics", good)  # a successful login, cached from now on

        # User enumeration: an unknown user against a known one with a wrong password.
        known = [get(url + "/metrics", basic("alice", "wrong"))[1] for _ in range(5)]
        unknown = [get(url + "/metrics", basic(f"mallory{i}", "x"))[1] for i in range(5)]
        print(
            f"timing: known user {statistics.median(known) * 1000:.0f} ms, unknown user "
            f"{statistics.median(unknown) * 1000:.0f} ms (medians of 5)"
        )

        # 64 concurrent wrong passwords, scrapes meanwhile.
        with concurrent.futures.ThreadPoolExecutor(80) as pool:
            flood = [
                pool.submit(get, url + "/metrics", basic("alice", f"x{i}"), 30) for i in range(64)
            ]
            time.sleep(0.05)
            scrapes = [get(url + "/metrics", good) for _ in range(10)]
            statuses = [f.result()[0] for f in flood]
        counts = {s: statuses.count(s) for s in sorted(set(statuses))}
        print(f"wrong-password flood: scrapes {summary(scrapes)}; flood answers {counts}")

        # Slowloris: 1,024 connections sending headers slowly, scrapes meanwhile.
        size_before = log.stat().st_size
        sockets: list[socket.socket] = []
        scrapes = []
        began = time.monotonic()
        for i in range(1024):
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=2)
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                sockets.append(sock)
            except OSError:
                pass
            if i % 64 == 63:
                scrapes.append(get(url + "/metrics", good))
        for _ in range(10):
            for sock in sockets:
                with contextlib.suppress(OSError):
                    sock.sendall(b"X-Slow: 1\r\n")
            scrapes.append(get(url + "/metrics", good))
            time.sleep(0.5)
        for sock in sockets:
            sock.close()
        grown = log.stat().st_size - size_before
        print(
            f"slowloris (1,024 connections, {time.monotonic() - began:.0f} s): scrapes "
            f"{summary(scrapes)}; log grew {grown / 1024:.0f} KiB"
        )
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


if __name__ == "__main__":
    main()
