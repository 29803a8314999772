"""Transform throughput of the edge against plain pyvips loops doing the same work, in one run.

    python -m loadtests.bench_transform [--seconds 8] [--concurrency 8] [--only NAME]
                                        [--cached-sources] [--rounds 1]

For each workload: a plain loop (thumbnail from memory, as the edge decodes, + the same
encoder settings as the edge's defaults) as one process, one process per core, and one
thread per core in one process (each with VIPS_CONCURRENCY=1); then the edge, serving
unique URLs (every request names a different key, so nothing can be reused) from an
origin over a local directory, driven with CONCURRENCY connections by wrk (a Lua script
names the next source in each request) when it is installed, else by an asyncio client.
The edge is restarted per workload so its peak RSS (VmHWM) is that workload's.

CPU per image is the figure that does not move with whoever else shares the cores: the
edge's (its process and its workers, from /proc, the origin's apart) against the lowest
of the plain loops' (their own user + system time per image).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from loadtests.images import sample
from tools.stack import Stack


@dataclass(frozen=True)
class Workload:
    name: str
    sample: str
    width: int
    format: str


WORKLOADS = [
    Workload("2560x1600 JPEG -> 400 px WebP q80", "photo-2560", 400, "webp"),
    Workload("2560x1600 JPEG -> 400 px JPEG q80", "photo-2560", 400, "jpeg"),
    Workload("5120x2880 JPEG -> 800 px WebP q80", "photo-5k", 800, "webp"),
    Workload("2140x1200 RGBA PNG -> 400 px WebP q80", "alpha-png", 400, "webp"),
    Workload("2560x1600 JPEG -> 400 px AVIF", "photo-2560", 400, "avif"),
]
CORES = os.cpu_count() or 1
WRK = shutil.which("wrk") is not None
DRIVER = "wrk" if WRK else "an asyncio client"
# extra edge settings for experiments, e.g. BENCH_EDGE_ENV="EDGE_TRANSFORM_PROCESSES=true"
EXTRA_EDGE_ENV = dict(
    item.split("=", 1) for item in os.environ.get("BENCH_EDGE_ENV", "").split() if "=" in item
)


def _encode(image: object, fmt: str) -> bytes:
    """The edge's own encoder choices (edge/transform/encode.py), content check included:
    the comparison is for equal work."""
    from edge.transform.encode import Encoding, content_of, encode_at

    image = image.copy_memory()  # type: ignore[attr-defined]
    encoding = Encoding()
    return encode_at(image, fmt, encoding.quality(fmt), encoding, content_of(image))


def _loop(data: bytes, width: int, fmt: str, seconds: float) -> int:
    import pyvips

    count = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        # as the edge loads (edge/transform/render.py): 8-9% less CPU than thumbnail_buffer,
        # which copies the whole source into a blob first
        source = pyvips.Source.new_from_memory(data)
        image = pyvips.Image.thumbnail_source(source, width, option_string="fail_on=truncated")
        if image.hasalpha() and fmt == "jpeg":
            image = image.flatten(background=[255, 255, 255])
        _encode(image, fmt)
        count += 1
    return count


def _process_entry(data: bytes, width: int, fmt: str, seconds: float, out: object) -> None:
    import pyvips

    pyvips.cache_set_max(0)
    pyvips.concurrency_set(1)
    start = time.process_time()
    count = _loop(data, width, fmt, seconds)
    out.put((count, time.process_time() - start))  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Plain:
    """A plain loop's run: images/s, and CPU milliseconds per image (user + system)."""

    rps: float
    cpu_ms: float


def plain_processes(data: bytes, work: Workload, n: int, seconds: float) -> Plain:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_process_entry, args=(data, work.width, work.format, seconds, out))
        for _ in range(n)
    ]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    images = sum(count for count, _ in results)
    return Plain(images / seconds, 1000 * sum(cpu for _, cpu in results) / max(images, 1))


