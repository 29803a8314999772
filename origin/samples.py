"""Sample images for a fresh checkout, drawn with libvips (no downloads, no binary files in git)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyvips


def _landscape(width: int, height: int) -> pyvips.Image:
    """A colourful, detailed test card: gradients, a zone plate and a few discs."""
    x = pyvips.Image.xyz(width, height)
    u = x[0] / width
    v = x[1] / height
    red = u * 255
    green = v * 255
    blue = (pyvips.Image.zone(width, height) + 1) * 127.5
    image = red.bandjoin([green, blue]).cast("uchar")
    for i in range(5):
        cx, cy, r = width * (i + 1) // 6, height // 2, height // (6 + i)
        image = image.draw_circle([255 - 40 * i, 200, 40 * i], cx, cy, r, fill=True)
    return image.copy(interpretation="srgb")


def _with_alpha(width: int, height: int) -> pyvips.Image:
    base = _landscape(width, height)
    x = pyvips.Image.xyz(width, height)
    dx = x[0] - width / 2
    dy = x[1] - height / 2
    alpha = (255 - ((dx * dx + dy * dy) ** 0.5) * (510 / width)).cast("uchar")
    return base.bandjoin(alpha).copy(interpretation="srgb")


def write_samples(directory: Path) -> list[Path]:
    """Write the samples that are missing; returns every sample's path."""
    directory.mkdir(parents=True, exist_ok=True)
    samples: dict[str, Callable[[], bytes]] = {
        "samples/testcard.jpg": lambda: _landscape(2400, 1600).jpegsave_buffer(Q=88),
        "samples/alpha.png": lambda: _with_alpha(1200, 800).pngsave_buffer(),
        "samples/small.webp": lambda: _landscape(640, 400).webpsave_buffer(Q=85),
    }
    paths = []
    for name, render in samples.items():
        path = directory / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(render())
        paths.append(path)
    return paths
