"""Encoder speed against size, per format and effort: the table behind the edge's defaults.

    python -m loadtests.bench_encoders [IMAGE] [--width 400] [--seconds 2]

One thread, libvips concurrency 1; each row resizes IMAGE to WIDTH with shrink-on-load
and encodes it, as many times as fit in SECONDS.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("VIPS_CONCURRENCY", "1")

import pyvips

from loadtests.images import sample

SETTINGS = [
    ("jpeg", {"Q": 80, "optimize_coding": True, "interlace": True}),
    ("jpeg", {"Q": 80, "optimize_coding": False, "interlace": False}),
    *[("webp", {"Q": 80, "effort": e}) for e in (0, 1, 2, 3, 4, 6)],
    *[("avif", {"Q": 60, "effort": e, "compression": "av1"}) for e in (0, 1, 2, 3, 4, 5)],
    *[("png", {"compression": c}) for c in (1, 3, 6)],
]
SAVERS = {
    "jpeg": "jpegsave_buffer",
    "webp": "webpsave_buffer",
    "avif": "heifsave_buffer",
    "png": "pngsave_buffer",
}


def measure(
    data: bytes, width: int, fmt: str, options: dict[str, object], seconds: float
) -> tuple[float, int]:
    count, size = 0, 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        image = pyvips.Image.thumbnail_buffer(data, width)
        size = len(getattr(image, SAVERS[fmt])(**options))
        count += 1
    return count / (time.perf_counter() - started), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("image", nargs="?", type=Path)
    parser.add_argument("--width", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    data = args.image.read_bytes() if args.image else sample("photo-2560")
    print("| format | settings | images/s (1 core) | bytes |\n|---|---|---|---|")
    for fmt, options in SETTINGS:
        rate, size = measure(data, args.width, fmt, options, args.seconds)
        shown = ", ".join(
            f"{k}={v}" for k, v in options.items() if k != "compression" or fmt == "png"
        )
        print(f"| {fmt} | {shown} | {rate:.1f} | {size:,} |", flush=True)


if __name__ == "__main__":
    main()
