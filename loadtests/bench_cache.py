"""Cache-hit throughput: the edge's L1 and L2 hits against baselines serving the same bytes.

    python -m loadtests.bench_cache [--seconds 10] [--rounds 3] [--connections 32]

Five single-process servers under the same uvicorn settings (httptools, uvloop): a
minimal raw-ASGI app and a bare Starlette route returning a ~30 KB JPEG from memory,
an edge whose L1 holds it, an edge with L1 off (EDGE_MEMORY_CACHE_MB=0) so every
request is an L2 (disk) hit, and the L1 edge again with its hits answered through ASGI
(EDGE_PROTOCOL_HITS=false: what the edge's httptools protocol subclass saves). The
baselines run under uvicorn's own httptools protocol. The edges keep their JSON access
log on, written to a file, as deployed. Runs alternate so drift hits all; the best run of
each is compared. wrk is the load generator (Debian's package): one thread, 32
connections; without it an asyncio client, which is slower than the edge's hit path (its
numbers are then the client's).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from loadtests.bench_origin import bench_arguments, best_of, machine, wrk
from loadtests.bench_transform import drive, peak_rss_mb
from loadtests.images import CORPUS
from tools.stack import Stack, wait_listening

GENERATOR = "wrk -t1" if shutil.which("wrk") else "an asyncio client (httpx)"
PATH = "/_/_/bench/photo.jpg"  # the no-options route: the origin's bytes, cached as they are


def small_jpeg(target: Path) -> int:
    """A ~30 KB JPEG: the corpus photo at 600 px when present, else a generated one."""
    import pyvips

    target.parent.mkdir(parents=True)
    source = CORPUS / "ladybird.jpg"
    if source.exists():
        image = pyvips.Image.thumbnail(str(source), 600)
    else:
        noise = pyvips.Image.gaussnoise(420, 280, mean=128, sigma=40)
        image = noise.bandjoin([noise, noise]).cast("uchar").copy(interpretation="srgb")
    data = image.jpegsave_buffer(Q=85)
    target.write_bytes(data)
    return len(data)


HITS = (
    "raw ASGI (memory)",
    "Starlette (memory)",
    "edge L1 hit",
    "edge L2 hit",
    "edge L1 hit, through ASGI",
)


@dataclass
class HitRow:
    name: str
    rps: float
    p99: str
    rss_mb: float | None  # the edges' peak RSS


def load(url: str, seconds: int, connections: int) -> tuple[float, str]:
    """wrk when installed, else the asyncio client (slower: it may be the bottleneck)."""
    if shutil.which("wrk"):
        return wrk(url, seconds, connections)
    done, latencies, _ = asyncio.run(drive(lambda _: url, seconds, connections))
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else 0.0
    return done / seconds, f"{p99:.2f}ms"


def measure(seconds: int, rounds: int, connections: int) -> tuple[int, list[HitRow]]:
    """The response size and the best run of each server, runs alternated."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        size = small_jpeg(root / "blobs" / "bench" / "photo.jpg")
        stack = Stack()
        baselines = []
        edges = {}
        try:
            origin = stack.start_origin(root / "blobs", 18091)
            for name, port, memory, cache_dir, protocol in (
                ("edge L1 hit", 18092, "256", "l1", "true"),
                ("edge L2 hit", 18093, "0", "l2", "true"),
                ("edge L1 hit, through ASGI", 18096, "256", "asgi", "false"),
            ):
                edges[name] = stack.start(
                    "edge",
                    port,
                    {
                        "EDGE_PORT": str(port),
                        "EDGE_ORIGIN_URL": origin.url,
                        "EDGE_MEMORY_CACHE_MB": memory,
                        "EDGE_CACHE_DIR": str(root / cache_dir),
                        "EDGE_PROTOCOL_HITS": protocol,
                    },
                    root / f"edge-{cache_dir}.log",
                )
            for kind, port in (("raw", 18094), ("starlette", 18095)):
                baselines.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "loadtests.baselines",
                            kind,
                            str(root / "blobs" / "bench" / "photo.jpg"),
                            str(port),
                        ]
                    )
                )
                wait_listening(port)
            ports = (18094, 18095, 18092, 18093, 18096)
            targets = {n: f"http://127.0.0.1:{p}{PATH}" for n, p in zip(HITS, ports, strict=True)}
            for name, url in targets.items():
                if name.startswith("edge"):
                    httpx.get(url)
                    time.sleep(0.5)  # the disk write is in the background
                    status = httpx.get(url).headers.get("cache-status")
                    print(f"{name}: {status}", file=sys.stderr)
                load(url, 2, connections)  # warm up
            best = best_of(targets, rounds, seconds, connections, load)
            rss = {name: peak_rss_mb(edge.process.pid) for name, edge in edges.items()}
        finally:
            stack.stop()
            for process in baselines:
                process.terminate()
                process.wait()
    return size, [HitRow(n, *best[n], rss.get(n)) for n in HITS]


def table(rows: list[HitRow]) -> str:
    base = rows[0].rps
    lines = [
        "| server | requests/s | p99 | ratio to raw ASGI | peak RSS MB |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        rss = f"{r.rss_mb:.0f}" if r.rss_mb is not None else "-"
        lines.append(f"| {r.name} | {r.rps:,.0f} | {r.p99} | {r.rps / base:.2f} | {rss} |")
    return "\n".join(lines)


def main() -> int:
    args = bench_arguments(__doc__)
    size, rows = measure(args.seconds, args.rounds, args.connections)
    runs = f"best of {args.rounds} x {args.seconds} s"
    print(
        f"\n{size / 1024:.0f} KB response, {GENERATOR} -c{args.connections}, {runs}, "
        "one process each"
    )
    print(machine())
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
