"""The load-test suite's set-up, shared by the Locust file and the runner: upload the
image set to the origin, name the hot variants, and warm the edge with them. No Locust
import here (Locust monkey-patches the process it is imported in)."""

from __future__ import annotations

import itertools
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from edge.security.signing import signed_path

# Accept headers in realistic shares: AVIF-capable browsers (Chrome, Edge, Firefox,
# Safari 16+), WebP-only (older Safari and Android WebViews), neither (bots, old clients)
ACCEPTS = (
    ("image/avif,image/webp,image/apng,image/*,*/*;q=0.8", 0.85),
    ("image/webp,image/*,*/*;q=0.8", 0.10),
    ("image/*,*/*;q=0.8", 0.05),
)
HOT_WIDTHS = (160, 320, 480, 640, 960, 1280)
ZIPF_ALPHA = 0.9
UPLOAD_PREFIX = "loadtest"

Image = tuple[str, int]  # origin key, source width
Variant = tuple[str, int, int]  # origin key, source width, asked width


def upload(origin: str, api_key: str, directory: Path) -> list[Image]:
    """PUT every file of `directory` that the origin accepts as an image (raster only)."""
    uploaded = []
    auth = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(timeout=60) as client:
        for path in sorted(p for p in directory.iterdir() if p.is_file()):
            key = f"{UPLOAD_PREFIX}/{path.name}"
            response = client.put(f"{origin}/{key}", content=path.read_bytes(), headers=auth)
            if response.status_code not in (200, 201):
                continue  # not an image (the corpus has broken files on purpose)
            meta = client.get(f"{origin}/_meta/{key}").json()
            if meta.get("width") and meta.get("type") != "image/svg+xml":
                uploaded.append((key, shown_width(path)))
    return uploaded


def shown_width(path: Path) -> int:
    """The width as displayed: EXIF orientations 5-8 swap the stored axes."""
    import pyvips

    image = pyvips.Image.new_from_file(str(path))
    turned = image.get_typeof("orientation") and image.get("orientation") in (5, 6, 7, 8)
    return int(image.height if turned else image.width)


def parse_images(text: str) -> list[Image]:
    """`key:width,key:width` (LOADTEST_IMAGES)."""
    pairs = (item.rpartition(":") for item in text.split(",") if item)
    return [(key, int(width)) for key, _, width in pairs if key]


def format_images(images: list[Image]) -> str:
    return ",".join(f"{key}:{width}" for key, width in images)


def hot_variants(images: list[Image]) -> tuple[list[Variant], list[float]]:
    """Every image at every hot width, in a fixed popularity order with Zipf weights
    (cumulative, for bisect)."""
    variants = [(key, width, asked) for key, width in images for asked in HOT_WIDTHS]
    random.Random(7).shuffle(variants)
    weights = [1 / rank**ZIPF_ALPHA for rank in range(1, len(variants) + 1)]
    return variants, list(itertools.accumulate(weights))


def edge_path(options: str, source: str, key: str | None) -> str:
    path = f"/{options}/{source}"
    return signed_path(key, path) if key else "/_" + path


def warm(edge: str, images: list[Image], key: str | None, concurrency: int = 8) -> int:
    """Ask for every hot variant once per Accept class; returns how many answered 200."""
    variants, _ = hot_variants(images)
    jobs = [(v, accept) for v in variants for accept, _ in ACCEPTS]
    with httpx.Client(timeout=120) as client:

        def one(job: tuple[Variant, str]) -> bool:
            (source, _, asked), accept = job
            url = edge + edge_path(f"w={asked},f=auto", source, key)
            return client.get(url, headers={"Accept": accept}).status_code == 200

        with ThreadPoolExecutor(concurrency) as pool:
            return sum(pool.map(one, jobs))
