"""`python -m loadtests run`: one Locust scenario, headless, with a report folder.

    python -m loadtests run --scenario mixed --users 64 --duration 60s [--host URL]

Without `--host` it starts an origin and an edge on temporary directories, uploads the
image set (`--images DIR`, default ../shared/corpus, else generated samples) through the
suite's own set-up, and stops them afterwards. With `--host` it drives that edge; give
`--origin URL --origin-key SECRET` to upload there too, or `--image-keys key:width,...`.

The report folder holds Locust's CSV and HTML and `summary.md`: requests/s, p50/p95/p99
and failures per outcome tag, the hit ratio per tier read from the edge's /metrics
before and after, and the load generator's own ceiling (Locust against a trivial
server on this machine, same users), so a generator limit is not read as the edge's.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from loadtests.bench_transform import status_mb
from loadtests.images import CORPUS
from loadtests.suite import Image, format_images, parse_images, upload, warm
from tools.stack import Service, Stack, free_port, wait_listening

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
SCENARIOS = {
    "hot": "HotUser",
    "cold": "ColdUser",
    "mixed": "MixedUser",
    "stampede": "StampedeUser",
    "degraded": "DegradedUser",
    "burst": "BurstHotUser BurstColdUser",
}
WARMED = ("hot", "mixed", "degraded", "burst")  # the hot variants are cached before the run
BURST_FACTOR = 4  # the burst offers this many times the measured transform capacity
HOT_USERS = 4  # the burst's readers of popular variants; every other user asks for new ones
API_KEY = "loadtest-secret"


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for our child processes: `loadtests` importable from any directory
    (it is not an installed package)."""
    root = str(LOCUSTFILE.parent.parent)
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    return {**os.environ, **(extra or {}), "PYTHONPATH": path}


def seconds_of(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(s|m|h)?", text)
    if not match:
        raise argparse.ArgumentTypeError(f"duration like 30s, 2m or 1h, not {text!r}")
    return float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, None: 1}[match.group(2)]


def default_images(scratch: Path) -> Path:
    if CORPUS.is_dir():
        return CORPUS
    from origin.samples import write_samples

    write_samples(scratch / "samples")
    return scratch / "samples" / "samples"


@dataclass
class Target:
    edge: str
    images: list[Image]
    origin: Service | None = None
    edge_pid: int | None = None  # our own edge: its memory is sampled during the run


@contextlib.contextmanager
def local_stack(scratch: Path, images: Path) -> Iterator[Target]:
    """An origin and an edge of our own, on temporary directories."""
    stack = Stack()
    origin_port, edge_port = free_port(), free_port()
    try:
        origin = stack.start(
            "origin",
            origin_port,
            {
                "ORIGIN_STORAGE": f"file://{scratch / 'blobs'}",
                "ORIGIN_PORT": str(origin_port),
                "ORIGIN_API_KEYS": f"loadtest:{API_KEY}",
                "ORIGIN_ACCESS_LOG": "false",
            },
        )
        edge = stack.start(
            "edge",
            edge_port,
            {
                "EDGE_PORT": str(edge_port),
                "EDGE_ORIGIN_URL": origin.url,
                "EDGE_CACHE_DIR": str(scratch / "cache"),
                "EDGE_ACCESS_LOG": "false",
                # one loopback address standing for every simulated user: no per-client
                # miss budget (a deployed edge behind a proxy names clients by
                # EDGE_TRUSTED_PROXIES instead)
                "EDGE_CLIENT_MISS_RATE": "0",
            },
            scratch / "edge.log",
        )
        images_up = upload(origin.url, API_KEY, images)
        yield Target(edge.url, images_up, origin, edge.process.pid)
    finally:
        stack.stop()


def locust(
    host: str,
    user_class: str,
    users: int,
    seconds: float,
    env: dict[str, str],
    prefix: Path | None = None,
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--only-summary",
        "--users",
        str(users),
        "--spawn-rate",
        str(users),  # all at once: the scenarios are about a steady state
        "--run-time",
        f"{max(1, round(seconds))}s",
        "--stop-timeout",
        "10",
        "--host",
        host,
        "--loglevel",
        "WARNING",
    ]
    if prefix is not None:
        command += ["--csv", str(prefix), "--html", f"{prefix}.html"]
    command += user_class.split()
    return subprocess.Popen(
        command,
        env=child_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def ceiling(users: int, seconds: float, scratch: Path) -> float:
    """Locust's requests/s against a raw ASGI server answering 30 bytes: its own limit."""
    body = scratch / "ceiling.bin"
    body.write_bytes(b"x" * 30)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "loadtests.baselines", "raw", str(body), str(port)],
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port)
        prefix = scratch / "ceiling"
        run = locust(
            f"http://127.0.0.1:{port}",
            "CeilingUser",
            users,
            seconds,
            {"LOADTEST_IMAGES": "none:1"},
            prefix,
        )
        run.communicate()
        rows = read_stats(Path(f"{prefix}_final_stats.csv"))
    finally:
        server.terminate()
        server.wait()
    return next((r.rps for r in rows if r.name == "Aggregated"), 0.0)


