"""Replay Zipf traffic through the L1 policy (S3-FIFO) and plain LRU; print hit ratios.

    python -m loadtests.simulate [--objects 100000] [--requests 1000000] [--seed 1]

Objects have sizes drawn from a log-normal spread clipped to 5-500 KB (median about
40 KB, the shape of resized web images); popularity is Zipf with alpha 0.7, 0.9 and 1.1;
caches hold 1 %, 5 % and 20 % of the working set's bytes. The LRU is cachetools'
`LRUCache` with `getsizeof`, the structure the L1 would otherwise be built on.
"""

from __future__ import annotations

import argparse
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass

from cachetools import LRUCache

from edge.cache.policy import S3FIFO

ALPHAS = (0.7, 0.9, 1.1)
FRACTIONS = (0.01, 0.05, 0.20)


@dataclass(frozen=True)
class Result:
    requests: int
    hits: int
    bytes_requested: int
    bytes_hit: int

    @property
    def hit_ratio(self) -> float:
        return self.hits / self.requests

    @property
    def byte_hit_ratio(self) -> float:
        return self.bytes_hit / self.bytes_requested


def sizes(objects: int, rng: random.Random) -> list[int]:
    return [int(min(500_000, max(5_000, rng.lognormvariate(10.6, 0.9)))) for _ in range(objects)]


def zipf_trace(objects: int, requests: int, alpha: float, rng: random.Random) -> list[int]:
    weights = [1.0 / (rank**alpha) for rank in range(1, objects + 1)]
    cumulative = list(itertools.accumulate(weights))
    ids = list(range(objects))
    rng.shuffle(ids)  # popularity independent of object id (and so of size)
    ranks = rng.choices(range(objects), cum_weights=cumulative, k=requests)
    return [ids[rank] for rank in ranks]


def run_s3fifo(trace: list[int], size_of: list[int], capacity: int) -> Result:
    cache: S3FIFO[int, int] = S3FIFO(capacity)
    get, put = cache.get, cache.put
    hits = bytes_hit = total = 0
    for key in trace:
        size = size_of[key]
        total += size
        if get(key) is not None:
            hits += 1
            bytes_hit += size
        else:
            put(key, size, size)
    return Result(len(trace), hits, total, bytes_hit)


def run_lru(trace: list[int], size_of: list[int], capacity: int) -> Result:
    cache: LRUCache[int, int] = LRUCache(maxsize=capacity, getsizeof=lambda size: size)
    hits = bytes_hit = total = 0
    for key in trace:
        size = size_of[key]
        total += size
        if cache.get(key) is not None:
            hits += 1
            bytes_hit += size
        else:
            cache[key] = size
    return Result(len(trace), hits, total, bytes_hit)


POLICIES: dict[str, Callable[[list[int], list[int], int], Result]] = {
    "LRU": run_lru,
    "S3-FIFO": run_s3fifo,
}


def simulate(
    objects: int, requests: int, seed: int
) -> list[tuple[float, float, dict[str, Result]]]:
    rng = random.Random(seed)
    size_of = sizes(objects, rng)
    working_set = sum(size_of)
    rows = []
    for alpha in ALPHAS:
        trace = zipf_trace(objects, requests, alpha, rng)
        for fraction in FRACTIONS:
            capacity = int(working_set * fraction)
            results = {name: run(trace, size_of, capacity) for name, run in POLICIES.items()}
            rows.append((alpha, fraction, results))
    return rows


def table(rows: list[tuple[float, float, dict[str, Result]]]) -> str:
    lines = [
        "| Zipf alpha | cache size | LRU hit | S3-FIFO hit | LRU byte hit | S3-FIFO byte hit |",
        "|---|---|---|---|---|---|",
    ]
    for alpha, fraction, results in rows:
        lru, ours = results["LRU"], results["S3-FIFO"]
        lines.append(
            f"| {alpha} | {fraction:.0%} | {lru.hit_ratio:.1%} | **{ours.hit_ratio:.1%}** "
            f"| {lru.byte_hit_ratio:.1%} | **{ours.byte_hit_ratio:.1%}** |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(
        f"{args.objects:,} objects, {args.requests:,} requests, seed {args.seed}; "
        "cache size as a share of the working set's bytes\n"
    )
    print(table(simulate(args.objects, args.requests, args.seed)))


if __name__ == "__main__":
    main()