def plain_threads(data: bytes, work: Workload, n: int, seconds: float) -> Plain:
    import pyvips

    pyvips.cache_set_max(0)
    pyvips.concurrency_set(1)
    start = time.process_time()
    counts: list[int] = []
    threads = [
        threading.Thread(
            target=lambda: counts.append(_loop(data, work.width, work.format, seconds))
        )
        for _ in range(n)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    images = sum(counts)
    return Plain(images / seconds, 1000 * (time.process_time() - start) / max(images, 1))


def process_tree(pid: int) -> list[int]:
    """The process and its live descendants (the edge's transform worker processes)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:  # gone
        return []
    return [pid, *(each for child in children for each in process_tree(int(child)))]


def status_mb(pid: int, field: str) -> float:
    """A memory field of /proc/PID/status (VmRSS now, VmHWM the peak), in MB, summed over
    the process and its descendants; 0 if gone."""
    total = 0.0
    for each in process_tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith(f"{field}:"):
                    total += int(line.split()[1]) / 1024
    return total


def cpu_seconds(pid: int, *, descendants: bool = False) -> float:
    """User + system CPU of a process (all its threads), with its live descendants."""
    total = 0
    for each in process_tree(pid) if descendants else [pid]:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    """Peak RSS of a process tree: the sum of each process's own peak (an upper bound,
    the peaks need not coincide)."""
    return status_mb(pid, "VmHWM")


async def drive(url_for: object, seconds: float, concurrency: int) -> tuple[int, list[float], int]:
    latencies: list[float] = []
    failures = 0
    counter = 0
    deadline = time.perf_counter() + seconds

    async def user(client: httpx.AsyncClient) -> None:
        nonlocal counter, failures
        while time.perf_counter() < deadline:
            counter += 1
            started = time.perf_counter()
            response = await client.get(url_for(counter))  # type: ignore[operator]
            if response.status_code == 200:
                latencies.append(time.perf_counter() - started)
            else:
                failures += 1

    async with httpx.AsyncClient(timeout=60) as client:
        await asyncio.gather(*(user(client) for _ in range(concurrency)))
    return len(latencies), latencies, failures


def bench_edge(
    root: Path,
    data: bytes,
    work: Workload,
    seconds: float,
    concurrency: int,
    cached_sources: bool = False,
) -> dict[str, float]:
    blobs = root / "blobs"
    folder = blobs / work.sample
    if not folder.exists():
        folder.mkdir(parents=True)
        first = folder / "0"
        first.write_bytes(data)
        for i in range(1, 5000):
            os.link(first, folder / str(i))
    stack = Stack()
    # fresh: nothing from earlier runs; not deleted after the run (see `measure`)
    cache = Path(tempfile.mkdtemp(dir=root, prefix="cache-"))
    try:
        origin, edge = stack.start_pair(
            blobs,
            cache=cache,
            origin_port=18181,
            edge_port=18180,
            edge_env={
                # equal work: no decoded copies, every variant decodes its source
                **({"EDGE_DECODED_CACHE_MB": "0"} if cached_sources else {}),
                # throughput, not load shedding: the plain loops queue without limit, and
                # on a slow day 8 connections of 5K sources expect more than the default
                # 2 s of wait (every answer was then a fast 503)
                "EDGE_MAX_QUEUE_WAIT_S": "60",
                **EXTRA_EDGE_ENV,
            },
        )
        # 4 sources held in memory, or all different
        paths = Paths(work, modulo=4 if cached_sources else 4900, colour=cached_sources)

        def load(length: float, first: int = 0) -> dict[str, float]:
            if WRK:
                return wrk_run(edge.url, paths, length, concurrency, root, first)
            return client_run(edge.url, paths, length, concurrency, first)

        load(2, first=2000)  # warm up
        settle(edge.url)
        before = _cpu(edge.process.pid, origin.process.pid)
        result = load(seconds)
        # CPU per request: where the time beyond the transform itself goes
        served = max(1.0, result["rps"] * seconds)
        after = _cpu(edge.process.pid, origin.process.pid)
        names = ("edge_ms", "workers_ms", "origin_ms")
        for name, start, end in zip(names, before, after, strict=True):
            result[name] = (end - start) * 1000 / served
        rss = peak_rss_mb(edge.process.pid)
        if result["failures"]:  # errors answer fast: they would pass for throughput
            raise RuntimeError(f"{work.name}: {result['failures']:.0f} answers were not 2xx")
    finally:
        stack.stop()
    return {**result, "rss": rss}


def settle(base: str, timeout: float = 60.0) -> None:
    """Wait until the edge has no transform running or queued. wrk stops with requests in
    flight and the edge still finishes them (queued ones too), so a run right after the
    warm-up began with its backlog: 8 requests of the 5K workload held both cores for 1.2
    s, a fifth of a 6 s run, and their CPU was charged to the run's requests. The plain
    loops start idle."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = httpx.get(f"{base}/metrics", timeout=5).text
        busy = re.findall(r"^edge_transform(?:_queue_depth|s_in_flight) (\S+)$", text, re.M)
        if len(busy) == 2 and not any(float(value) for value in busy):
            return
        time.sleep(0.05)
    raise RuntimeError(f"the edge at {base} still had transforms after {timeout:g} s")


