"""Small images made with libvips for tests (no files from ../shared needed)."""

from __future__ import annotations

import pyvips


def gradient(width: int = 64, height: int = 48, bands: int = 3) -> pyvips.Image:
    xyz = pyvips.Image.xyz(width, height)
    base = (xyz[0] * (255 / max(width - 1, 1))).bandjoin(xyz[1] * (255 / max(height - 1, 1)))
    base = base.bandjoin(xyz[0] * 0 + 128)
    if bands == 4:
        base = base.bandjoin(xyz[0] * 0 + 200)
    return base.cast("uchar").copy(interpretation="srgb")


def jpeg(width: int = 64, height: int = 48, quality: int = 80) -> bytes:
    return bytes(gradient(width, height).jpegsave_buffer(Q=quality))


def png(width: int = 64, height: int = 48, alpha: bool = False) -> bytes:
    return bytes(gradient(width, height, 4 if alpha else 3).pngsave_buffer())


def webp(width: int = 64, height: int = 48) -> bytes:
    return bytes(gradient(width, height).webpsave_buffer())


def gif(width: int = 32, height: int = 24, frames: int = 3) -> bytes:
    pages = [(gradient(width, height) + 40 * i).cast("uchar") for i in range(frames)]
    strip = pyvips.Image.arrayjoin(pages, across=1)
    strip = strip.copy()
    strip.set_type(pyvips.GValue.gint_type, "page-height", height)
    return bytes(strip.gifsave_buffer())


def noisy_jpeg(width: int, height: int, seed: int = 0) -> bytes:
    """A JPEG that does not compress well, for multi-megabyte uploads."""
    noise = pyvips.Image.gaussnoise(width, height, mean=128 + seed, sigma=60)
    image = noise.bandjoin([noise, noise]).cast("uchar").copy(interpretation="srgb")
    return bytes(image.jpegsave_buffer(Q=95))
