"""Cache-hit throughput: the edge's L1 and L2 hits against baselines serving the same bytes.

    python -m loadtests.bench_cache [--seconds 10] [--rounds 3] [--connections 32]

Four single-process servers under the same uvicorn settings (httptools, uvloop): a
minimal raw-ASGI app and a bare Starlette route returning a ~30 KB JPEG from memory,
an edge whose L1 holds it, and an edge with L1 off (EDGE_MEMORY_CACHE_MB=0) so every
request is an L2 (disk) hit. The edges keep their JSON access log on, written to a file,
as deployed. Runs alternate so drift hits all; the best run of each is compared. wrk is
the load generator (Debian's package): one thread, 32 connections.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from cdn_common.stack import Stack, wait_listening
from loadtests.bench_origin import wrk
from loadtests.images import CORPUS

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install wrk", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        size = small_jpeg(root / "blobs" / "bench" / "photo.jpg")
        stack = Stack()
        baselines = []
        try:
            origin = stack.start(
                "origin",
                18091,
                {
                    "ORIGIN_STORAGE": f"file://{root / 'blobs'}",
                    "ORIGIN_PORT": "18091",
                    "ORIGIN_ACCESS_LOG": "false",
                },
            )
            for port, memory, cache_dir in ((18092, "256", "l1"), (18093, "0", "l2")):
                stack.start(
                    "edge",
                    port,
                    {
                        "EDGE_PORT": str(port),
                        "EDGE_ORIGIN_URL": origin.url,
                        "EDGE_MEMORY_CACHE_MB": memory,
                        "EDGE_CACHE_DIR": str(root / cache_dir),
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
            targets = {
                "raw ASGI (memory)": f"http://127.0.0.1:18094{PATH}",
                "Starlette (memory)": f"http://127.0.0.1:18095{PATH}",
                "edge L1 hit": f"http://127.0.0.1:18092{PATH}",
                "edge L2 hit": f"http://127.0.0.1:18093{PATH}",
            }
            for name, url in targets.items():
                if name.startswith("edge"):
                    status = httpx.get(url).headers.get("cache-status")
                    time.sleep(0.5)  # the disk write is in the background
                    status = httpx.get(url).headers.get("cache-status")
                    print(f"{name}: {status}", file=sys.stderr)
                wrk(url, 2, args.connections)  # warm up
            best: dict[str, tuple[float, str]] = {}
            for _ in range(args.rounds):
                for name, url in targets.items():
                    rps, p99 = wrk(url, args.seconds, args.connections)
                    if rps > best.get(name, (0.0, ""))[0]:
                        best[name] = (rps, p99)
                    time.sleep(1)
        finally:
            stack.stop()
            for process in baselines:
                process.terminate()
                process.wait()
    base = best["raw ASGI (memory)"][0]
    runs = f"best of {args.rounds} x {args.seconds} s"
    print(
        f"\n{size / 1024:.0f} KB response, wrk -t1 -c{args.connections}, {runs}, one process each"
    )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print("| server | requests/s | p99 | ratio to raw ASGI |\n|---|---|---|---|")
    for name, (rps, p99) in best.items():
        print(f"| {name} | {rps:,.0f} | {p99} | {rps / base:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