@dataclass(frozen=True)
class Paths:
    """Request path number `counter` for a workload: source `counter % modulo`; with
    `colour`, also a new background colour, which changes the cache key and nothing else
    (no alpha to flatten, no padding), so every URL is new over a few sources."""

    work: Workload
    modulo: int
    colour: bool = False

    def at(self, counter: int) -> str:
        colour = f",background=%23{counter % 0x1000000:06x}" if self.colour else ""
        options = f"w={self.work.width},f={self.work.format}{colour}"
        return f"/_/{options}/{self.work.sample}/{counter % self.modulo}"

    def lua(self) -> str:
        """The same path as a Lua expression of `counter`, for wrk."""
        colour = ',background=%23" .. string.format("%06x", counter) .. "' if self.colour else ""
        options = f"w={self.work.width},f={self.work.format}{colour}"
        return f'"/_/{options}/{self.work.sample}/" .. (counter % {self.modulo})'


def _cpu(edge: int, origin: int) -> tuple[float, float, float]:
    """CPU seconds so far: the edge process, its worker processes, the origin."""
    own = cpu_seconds(edge)
    return own, cpu_seconds(edge, descendants=True) - own, cpu_seconds(origin)


def wrk_run(
    base: str,
    paths: Paths,
    seconds: float,
    concurrency: int,
    root: Path,
    first: int = 0,
) -> dict[str, float]:
    """wrk with a Lua script that walks the sources, so each request names the next one."""
    script = root / "paths.lua"
    script.write_text(
        f"counter = {first}\n"
        "request = function()\n"
        "  counter = counter + 1\n"
        f'  return wrk.format("GET", {paths.lua()})\n'
        "end\n"
    )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--latency", "-s", str(script), base],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(_grab(r"Requests/sec:\s+([\d.]+)", out)),
        "p50": _millis(_grab(r"^\s+50%\s+(\S+)", out)),
        "p99": _millis(_grab(r"^\s+99%\s+(\S+)", out)),
        "failures": int(non_2xx.group(1)) if non_2xx else 0,
    }


def client_run(
    base: str, paths: Paths, seconds: float, concurrency: int, first: int = 0
) -> dict[str, float]:
    """`wrk_run`'s figures from the asyncio client, where wrk is not installed."""
    done, latencies, failures = asyncio.run(
        drive(lambda i: base + paths.at(first + i), seconds, concurrency)
    )
    latencies.sort()
    return {
        "rps": done / seconds,
        "p50": statistics.median(latencies) * 1000 if latencies else 0,
        "p99": latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else 0,
        "failures": failures,
    }


def _grab(pattern: str, text: str) -> str:
    found = re.search(pattern, text, re.MULTILINE)
    return found.group(1) if found else "0"


def _millis(value: str) -> float:
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if value.endswith(unit):
            return float(value[: -len(unit)]) * factor
    return float(value)


Row = tuple[Workload, float, float, float, dict[str, float], float]


