"""`python -m loadtests bench`: every benchmark figure in one run, each as a ratio to its
baseline measured in the same run on the same machine, written to BENCHMARKS.md and to
a results file that `python -m loadtests plan` reads.

    python -m loadtests bench [--seconds 8] [--rounds 2] [--transform-rounds 2]
                              [--concurrency 8] [--only AVIF]

- L1 and L2 hits against a minimal raw-ASGI app and a bare Starlette route returning the
  same bytes under the same uvicorn settings (loadtests.bench_cache);
- transforms against plain pyvips loops doing the same work, best of one process, one
  process per core and one thread per core (loadtests.bench_transform): once with every
  source fetched from the origin, once with four sources held in the edge's memory (the
  edge's own cost, without the origin's and the fetch's share of the cores);
- peak RSS of the edge during each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from loadtests import bench_cache, bench_transform
from loadtests.bench_transform import positive

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "loadtests" / "results" / "bench.json"
REPORT = ROOT / "BENCHMARKS.md"


def machine() -> str:
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{platform.machine()}, {os.cpu_count()} cores ({model}), Linux "
        f"{platform.release()}, Python {platform.python_version()}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests bench", description=__doc__)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument(
        "--rounds", type=positive, default=2, help="hit runs per server (best kept)"
    )
    parser.add_argument(
        "--transform-rounds",
        type=positive,
        default=2,
        help="alternated runs of each transform workload, plain loops and edge (best kept)",
    )
    parser.add_argument("--connections", type=int, default=32, help="for the hit benchmarks")
    parser.add_argument("--concurrency", type=int, default=8, help="for the transforms")
    parser.add_argument("--only", help="transform workloads whose name contains this")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--report", type=Path, default=REPORT)
    args = parser.parse_args(argv)
    command = "python -m loadtests bench " + " ".join(argv if argv is not None else sys.argv[1:])

    size, hits = bench_cache.measure(args.seconds, args.rounds, args.connections)
    with tempfile.TemporaryDirectory() as scratch:  # one deletion, after both (see measure)
        transforms, held = (  # fetched per request, then held in the edge's memory
            bench_transform.measure(
                args.seconds,
                args.concurrency,
                args.only,
                cached_sources=cached,
                rounds=args.transform_rounds,
                scratch=Path(scratch),
            )
            for cached in (False, True)
        )
    results = {
        "date": time.strftime("%Y-%m-%d"),
        "command": command.strip(),
        "machine": machine(),
        "cores": os.cpu_count(),
        "hit_generator": bench_cache.GENERATOR,
        "transform_generator": bench_transform.DRIVER,
        "hit_response_bytes": size,
        "hits": [
            {"name": h.name, "rps": h.rps, "p99": h.p99, "ratio": h.rps / hits[0].rps}
            | ({"peak_rss_mb": h.rss_mb} if h.rss_mb is not None else {})
            for h in hits
        ],
        "transforms": _transform_rows(transforms),
        "transforms_sources_in_memory": _transform_rows(held),
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    tables = (bench_transform.table(transforms), bench_transform.table(held))
    text = report(results, bench_cache.table(hits), tables, args)
    args.report.write_text(text)
    print(text)
    return 0


def _transform_rows(rows: list[bench_transform.Row]) -> list[dict[str, object]]:
    return [
        {
            "name": work.name,
            "plain_best_rps": best,
            "edge_rps": edge["rps"],
            "ratio": edge["rps"] / best,
            "ratio_per_round": {
                "low": edge["ratio_low"],
                "median": edge["ratio_median"],
                "high": edge["ratio_high"],
            },
            "p50_ms": edge["p50"],
            "p99_ms": edge["p99"],
            "peak_rss_mb": edge["rss"],
            "cpu_ms_per_request": {
                part: edge[f"{part}_ms"]
                for part in ("edge", "workers", "origin")
                if f"{part}_ms" in edge
            },
        }
        for work, _, _, _, edge, best in rows
    ]


def report(
    results: dict[str, object], hits: str, transforms: tuple[str, str], args: argparse.Namespace
) -> str:
    return f"""# Benchmarks

Written by `{results["command"]}` on {results["date"]}; the raw numbers are in
`{args.results.relative_to(ROOT) if args.results.is_relative_to(ROOT) else args.results}`
(read by `python -m loadtests plan`).

Machine: {results["machine"]}. Everything (servers and load generator) runs on this one
machine, so each figure is a ratio to a baseline measured in the same run: these shared
2-core machines drift by 10-20% between runs.

## Cache hits

{results["hit_response_bytes"]:,} byte JPEG, one process per server, uvicorn with
httptools and uvloop, load from {results["hit_generator"]} with {args.connections}
connections, best of {args.rounds} x {args.seconds} s runs, alternated. L2 is an edge
with L1 off (`EDGE_MEMORY_CACHE_MB=0`), so every request reads its disk file. Peak RSS is
the edge's VmHWM at the end (with its transform worker processes, if it started any).

{hits}

## Transforms

Unique URLs (nothing cached: each request names a new source key), the edge's default
encoder settings, load from {results["transform_generator"]} with {args.concurrency}
connections, best of {args.transform_rounds} x {args.seconds} s runs, the plain loops and
the edge alternated (so the machine's drift reaches them alike). The plain loops are
`thumbnail_source` from memory + the same encoder, with `VIPS_CONCURRENCY=1`. The edge
(its defaults: transforms in worker processes) is restarted per run, with an empty cache
directory, and measured once its 2 s warm-up's last requests are done (wrk leaves them
in flight); its peak RSS is that workload's: the sum of the VmHWM of the edge and its
worker processes (an upper bound: the peaks need not coincide).

{transforms[0]}

The same with four sources held in the edge's source cache (`--cached-sources`): each
URL is still new (a background colour that changes the key and nothing else; decoded
copies off, so every request decodes its source), but nothing is fetched, so the
origin's and the fetch's CPU (about 3 of the 4-5 ms the edge and origin spend per
request above) is not taken from the transforms.

{transforms[1]}
"""


if __name__ == "__main__":
    sys.exit(main())
