"""Origin read throughput against a bare Starlette app serving the same bytes from memory.

    python -m loadtests.bench_origin [--seconds 10] [--rounds 3] [--connections 32]

Both servers run as single processes with the same uvicorn settings (httptools, uvloop,
no access log from uvicorn); the origin keeps its own JSON request log on, as deployed,
written to a file. Runs alternate (baseline, origin, baseline, ...) so drift on a noisy
machine hits both; the best run of each is compared. The load generator is wrk.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from loadtests.images import CORPUS
from tools.stack import Stack, wait_listening

CORPUS_IMAGE = CORPUS / "ladybird.jpg"  # 351 KB


def sample_blob(directory: Path) -> Path:
    """A ~350 KB JPEG: the corpus photo when present, else a generated one."""
    target = directory / "bench" / "photo.jpg"
    target.parent.mkdir(parents=True)
    if CORPUS_IMAGE.exists():
        shutil.copyfile(CORPUS_IMAGE, target)
    else:
        import pyvips

        noise = pyvips.Image.gaussnoise(700, 500, mean=128, sigma=50)
        image = noise.bandjoin([noise, noise]).cast("uchar").copy(interpretation="srgb")
        target.write_bytes(image.jpegsave_buffer(Q=92))
    return target


def wrk(url: str, seconds: int, connections: int) -> tuple[float, str]:
    result = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    )
    return wrk_figures(result.stdout)


def wrk_figures(out: str) -> tuple[float, str]:
    """Requests/s and p99 from wrk's `--latency` report."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    # the latency distribution's line, not a "+/- Stdev" share such as 89.99% that ends
    # the thread statistics' latency line (which read the next line's "Req/Sec" as p99)
    p99 = re.search(r"^\s*99%\s+(\S+)", out, re.MULTILINE)
    return rps, p99.group(1) if p99 else "?"


Load = Callable[[str, int, int], tuple[float, str]]  # (url, seconds, connections) -> rps, p99


def bench_arguments(description: str | None) -> argparse.Namespace:
    """The options every hit benchmark takes: run length, rounds, connections."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    return parser.parse_args()


def best_of(
    targets: dict[str, str], rounds: int, seconds: int, connections: int, load: Load = wrk
) -> dict[str, tuple[float, str]]:
    """Each target's best run; runs alternate between targets so drift hits them all."""
    best: dict[str, tuple[float, str]] = {}
    for _ in range(rounds):
        for name, url in targets.items():
            rps, p99 = load(url, seconds, connections)
            if rps > best.get(name, (0.0, ""))[0]:
                best[name] = (rps, p99)
            time.sleep(1)
    return best


def machine() -> str:
    return (
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )


def main() -> int:
    args = bench_arguments(__doc__)
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install wrk", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        blob = sample_blob(root / "blobs")
        size = blob.stat().st_size
        stack = Stack()
        try:
            stack.start(
                "origin",
                18081,
                {"ORIGIN_STORAGE": f"file://{root / 'blobs'}", "ORIGIN_PORT": "18081"},
                root / "origin.log",
            )
            baseline = subprocess.Popen(
                [sys.executable, "-m", "loadtests.baselines", "starlette", str(blob), "18082"]
            )
            wait_listening(18082)
            targets = {
                "starlette (memory)": "http://127.0.0.1:18082/bench/photo.jpg",
                "origin (local store)": "http://127.0.0.1:18081/bench/photo.jpg",
            }
            for url in targets.values():
                wrk(url, 2, args.connections)  # warm up
            best = best_of(targets, args.rounds, args.seconds, args.connections)
        finally:
            stack.stop()
            baseline.terminate()
            baseline.wait()
    base = best["starlette (memory)"][0]
    runs = f"best of {args.rounds} x {args.seconds} s"
    print(f"\n{size / 1024:.0f} KB blob, wrk -t1 -c{args.connections}, {runs}")
    print(machine())
    print("| server | requests/s | p99 | ratio |\n|---|---|---|---|")
    for name, (rps, p99) in best.items():
        print(f"| {name} | {rps:,.0f} | {p99} | {rps / base:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