def measure(
    seconds: float,
    concurrency: int,
    only: str | None = None,
    cached_sources: bool = False,
    rounds: int = 1,
    scratch: Path | None = None,
) -> list[Row]:
    """Per workload: plain 1 process, N processes, N threads, the edge's figures, best plain.
    With `rounds` > 1 the four runs alternate that many times and each keeps its best, so
    the machine's drift (10-30% over minutes here) hits them all alike. The edge's figures
    also hold each round's own ratio (its run against that round's best plain loop, run
    minutes apart at most): `ratio_low`, `ratio_median`, `ratio_high`.

    The edge's files (sources, each run's cache) go under `scratch`, or a temporary
    directory, and are deleted only at the end: files deleted between runs made the next
    run's cache writes slow (ext4 without a journal, as here, skips recently freed inodes
    when it allocates one; the edge's system CPU per cached result went from 0.3 ms to as
    much as 1.5 ms), a cost the plain loops, which write no files, never see."""
    rows: list[Row] = []
    with contextlib.ExitStack() as stack:
        tmp = str(scratch) if scratch else stack.enter_context(tempfile.TemporaryDirectory())
        for work in WORKLOADS:
            if only and only not in work.name:
                continue
            data = sample(work.sample)
            one = procs = threads = 0.0
            plain_cpu = float("inf")
            edge: dict[str, float] = {"rps": 0.0}
            paired: list[float] = []
            for round_ in range(1, rounds + 1):
                plain = (
                    plain_processes(data, work, 1, seconds),
                    plain_processes(data, work, CORES, seconds),
                    plain_threads(data, work, CORES, seconds),
                )
                one, procs, threads = (
                    max(a, b.rps) for a, b in zip((one, procs, threads), plain, strict=True)
                )
                plain_cpu = min(plain_cpu, *(run.cpu_ms for run in plain))
                run = bench_edge(Path(tmp), data, work, seconds, concurrency, cached_sources)
                paired.append(run["rps"] / max(p.rps for p in plain))
                figures = ", ".join(f"{rps:.1f}" for rps in (*(p.rps for p in plain), run["rps"]))
                print(
                    f"  round {round_} (1p, {CORES}p, {CORES}t, edge): {figures}",
                    file=sys.stderr,
                )
                edge = run if run["rps"] > edge["rps"] else edge
            paired.sort()
            edge = {
                **edge,
                "ratio_low": paired[0],
                "ratio_median": statistics.median(paired),
                "ratio_high": paired[-1],
                "plain_cpu_ms": plain_cpu,
            }
            best = max(one, procs, threads)
            rows.append((work, one, procs, threads, edge, best))
            plain = f"1p {one:.1f}, {CORES}p {procs:.1f}, {CORES}t {threads:.1f}"
            print(f"{work.name}: {plain}, edge {edge['rps']:.1f}/s", file=sys.stderr, flush=True)
    return rows


def table(rows: list[Row]) -> str:
    columns = [
        "workload",
        "plain 1 process",
        f"plain {CORES} processes",
        f"plain {CORES} threads",
        "edge req/s",
        "edge / best plain",
        "per round: median (range)",
        "p50 ms",
        "p99 ms",
        "edge peak RSS MB",
        "CPU ms/request: edge + workers + origin",
        "best plain CPU ms/image",
        "CPU: (edge + workers) / plain",
    ]
    lines = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for work, one, procs, threads, edge, best in rows:
        cells = [
            work.name,
            f"{one:.1f}",
            f"{procs:.1f}",
            f"{threads:.1f}",
            f"{edge['rps']:.1f}",
            f"{edge['rps'] / best:.2f}",
            f"{edge['ratio_median']:.2f} ({edge['ratio_low']:.2f}-{edge['ratio_high']:.2f})",
            f"{edge['p50']:.0f}",
            f"{edge['p99']:.0f}",
            f"{edge['rss']:.0f}",
            f"{edge['edge_ms']:.1f} + {edge['workers_ms']:.1f} + {edge['origin_ms']:.1f}",
            f"{edge['plain_cpu_ms']:.1f}",
            f"{(edge['edge_ms'] + edge['workers_ms']) / edge['plain_cpu_ms']:.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def positive(text: str) -> int:
    """An argparse type: an integer of at least 1 (a count of runs)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--only", help="run workloads whose name contains this")
    parser.add_argument(
        "--cached-sources",
        action="store_true",
        help="4 sources held in the edge's source cache (no fetch per request), results not "
        "stored (every request transforms)",
    )
    parser.add_argument("--rounds", type=positive, default=1, help="alternated runs, best kept")
    args = parser.parse_args()
    rows = measure(args.seconds, args.concurrency, args.only, args.cached_sources, args.rounds)
    print(
        f"\nmachine: {platform.machine()}, {CORES} cores, Python {platform.python_version()}; "
        f"{args.seconds:g} s per run, best of {args.rounds}, edge driven by {DRIVER} with "
        f"{args.concurrency} connections\n"
    )
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