class RssSampler(threading.Thread):
    """The edge's resident memory (VmRSS, with its worker processes) every `interval`
    seconds while the run lasts."""

    def __init__(self, pid: int, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MB)
        self._stop_event = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        while not self._stop_event.is_set():
            with contextlib.suppress(OSError):
                self.samples.append((time.monotonic() - started, status_mb(self.pid, "VmRSS")))
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)

    def write(self, report: Path, title: str) -> list[str]:
        """rss.csv, rss.png (when matplotlib is installed) and the summary's lines."""
        if not self.samples:
            return []
        with open(report / "rss.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["seconds", "rss_mb"])
            writer.writerows((f"{t:.1f}", f"{mb:.1f}") for t, mb in self.samples)
        lines = rss_lines(self.samples)
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return [*lines, "", "(matplotlib is not installed: no rss.png)"]
        figure, axes = plt.subplots(figsize=(8, 3.5))
        axes.plot([t / 60 for t, _ in self.samples], [mb for _, mb in self.samples])
        axes.set_xlabel("minutes")
        axes.set_ylabel("edge RSS, MB")
        axes.set_title(title)
        axes.set_ylim(bottom=0)
        axes.grid(alpha=0.3)
        figure.tight_layout()
        figure.savefig(report / "rss.png", dpi=100)
        plt.close(figure)
        return [*lines, "", "![edge RSS](rss.png)"]


def rss_lines(samples: list[tuple[float, float]]) -> list[str]:
    """Start, peak and end, and whether memory levelled off: the growth over the last
    half of the run, from a least-squares line through its samples."""
    values = [mb for _, mb in samples]
    half = samples[len(samples) // 2 :]
    slope = 0.0
    if len(half) >= 2:
        mean_t = sum(t for t, _ in half) / len(half)
        mean_mb = sum(mb for _, mb in half) / len(half)
        var = sum((t - mean_t) ** 2 for t, _ in half)
        if var:
            slope = sum((t - mean_t) * (mb - mean_mb) for t, mb in half) / var
    return [
        "",
        f"Edge RSS (sampled every second, {len(samples)} samples): start "
        f"{values[0]:.0f} MB, peak {max(values):.0f} MB, end {values[-1]:.0f} MB; over the "
        f"second half of the run it moved {slope * 60:+.1f} MB/min.",
    ]


@dataclass
class Row:
    name: str
    requests: int
    failures: int
    rps: float
    p50: float
    p95: float
    p99: float


def read_stats(path: Path) -> list[Row]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [
            Row(
                name=row["Name"],
                requests=int(row["Request Count"]),
                failures=int(row["Failure Count"]),
                rps=float(row["Requests/s"]),
                p50=_number(row["50%"]),
                p95=_number(row["95%"]),
                p99=_number(row["99%"]),
            )
            for row in csv.DictReader(f)
        ]


def _number(cell: str) -> float:
    """Locust writes N/A for the percentiles of a row without requests."""
    try:
        return float(cell)
    except ValueError:
        return 0.0


def cache_results(edge: str) -> dict[str, float]:
    """edge_cache_results_total by result, or {} when /metrics is not reachable."""
    try:
        text = httpx.get(f"{edge}/metrics", timeout=5).text
    except httpx.HTTPError:
        return {}
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'^edge_cache_results_total\{result="(\w+)"\} (\S+)$', text, re.M)
    }


def failure_counts(path: Path) -> dict[str, int]:
    if not path.exists():
        return {}
    with open(path, newline="") as f:
        return {f"{r['Name']}: {r['Error']}": int(r["Occurrences"]) for r in csv.DictReader(f)}


