"""Benchmark images: the shared corpus when it is there, else stand-ins of the same size."""

from __future__ import annotations

from pathlib import Path

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
# name -> (corpus file, width, height, alpha, progressive)
SAMPLES = {
    "photo-2560": ("ladybird.jpg", 2560, 1600, False, False),
    "photo-5k": ("flow-5k.jpg", 5120, 2880, False, True),
    "alpha-png": ("arc-alpha.png", 2140, 1200, True, False),
}


def sample(name: str) -> bytes:
    file, width, height, alpha, progressive = SAMPLES[name]
    path = CORPUS / file
    if path.exists():
        return path.read_bytes()
    import pyvips

    # smooth gradients plus mild noise: compresses like a photo, not like static
    xyz = pyvips.Image.xyz(width, height)
    base = (xyz[0] * (255 / width)).bandjoin([xyz[1] * (255 / height), xyz[0] * 0 + 96])
    noise = pyvips.Image.gaussnoise(width, height, sigma=12)
    image = (base + noise).cast("uchar").copy(interpretation="srgb")
    if alpha:
        image = image.bandjoin((xyz[0] * (255 / width)).cast("uchar"))
        return bytes(image.pngsave_buffer())
    return bytes(image.jpegsave_buffer(Q=90, interlace=progressive))
