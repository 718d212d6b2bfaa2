"""Benchmark scrapes of a running demo exporter: latency, throughput and the process's memory.

Starts `python -m exporter --demo` on a free loopback port, waits until it is ready, scrapes
/metrics N times (C at a time) and prints numbers. Usage:
    python benchmarks/bench_scrape.py [scrapes=2000] [concurrency=8]
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def scrape(url: str, total: int, concurrency: int, gzip: bool) -> list[float]:
    latencies: list[float] = []
    headers = {"Accept-Encoding": "gzip" if gzip else "identity"}
    queue = iter(range(total))

    async def worker(session: aiohttp.ClientSession) -> None:
        for _ in queue:
            start = time.perf_counter()
            async with session.get(url, headers=headers) as response:
                await response.read()
                assert response.status == 200
            latencies.append(time.perf_counter() - start)

    async with aiohttp.ClientSession(auto_decompress=False) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return latencies


async def wait_ready(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            try:
                async with session.get(url + "/-/ready") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("exporter did not become ready")


async def measure(process: subprocess.Popen[bytes], url: str, total: int, concurrency: int) -> None:
    await wait_ready(url)
    print(f"demo exporter ready; RSS {rss_mib(process.pid):.1f} MiB")
    for gzip in (False, True):
        start = time.perf_counter()
        latencies = sorted(await scrape(url + "/metrics", total, concurrency, gzip))
        elapsed = time.perf_counter() - start
        p50 = latencies[len(latencies) // 2] * 1000
        p99 = latencies[int(len(latencies) * 0.99)] * 1000
        kind = "gzip " if gzip else "plain"
        print(
            f"{kind}: {total} scrapes x{concurrency} in {elapsed:.2f} s = "
            f"{total / elapsed:.0f}/s; p50 {p50:.2f} ms, p99 {p99:.2f} ms"
        )
    print(f"RSS after scrapes {rss_mib(process.pid):.1f} MiB")


def main() -> None:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    concurrency = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "exporter", "--demo", "--web.listen-address", f"127.0.0.1:{port}"],
        stderr=subprocess.DEVNULL,
    )
    try:
        asyncio.run(measure(process, f"http://127.0.0.1:{port}", total, concurrency))
    finally:
        process.terminate()
        process.wait(10)


if __name__ == "__main__":
    main()