def summary(
    args: argparse.Namespace,
    users: int,
    rows: list[Row],
    before: dict[str, float],
    after: dict[str, float],
    limit: float | None,
    failures: dict[str, int],
    notes: list[str],
    memory: list[str],
) -> str:
    lines = [
        f"# Load test: {args.scenario}",
        "",
        f"`python -m loadtests run --scenario {args.scenario} --users {args.users} "
        f"--duration {args.duration}`" + (f" against {args.host}" if args.host else ""),
        "",
        f"users simulated: {users}"
        + (f" (the burst's own count; --users asked {args.users})" if users != args.users else ""),
        "",
        f"machine: {os.uname().machine}, {os.cpu_count()} cores; generator: Locust "
        "(FastHttpUser), one process",
        "",
        "| tag | requests | failures | req/s | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r.name == "Aggregated", -r.requests)):
        lines.append(
            f"| {r.name} | {r.requests:,} | {r.failures:,} | {r.rps:,.1f} | "
            f"{r.p50:.0f} | {r.p95:.0f} | {r.p99:.0f} |"
        )
    total = next((r for r in rows if r.name == "Aggregated"), None)
    if total is not None and total.requests:
        served = total.requests - total.failures
        lines += ["", f"Served: {served:,} of {total.requests:,} ({served / total.requests:.1%})."]
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    lookups = sum(v for k, v in delta.items() if k in ("memory", "disk", "shared", "miss"))
    if lookups:
        lines += ["", "Edge cache results during the run (/metrics before and after):", ""]
        lines += ["| result | count | share of lookups |", "|---|---|---|"]
        for name, value in sorted(delta.items(), key=lambda kv: -kv[1]):
            if value:
                lines.append(f"| {name} | {value:,.0f} | {value / lookups:.1%} |")
    if failures:
        lines += ["", "Failures:", ""] + [f"- {k} ({v}x)" for k, v in failures.items()]
    if limit == 0:
        lines += ["", "Generator ceiling: not measured (the trivial server answered nothing)."]
    elif limit is not None:
        total = next((r.rps for r in rows if r.name == "Aggregated"), 0.0)
        lines += [
            "",
            f"Generator ceiling: Locust reached {limit:,.0f} req/s against a trivial server "
            f"with the same {users} users on this machine; this run made {total:,.0f} "
            f"req/s ({total / limit:.0%} of that)."
            + (
                " Near the ceiling, the numbers above are Locust's limit, not the edge's: "
                "use `python -m loadtests bench` (wrk) for the edge's throughput."
                if limit and total > 0.7 * limit
                else ""
            ),
        ]
    lines += memory
    lines += [""] + [f"Note: {n}" for n in notes]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests run", description=__doc__)
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="mixed")
    parser.add_argument("--users", type=int, default=64)
    parser.add_argument("--duration", default="60s")
    parser.add_argument("--host", help="an edge to drive (default: start one)")
    parser.add_argument("--images", type=Path, help="directory of images to upload")
    parser.add_argument("--origin", help="origin URL to upload the images to (with --host)")
    parser.add_argument("--origin-key", help="origin API key with the write scope")
    parser.add_argument("--image-keys", help="key:width,... already on the origin")
    parser.add_argument("--signing-key", help="sign URLs with this key")
    parser.add_argument("--mix", default="95:5", help="hot:cold ratio for mixed/degraded")
    parser.add_argument("--report", type=Path, help="report folder (default reports/...)")
    parser.add_argument("--ceiling-seconds", type=float, default=10)
    parser.add_argument("--no-ceiling", action="store_true", help="skip the generator ceiling")
    parser.add_argument(
        "--calibrate-seconds",
        type=float,
        default=15,
        help="burst: how long to measure the transform capacity before the burst",
    )
    parser.add_argument(
        "--fault",
        choices=("down", "hang"),
        default="down",
        help="degraded: stop the origin (down) or freeze it (hang: accepts, never answers)",
    )
    args = parser.parse_args(argv)
    seconds = seconds_of(args.duration)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    report = args.report or Path("reports") / f"{args.scenario}-{stamp}"
    report.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []

    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        scratch = Path(tmp)
        images = args.images or default_images(scratch)
        if args.host:
            if args.origin and args.origin_key:
                keys = upload(args.origin.rstrip("/"), args.origin_key, images)
            elif args.image_keys:
                keys = parse_images(args.image_keys)
            else:
                parser.error("with --host, give --origin and --origin-key, or --image-keys")
            target = Target(args.host.rstrip("/"), keys)
            if args.scenario == "degraded":
                notes.append("with --host the origin is yours to stop or slow during the run")
        else:
            target = stack.enter_context(local_stack(scratch, images))
        if not target.images:
            parser.error(f"no image of {images} was accepted by the origin")
        env = {"LOADTEST_IMAGES": format_images(target.images), "LOADTEST_MIX": args.mix}
        if args.signing_key:
            env["LOADTEST_SIGNING_KEY"] = args.signing_key
        if args.scenario in WARMED:
            warmed = warm(target.edge, target.images, args.signing_key)
            notes.append(f"warm-up: {warmed} hot variant requests answered 200 before the run")
        limit = None if args.no_ceiling else ceiling(args.users, args.ceiling_seconds, scratch)

        users = args.users
        if args.scenario == "burst":
            capacity = transform_capacity(target.edge, env, args.calibrate_seconds, scratch)
            cold_users = burst_users(args.users, own_edge=not args.host)
            users = cold_users + HOT_USERS
            env["LOADTEST_HOT_USERS"] = str(HOT_USERS)
            env["LOADTEST_COLD_RATE"] = f"{BURST_FACTOR * capacity / cold_users:.3f}"
            notes.append(
                f"measured transform capacity: {capacity:.1f} new variants/s (ColdUser, 8 "
                f"users, {args.calibrate_seconds:.0f} s); the burst offered "
                f"{BURST_FACTOR * capacity:.0f}/s from {cold_users} users, beside "
                f"{HOT_USERS} users reading popular variants as fast as they can"
            )
        sampler = RssSampler(target.edge_pid) if target.edge_pid else None
        if sampler is not None:
            sampler.start()
        else:
            notes.append("with --host the edge's memory is not sampled (not our process)")
        before = cache_results(target.edge)
        prefix = report / "locust"
        run = locust(target.edge, SCENARIOS[args.scenario], users, seconds, env, prefix)
        if args.scenario == "degraded" and target.origin is not None:
            fault = threading.Timer(seconds / 3, _break, (target.origin, args.fault))
            fault.start()
            notes.append(
                f"the origin was {'stopped' if args.fault == 'down' else 'frozen (SIGSTOP)'} "
                f"{seconds / 3:.0f} s into the run; what is still served comes from the caches"
            )
        output, _ = run.communicate()
        if args.scenario == "degraded" and target.origin is not None:
            fault.cancel()
            _mend(target.origin)
        (report / "locust.log").write_bytes(output)
        after = cache_results(target.edge)
        memory = []
        if sampler is not None:
            sampler.stop()
            memory = sampler.write(report, f"{args.scenario}, {users} users")

    rows = read_stats(Path(f"{prefix}_final_stats.csv"))
    failures = failure_counts(Path(f"{prefix}_final_failures.csv"))
    text = summary(args, users, rows, before, after, limit, failures, notes, memory)
    (report / "summary.md").write_text(text)
    print(text)
    print(f"report: {report}")
    return 0 if rows else 1


