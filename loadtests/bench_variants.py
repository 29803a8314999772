"""Many widths of a few sources: the edge with and without pre-shrunk copies of hot sources.

    python -m loadtests.bench_variants [--seconds 8] [--concurrency 8]

Three 2560x1600 JPEG sources; every request asks for a width no earlier request asked
for (unique URLs, so nothing but the source can be reused), WebP out. Run once with
EDGE_DECODED_CACHE_MB=0 (every variant decodes the source bytes, which stay cached) and
once with the default (variants after the first come from a 1280 px decoded copy).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import tempfile
from pathlib import Path

from loadtests.bench_transform import drive
from loadtests.images import sample
from tools.stack import Stack


def run(root: Path, decoded_mb: str, seconds: float, concurrency: int) -> float:
    stack = Stack()
    try:
        _, edge = stack.start_pair(
            root / "blobs",
            cache=Path(tempfile.mkdtemp(dir=root)),  # each run starts cold: no variant on disk
            origin_port=18281,
            edge_port=18280,
            edge_env={"EDGE_DECODED_CACHE_MB": decoded_mb},
        )
        widths = itertools.count(200)

        def url(i: int) -> str:
            return f"{edge.url}/_/w={next(widths) % 1100 + 100},f=webp/v/{i % 3}.jpg"

        asyncio.run(drive(url, 1, concurrency))  # sources fetched, copies made
        done, _, failures = asyncio.run(drive(url, seconds, concurrency))
        assert failures == 0
    finally:
        stack.stop()
    return done / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "blobs" / "v").mkdir(parents=True)
        for i in range(3):
            (root / "blobs" / "v" / f"{i}.jpg").write_bytes(sample("photo-2560"))
        without = run(root, "0", args.seconds, args.concurrency)
        with_copies = run(root, "256", args.seconds, args.concurrency)
    print("| edge | req/s (100-1199 px WebP, 3 sources) |\n|---|---|")
    print(f"| sources cached, decoded each time | {without:.1f} |")
    print(f"| with pre-shrunk copies | {with_copies:.1f} ({with_copies / without:.2f}x) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
