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


def oriented_jpeg(width: int = 64, height: int = 32, orientation: int = 6) -> bytes:
    """Stored `width` x `height`, with an EXIF orientation that displays it rotated."""
    image = gradient(width, height).copy()
    image.set_type(pyvips.GValue.gint_type, "orientation", orientation)
    return bytes(image.jpegsave_buffer(keep="exif"))


def cmyk_jpeg(width: int = 64, height: int = 48) -> bytes:
    return bytes(gradient(width, height).icc_transform("cmyk").jpegsave_buffer())


def png16(width: int = 64, height: int = 48) -> bytes:
    image = (gradient(width, height).cast("ushort") * 256).copy(interpretation="rgb16")
    return bytes(image.pngsave_buffer())


def svg(width: int = 100, height: int = 50, extra: str = "") -> bytes:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
        f'<rect width="{width}" height="{height}" fill="#f00"/>{extra}</svg>'
    ).encode()


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG whose header declares `width` x `height` over a few bytes of data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\0" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


def photo_like(width: int = 240, height: int = 160, seed: int = 0) -> pyvips.Image:
    """Smooth colour ramps with grain: what encoders see in a photo (few equal neighbours)."""
    noise = pyvips.Image.gaussnoise(width, height, sigma=12, mean=0, seed=seed)
    base = gradient(width, height).cast("float")
    return (base + noise).cast("uchar").copy(interpretation="srgb").copy_memory()


def graphic(width: int = 240, height: int = 160, alpha: bool = False) -> pyvips.Image:
    """Flat colour boxes and text on a plain ground: a banner, an icon, a screenshot."""
    canvas = pyvips.Image.black(width, height).new_from_image([245, 245, 240])
    for i, colour in enumerate(([200, 30, 40], [20, 90, 200], [250, 190, 0])):
        box = pyvips.Image.black(width // 5, height // 2).new_from_image(colour)
        canvas = canvas.insert(box, width // 10 + i * width // 4, height // 3)
    text = pyvips.Image.text("Sale 50%", width=width - 20, dpi=120)
    ink = text.new_from_image([30, 30, 30]).bandjoin(text).copy(interpretation="srgb")
    image = canvas.composite2(ink, "over", x=10, y=4).cast("uchar").extract_band(0, n=3)
    if alpha:
        xyz = pyvips.Image.xyz(width, height)
        image = image.bandjoin((xyz[0] > width // 8).ifthenelse(255, 0))
    return image.copy(interpretation="srgb").copy_memory()
