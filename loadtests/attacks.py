"""`python -m loadtests attacks`: cache hits while a node is attacked, against the same
hits on a quiet node, in one run, with the process tree's peak memory.

    python -m loadtests attacks [--seconds 6] [--only slowloris]

An origin and an edge with default settings run as child processes on loopback. For
each attack: a quiet wrk run on a cached URL, then the same run while the attack goes
on from this process's threads (each bounded in count and time, loopback only, from
127.0.0.2 so the per-client connection cap sees another host than wrk's). Reported:
hits/s and p99 under attack over quiet, the peak RSS (VmRSS sampled every 50 ms, summed
over the edge and its workers) and what the attack got back. The attacks, wrk, the
origin and the edge share this machine's cores: on 2 cores the attacker's own CPU is
part of what the hits lose.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import random
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pyvips

from loadtests.bench_cache import load
from loadtests.bench_transform import status_mb
from tools.stack import Stack, free_port

ATTACKER = "127.0.0.2"
# between one connection's requests in the miss burst: 16 connections then send at most
# 320 requests a second, which a laptop does with room to spare; without a pause the
# harness's own Python threads took a core of the two this machine has (it shares
# them with the edge and wrk), and measured the harness more than the edge
PACE_S = 0.05
HIT = "/_/w=300/photo.jpg"


@dataclass
class Attack:
    name: str
    run: Callable[[str, int, threading.Event, Counter[str]], None]
    outcomes: Counter[str] = field(default_factory=Counter)


def _connect(port: int) -> socket.socket:
    sock = socket.socket()
    sock.bind((ATTACKER, 0))
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    return sock


def _status(sock: socket.socket) -> str:
    try:
        head = sock.recv(64)
    except (TimeoutError, OSError):
        return "no answer"
    return head.split(b" ")[1].decode() if head.startswith(b"HTTP/1.1 ") else "closed"


def idle_flood(base: str, port: int, stop: threading.Event, seen: Counter[str]) -> None:
    held = []
    try:
        for _ in range(3000):
            try:
                held.append(_connect(port))
                seen["opened"] += 1
            except OSError:
                seen["refused"] += 1
        stop.wait()
    finally:
        for sock in held:
            sock.close()


def slowloris(base: str, port: int, stop: threading.Event, seen: Counter[str]) -> None:
    socks = []
    with contextlib.suppress(OSError):
        for _ in range(300):
            sock = _connect(port)
            sock.sendall(b"GET /_/w=10/photo.jpg HTTP/1.1\r\n")
            socks.append(sock)
    i = 0
    while not stop.wait(1.0):
        for sock in list(socks):
            try:
                sock.sendall(b"X-%d: y\r\n" % i)
            except OSError:
                seen["cut off"] += 1
                socks.remove(sock)
        i += 1
    seen["still open"] += len(socks)
    for sock in socks:
        sock.close()


def huge_header(base: str, port: int, stop: threading.Event, seen: Counter[str]) -> None:
    chunk = b"a" * 65536
    while not stop.is_set():
        with contextlib.suppress(OSError), _connect(port) as sock:
            sock.sendall(b"GET /_/w=10/photo.jpg HTTP/1.1\r\nX-Big: ")
            sent = 0
            try:
                while sent < 128 << 20 and not stop.is_set():
                    sock.sendall(chunk)
                    sent += len(chunk)
            except OSError:
                pass
            seen[_status(sock)] += 1


def svgz_bomb(base: str, port: int, stop: threading.Event, seen: Counter[str]) -> None:
    with httpx.Client(base_url=base, timeout=30, transport=_from_attacker()) as client:
        for i in range(10_000):
            if stop.is_set():
                return
            path = "/_/f=json/bomb.svgz" if i % 2 else f"/_/w={100 + i % 500}/bomb.svgz"
            seen[str(client.get(path).status_code)] += 1


def miss_burst(base: str, port: int, stop: threading.Event, seen: Counter[str]) -> None:
    def one() -> None:
        with httpx.Client(base_url=base, timeout=30, transport=_from_attacker()) as client:
            while not stop.is_set():
                width = random.randint(10, 2000)
                seen[str(client.get(f"/_/w={width}/photo.jpg").status_code)] += 1

    threads = [threading.Thread(target=one) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def abandoned(base: str, port: int, stop: threading.Event, seen: Counter[str]) -> None:
    round_ = 0
    while not stop.is_set() and round_ < 5:
        for i in range(300):
            with contextlib.suppress(OSError), _connect(port) as sock:
                sock.sendall(
                    b"GET /_/w=%d,blur=3/photo.jpg HTTP/1.1\r\nHost: e\r\n\r\n"
                    % (round_ * 1000 + i + 20)
                )
            seen["sent and left"] += 1
        round_ += 1
        stop.wait(1.0)


def _from_attacker() -> httpx.HTTPTransport:
    return httpx.HTTPTransport(local_address=ATTACKER)


ATTACKS = {
    "idle flood": idle_flood,
    "slowloris": slowloris,
    "huge header": huge_header,
    "svgz bomb": svgz_bomb,
    "miss burst": miss_burst,
    "abandoned queue": abandoned,
}


def sources(directory: Path) -> None:
    (directory / "photo.jpg").write_bytes(
        pyvips.Image.gaussnoise(2400, 1600).cast("uchar").colourspace("srgb").jpegsave_buffer()
    )
    body = b'<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100">'
    (directory / "bomb.svgz").write_bytes(gzip.compress(body + b"<g/>" * 1_000_000 + b"</svg>"))


def sample_peak(pid: int, stop: threading.Event, peak: list[float]) -> None:
    while not stop.wait(0.05):
        peak[0] = max(peak[0], status_mb(pid, "VmRSS"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests attacks", description=__doc__)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--only", help="run the attacks whose name contains this")
    args = parser.parse_args(argv)
    print(
        "| attack | quiet hits/s | hits/s under attack | ratio | quiet p99 | p99 under attack "
        "| peak RSS MB | what the attack got |"
    )
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        (root / "blobs").mkdir()
        sources(root / "blobs")
        stack = Stack()
        try:
            _, edge = stack.start_pair(
                root / "blobs",
                cache=root / "cache",
                origin_port=free_port(),
                edge_port=free_port(),
                client_budgets=True,  # the defaults, as deployed
            )
            port = int(edge.url.rsplit(":", 1)[1])
            httpx.get(edge.url + HIT, timeout=30).raise_for_status()
            for name, attack in ATTACKS.items():
                if args.only and args.only not in name:
                    continue
                quiet, quiet_p99 = load(edge.url + HIT, args.seconds, 32)
                stop, seen, peak = threading.Event(), Counter[str](), [0.0]
                sampler = threading.Thread(target=sample_peak, args=(edge.process.pid, stop, peak))
                attacker = threading.Thread(target=attack, args=(edge.url, port, stop, seen))
                sampler.start()
                attacker.start()
                time.sleep(1)  # the attack under way
                loud, loud_p99 = load(edge.url + HIT, args.seconds, 32)
                stop.set()
                attacker.join(60)
                sampler.join()
                got = ", ".join(f"{k}: {v}" for k, v in seen.most_common(4))
                print(
                    f"| {name} | {quiet:,.0f} | {loud:,.0f} | {loud / quiet:.2f} | {quiet_p99} "
                    f"| {loud_p99} | {peak[0]:.0f} | {got} |",
                    flush=True,
                )
                time.sleep(2)
        finally:
            stack.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
