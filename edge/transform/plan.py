"""Pure planning: output format and geometry from the spec and the source's header.

No libvips here: these functions are the table the tests check by hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edge.options import BadOption, TransformSpec

WEB_FORMATS = frozenset({"jpeg", "png", "webp", "gif", "avif"})
ANIMATED_FORMATS = frozenset({"webp", "gif"})
ALPHA_FORMATS = frozenset({"png", "webp", "avif", "gif"})
CONTENT_TYPES = {
    "jpeg": "image/jpeg",
    "baseline-jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "avif": "image/avif",
    "gif": "image/gif",
    "json": "application/json",
}


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What the header says, in display axes (after EXIF orientation)."""

    width: int
    height: int  # of one frame
    pages: int
    format: str  # jpeg, png, webp, gif, avif, heif, svg, tiff, ...
    has_alpha: bool
    orientation: int = 1
    size: int = 0  # bytes
    progressive: bool = False


@dataclass(frozen=True, slots=True)
class Geometry:
    """Sizes in output axes: resize to `resize`, then crop to `crop`, then pad to `pad`."""

    resize: tuple[int, int]
    crop: tuple[int, int] | None = None
    pad: tuple[int, int] | None = None

    @property
    def output(self) -> tuple[int, int]:
        return self.pad or self.crop or self.resize


def choose_format(spec: TransformSpec, source: SourceInfo, accept: str, animate: bool) -> str:
    """The encoder to use: explicit, negotiated (`auto`), or the source's own when web-safe."""
    wanted = spec.format
    if wanted == "auto":
        if animate:
            return "webp" if "image/webp" in accept else "gif"
        if "image/avif" in accept:
            return "avif"
        if "image/webp" in accept:
            return "webp"
        return "png" if source.has_alpha else "jpeg"
    if wanted is not None and wanted != "json":
        return wanted
    if source.format in WEB_FORMATS:
        return source.format
    return "png" if source.has_alpha else "jpeg"


def keeps_animation(spec: TransformSpec, source: SourceInfo) -> bool:
    return spec.anim and source.pages > 1 and source.format in ("gif", "webp")


def rotated_size(spec: TransformSpec, source: SourceInfo) -> tuple[int, int]:
    width, height = source.width, source.height
    if spec.trim is not None and not isinstance(spec.trim, str):
        top, right, bottom, left = spec.trim
        width, height = width - left - right, height - top - bottom
        if width < 1 or height < 1:
            raise BadOption("invalid trim: removes the whole image")
    if spec.rotate in (90, 270):
        width, height = height, width
    return width, height


def plan_geometry(spec: TransformSpec, width: int, height: int, max_out: int) -> Geometry:
    """Cloudflare's `fit` semantics for a `width` x `height` source (already rotated and trimmed).

    scale-down: fit inside the box, never enlarge.  contain: fit inside, may enlarge.
    cover: fill the box, crop the overflow.          crop: cover, but never enlarge.
    pad: contain, then pad to the box.               squeeze: exactly the box.
    With one dimension given, every mode keeps the aspect ratio; only scale-down and
    crop refuse to enlarge. With none, the size is the source's.
    """
    w, h = spec.width, spec.height
    for name, value in (("width", w), ("height", h)):
        if value is not None and value > max_out:
            raise BadOption(f"invalid {name}: larger than {max_out} (EDGE_MAX_OUT_PX)")
    enlarge = spec.fit not in ("scale-down", "crop")
    if w is None and h is None:
        scale = min(1.0, max_out / max(width, height))
        return Geometry(_scaled(width, height, scale))
    if w is None or h is None:
        scale = (w / width) if w is not None else (h / height)  # type: ignore[operator]
        if not enlarge:
            scale = min(scale, 1.0)
        return Geometry(_fit_max(_scaled(width, height, scale), max_out))
    if spec.fit == "squeeze":
        return Geometry((w, h))
    if spec.fit in ("cover", "crop"):
        scale = max(w / width, h / height)
        if spec.fit == "crop":
            scale = min(scale, 1.0)
        resize = (max(1, math.ceil(width * scale - 1e-9)), max(1, math.ceil(height * scale - 1e-9)))
        crop = (min(w, resize[0]), min(h, resize[1]))
        return Geometry(resize, crop if crop != resize else None)
    scale = min(w / width, h / height)
    if spec.fit == "scale-down":
        scale = min(scale, 1.0)
    resize = _scaled(width, height, scale)
    if spec.fit == "pad":
        return Geometry(resize, pad=(w, h) if resize != (w, h) else None)
    return Geometry(resize)


def _scaled(width: int, height: int, scale: float) -> tuple[int, int]:
    return (max(1, round(width * scale)), max(1, round(height * scale)))


def _fit_max(size: tuple[int, int], max_out: int) -> tuple[int, int]:
    if max(size) <= max_out:
        return size
    return _scaled(size[0], size[1], max_out / max(size))


def crop_offset(
    gravity: str | tuple[float, float], size: tuple[int, int], box: tuple[int, int]
) -> tuple[int, int]:
    """Top-left corner of a `box` cut from an image of `size`, by gravity (not `auto`)."""
    spare_x, spare_y = size[0] - box[0], size[1] - box[1]
    if isinstance(gravity, tuple):
        x = round(gravity[0] * size[0] - box[0] / 2)
        y = round(gravity[1] * size[1] - box[1] / 2)
        return (min(max(0, x), spare_x), min(max(0, y), spare_y))
    x = {"left": 0, "right": spare_x}.get(gravity, spare_x // 2)
    y = {"top": 0, "bottom": spare_y}.get(gravity, spare_y // 2)
    return (x, y)


def decode_cost(source: SourceInfo, geometry: Geometry, animate: bool) -> int:
    """An estimate of the bytes a transform holds at its peak, for admission.

    Shrink-on-load decodes baseline JPEG (by up to 8x per side), WebP and SVG near the
    target size; other formats decode whole (4 bytes a pixel). A progressive JPEG keeps
    every DCT coefficient of every scan: 7 bytes a pixel, from the 100 MB of RSS growth
    measured for one 5120x2880 resize to 800 px (thumbnail_buffer, one libvips thread).
    """
    frames = source.pages if animate else 1
    source_px = source.width * source.height * frames
    target_px = geometry.resize[0] * geometry.resize[1] * frames
    if source.format == "jpeg" and source.progressive:
        decoded = 7 * source_px
    elif source.format == "jpeg":
        shrink = max(1, min(8, source.width // max(1, geometry.resize[0])))
        decoded = 4 * source_px // (shrink * shrink)
    elif source.format in ("webp", "svg"):
        decoded = 4 * target_px
    else:
        decoded = 4 * source_px
    return decoded + 8 * target_px + (4 << 20)
