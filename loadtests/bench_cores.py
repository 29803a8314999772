"""Hits on every core: CPU per hit and hits/s per process at 1 and N edge processes, each
against a bare ASGI app with the same number of processes on one socket.

    python -m loadtests.bench_cores [--seconds 8] [--rounds 3] [--processes 1,2]

The edge runs under its supervisor (`EDGE_PROCESSES=N`, L1 hits of one ~30 KB JPEG, the
access log on and written to a file as deployed); the baseline is the raw ASGI app of
`loadtests.baselines` forked N times after binding (as uvicorn's `--workers`). wrk loads
each with N threads and 32 connections per process, runs alternated, best run kept.

CPU per hit is the servers' user + system CPU (every process of the tree, from /proc)
over the requests served: on shared cores, where throughput moves with whoever else
runs, it is the figure that says whether hits scale: if CPU per hit stays flat from 1 to N
processes, N cores give N times the hits.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx

from loadtests.bench_cache import PATH, small_jpeg
from loadtests.bench_origin import machine, wrk_figures
from loadtests.bench_transform import cpu_seconds
from tools.stack import Stack, wait_listening, wait_ready


@dataclass
class Row:
    server: str
    processes: int
    rps: float
    cpu_us: float  # per request

    @property
    def per_process(self) -> float:
        return self.rps / self.processes


def load(url: str, seconds: int, processes: int, pid: int) -> tuple[float, float]:
    """Requests/s and CPU microseconds per request of the process tree under `pid`."""
    before = cpu_seconds(pid, descendants=True)
    result = subprocess.run(
        [
            "wrk",
            f"-t{processes}",
            f"-c{32 * processes}",
            f"-d{seconds}s",
            "--latency",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    spent = cpu_seconds(pid, descendants=True) - before
    rps, _ = wrk_figures(result.stdout)
    return rps, spent * 1e6 / max(1.0, rps * seconds)


def start_edge(root: Path, origin: str, port: int, processes: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "EDGE_PORT": str(port),
        "EDGE_ORIGIN_URL": origin,
        "EDGE_PROCESSES": str(processes),
        "EDGE_CACHE_DIR": str(root / f"cache-{processes}"),
        "EDGE_MEMORY_CACHE_MB": str(64 * processes),  # each process gets 64 MB
        "EDGE_WORKERS": "1",
        "EDGE_CLIENT_MISS_RATE": "0",
    }
    log = open(root / f"edge-{processes}.log", "wb")  # noqa: SIM115 (lives with the process)
    return subprocess.Popen([sys.executable, "-m", "edge"], env=env, stdout=log, stderr=log)


def start_raw(file: Path, port: int, processes: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "loadtests.baselines", "raw", str(file), str(port), str(processes)]
    )


def warm(url: str, processes: int) -> None:
    """Every process holds the entry in L1 (new connections land on either)."""
    for _ in range(20 * processes):
        with httpx.Client() as client:
            client.get(url, headers={"Connection": "close"})


def measure(seconds: int, rounds: int, counts: list[int]) -> list[Row]:
    rows: dict[tuple[str, int], Row] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        photo = root / "blobs" / "bench" / "photo.jpg"
        small_jpeg(photo)
        stack = Stack()
        servers: list[subprocess.Popen[bytes]] = []
        try:
            origin = stack.start_origin(root / "blobs", 18191)
            targets: list[tuple[str, int, str, int]] = []
            for n in counts:
                edge_port, raw_port = 18200 + n, 18300 + n
                servers.append(start_edge(root, origin.url, edge_port, n))
                servers.append(start_raw(photo, raw_port, n))
                wait_listening(edge_port)
                wait_listening(raw_port)
                url = f"http://127.0.0.1:{edge_port}{PATH}"
                wait_ready(f"http://127.0.0.1:{edge_port}")
                warm(url, n)
                targets.append(("edge L1 hit", n, url, servers[-2].pid))
                targets.append(
                    ("raw ASGI", n, f"http://127.0.0.1:{raw_port}{PATH}", servers[-1].pid)
                )
            for _ in range(rounds):
                for name, n, url, pid in targets:
                    rps, cpu = load(url, seconds, n, pid)
                    best = rows.get((name, n))
                    if best is None or cpu < best.cpu_us:
                        rows[(name, n)] = Row(name, n, rps, cpu)
        finally:
            for server in servers:
                server.send_signal(signal.SIGTERM)
            for server in servers:
                try:
                    server.wait(20)
                except subprocess.TimeoutExpired:
                    server.kill()
            stack.stop()
    return [rows[k] for k in sorted(rows, key=lambda k: (k[1], k[0]))]


def table(rows: list[Row]) -> str:
    raw = {r.processes: r for r in rows if r.server == "raw ASGI"}
    one = next((r.cpu_us for r in rows if r.server == "edge L1 hit" and r.processes == 1), None)
    lines = [
        "| server | processes | requests/s | per process | CPU us per request | "
        "edge per process / raw | edge CPU vs 1 process |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        edge = r.server.startswith("edge")
        ratio = f"{r.per_process / raw[r.processes].per_process:.2f}" if edge else "-"
        scale = f"{r.cpu_us / one:.2f}" if edge and one else "-"
        lines.append(
            f"| {r.server} | {r.processes} | {r.rps:,.0f} | {r.per_process:,.0f} | "
            f"{r.cpu_us:.1f} | {ratio} | {scale} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", default="1,2")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        parser.error("needs wrk (Debian's package)")
    counts = [int(n) for n in args.processes.split(",")]
    rows = measure(args.seconds, args.rounds, counts)
    print(f"{machine()}; wrk -t<processes> -c<32 x processes>, best of {args.rounds}")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