def burst_users(asked: int, *, own_edge: bool) -> int:
    """Users asking for new variants in the burst. A closed-loop generator offers 4x only
    if enough of its users are not stuck in the edge's queue: so, for our own edge, four
    times the transforms it admits at once (running + EDGE_QUEUE, its defaults)."""
    if not own_edge:
        return max(1, asked - HOT_USERS)
    from edge.settings import EdgeSettings

    defaults = EdgeSettings()
    return max(asked - HOT_USERS, BURST_FACTOR * (2 * defaults.workers + defaults.queue))


def transform_capacity(edge: str, env: dict[str, str], seconds: float, scratch: Path) -> float:
    """New variants per second the edge sustains: ColdUser with 8 users, no cache help."""
    prefix = scratch / "calibrate"
    run = locust(edge, "ColdUser", 8, seconds, env, prefix)
    run.communicate()
    rows = read_stats(Path(f"{prefix}_final_stats.csv"))
    return sum(r.rps for r in rows if r.name == "cold miss") or next(
        (r.rps for r in rows if r.name == "Aggregated"), 1.0
    )


def _break(origin: Service, fault: str) -> None:
    if fault == "down":
        origin.process.kill()
    else:
        origin.process.send_signal(signal.SIGSTOP)


def _mend(origin: Service) -> None:
    """Let a frozen origin go on, so it can be stopped."""
    with contextlib.suppress(ProcessLookupError):
        origin.process.send_signal(signal.SIGCONT)


if __name__ == "__main__":
    sys.exit(main())
