"""Memory under a flood of huge transforms, and whether small images keep flowing.

    python -m loadtests.bench_memory [--seconds 20] [--clients 64]

CLIENTS connections ask for 800 px WebP of 5120x2880 progressive JPEGs (every request a
different source, so every one is a full decode of the biggest kind), while one more
client asks for 200 px thumbnails of a small image every 100 ms. Reports the edge's
memory with its transform worker processes: the highest total RSS sampled 20 times a
second (what the host had to hold at once) and the sum of each process's own peak
(VmHWM; an upper bound, the peaks need not coincide), and the small requests' latency.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from loadtests.bench_transform import peak_rss_mb
from loadtests.images import sample
from loadtests.run import RssSampler
from tools.stack import Stack


async def flood(edge: str, seconds: float, clients: int) -> tuple[int, dict[int, int], list[float]]:
    deadline = time.perf_counter() + seconds
    statuses: dict[int, int] = {}
    small: list[float] = []
    counter = 0

    async def big(client: httpx.AsyncClient) -> None:
        nonlocal counter
        while time.perf_counter() < deadline:
            counter += 1
            response = await client.get(f"{edge}/_/w=800,f=webp/huge/{counter % 4900}")
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    async def little(client: httpx.AsyncClient) -> None:
        n = 0
        while time.perf_counter() < deadline:
            n += 1
            started = time.perf_counter()
            response = await client.get(f"{edge}/_/w={150 + n % 100},f=jpeg/small/0")
            if response.status_code == 200:
                small.append(time.perf_counter() - started)
            await asyncio.sleep(0.1)

    async with httpx.AsyncClient(timeout=120) as client:
        await asyncio.gather(little(client), *(big(client) for _ in range(clients)))
    return counter, statuses, small


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as cache:
        root = Path(tmp)
        (root / "huge").mkdir()
        (root / "small").mkdir()
        (root / "huge" / "0").write_bytes(sample("photo-5k"))
        for i in range(1, 4900):
            os.link(root / "huge" / "0", root / "huge" / str(i))
        (root / "small" / "0").write_bytes(sample("photo-2560"))
        stack = Stack()
        try:
            _, edge = stack.start_pair(root, cache=Path(cache), origin_port=18381, edge_port=18380)
            sampler = RssSampler(edge.process.pid, interval=0.05)
            sampler.start()
            _, statuses, small = asyncio.run(flood(edge.url, args.seconds, args.clients))
            sampler.stop()
            rss = peak_rss_mb(edge.process.pid)
        finally:
            stack.stop()
    together = max(mb for _, mb in sampler.samples)
    small.sort()
    print(f"{args.clients} clients, 5120x2880 progressive JPEG to 800 px WebP, {args.seconds:g} s")
    print(
        f"- edge peak RSS with its workers: {together:.0f} MB at once (sampled), "
        f"{rss:.0f} MB as the sum of each process's peak"
    )
    print(f"- big requests by status: {dict(sorted(statuses.items()))}")
    if small:
        p99 = small[max(0, int(len(small) * 0.99) - 1)]
        print(
            f"- small thumbnails meanwhile: {len(small)} served, "
            f"p50 {statistics.median(small) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
