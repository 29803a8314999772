"""The libvips side: probe a source's header, decode to the planned size, run the steps, encode.

`render` is a plain function of bytes and frozen values, so it can run in a thread or
a process. `build` turns a plan into a tuple of steps, each a no-op-free function of
one image; the runner checks the deadline between steps.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import pyvips

from cdn_common.errors import GatewayTimeout, HTTPError, PayloadTooLarge, UnsupportedMedia
from cdn_common.svg import looks_like_svg, svg_text
from edge.options import TransformSpec
from edge.security.limits import (
    Limits,
    OverMemory,
    avif_allowed,
    check_avif,
    check_blur,
    check_scans,
)
from edge.transform.encode import Encoding, encode
from edge.transform.header import Bytes, Header, read_header
from edge.transform.plan import (
    ANIMATED_FORMATS,
    Geometry,
    SourceInfo,
    choose_format,
    decode_cost,
    keeps_animation,
    plan_geometry,
    rotated_size,
)
from edge.transform.steps import build, meta_field

# libvips' operation cache would keep decoded sources alive across requests; the edge
# keeps its own caches, sized in bytes.
pyvips.cache_set_max(0)

_LOADERS = {
    "jpegload": "jpeg",
    "pngload": "png",
    "webpload": "webp",
    "gifload": "gif",
    "heifload": "heif",
    "svgload": "svg",
    "tiffload": "tiff",
    "jp2kload": "jp2",
    "jxlload": "jxl",
}
_SVG_DTD = re.compile(rb"<!(DOCTYPE|ENTITY)", re.IGNORECASE)
# What a drawing never needs and an attack does: scripts, event handlers, and references
# leaving the document (href/src/url() to anything but "#fragment" or "data:"). librsvg
# loads none of these here anyway (tested); refusing them is the second wall.
_SVG_ACTIVE = re.compile(
    rb"<script|\son[a-z]+\s*=|(?:href|src)\s*=\s*[\"']\s*(?!#|data:)|url\(\s*[\"']?\s*(?!#|data:)"
    rb"|@import",
    re.IGNORECASE,
)


def _check_svg(text: bytes) -> None:
    # the whole text: a DOCTYPE may follow any amount of comment
    if _SVG_DTD.search(text):
        raise UnsupportedMedia("SVG with a DTD or entities is refused")
    if _SVG_ACTIVE.search(text):
        raise UnsupportedMedia("SVG with scripts, event handlers or external references")


class UnprocessableImage(HTTPError):
    status = 422
    message = "image cannot be decoded"


@dataclass(frozen=True, slots=True)
class Rendered:
    body: bytes
    format: str
    width: int
    height: int
    pages: int
    source: SourceInfo
    pivot: Any = None  # a pre-shrunk decoded copy made on the way, for the caller to keep
    from_pivot: bool = False  # made from a pre-shrunk copy rather than the source bytes


def probe(data: Bytes, limits: Limits) -> SourceInfo:
    """The header only (no pixels); refuses what is not an image or is over the limits."""
    if not data:
        raise UnsupportedMedia("empty source")
    header = read_header(data)  # plain JPEG and PNG: read here, in microseconds
    pages = 1
    if header is None:
        header, pages = _vips_header(data)
    return _checked(header, pages, len(data), limits)


def probe_in_python(data: Bytes, limits: Limits) -> SourceInfo | None:
    """`probe` for the JPEG and PNG headers our own parser reads (5-50 us, no libvips);
    None for anything libvips has to read (in a worker, where a crash costs a process)."""
    header = read_header(data)
    return None if header is None else _checked(header, 1, len(data), limits)


def _checked(header: Header, pages: int, size: int, limits: Limits) -> SourceInfo:
    kind, width, height, alpha, orientation, progressive = header
    if width * height > limits.max_src_px:
        raise PayloadTooLarge(f"source is {width}x{height}, over the pixel limit")
    if orientation >= 5:
        width, height = height, width
    return SourceInfo(width, height, pages, kind, alpha, orientation, size, progressive)


def _vips_header(data: Bytes) -> tuple[Header, int]:
    """What libvips reads of the header, and the page count. SVG (librsvg parses the
    whole document first) is checked before libvips sees it."""
    if looks_like_svg(data):
        _check_svg(svg_text(data))
    try:
        image = pyvips.Image.new_from_source(_memory(data), "", access="sequential")
        loader = image.get("vips-loader")
    except pyvips.Error:
        raise UnsupportedMedia("source is not an image this edge can decode") from None
    kind = next((k for prefix, k in _LOADERS.items() if loader.startswith(prefix)), None)
    if kind is None:
        raise UnsupportedMedia("source is not an image this edge can decode")
    if kind == "heif" and meta_field(image, "heif-compression") == "av1":
        kind = "avif"
    if kind == "svg" and not looks_like_svg(data):  # never: every SVG opens with "<"
        raise UnsupportedMedia("SVG that does not start as XML is refused")
    header = Header(
        kind,
        image.width,
        int(meta_field(image, "page-height") or image.height),
        image.hasalpha(),
        int(meta_field(image, "orientation") or 1),
        bool(meta_field(image, "jpeg-multiscan")),
    )
    return header, int(meta_field(image, "n-pages") or 1)


@dataclass(frozen=True, slots=True)
class Job:
    """Everything decided before decoding: what the source is and what to make of it."""

    source: SourceInfo
    output: str
    geometry: Geometry
    animate: bool
    cost: int
    # format=auto's second choice, sent instead when smaller (graphics, tiny images)
    alternative: str | None = None


def prepare(
    data: Bytes,
    spec: TransformSpec,
    accept: str,
    limits: Limits,
    source: SourceInfo | None = None,
) -> Job:
    """Header (unless already known), limits, output format and geometry; no pixels decoded."""
    source = source or probe(data, limits)
    animate = keeps_animation(spec, source)
    if animate and source.pages > limits.max_frames:
        raise PayloadTooLarge(f"source has {source.pages} frames, over the limit")
    output = choose_format(spec, source, accept, animate)
    animate = animate and output in ANIMATED_FORMATS
    geometry = plan_geometry(spec, *rotated_size(spec, source), limits.max_out)
    check_blur(spec.blur, geometry.resize)
    if output == "avif" and not avif_allowed(geometry.output):
        if spec.format != "auto":
            check_avif(geometry.output)
        output = "webp" if "image/webp" in accept else ("png" if source.has_alpha else "jpeg")
    negotiated = spec.format == "auto" and output == "avif" and "image/webp" in accept
    alternative = "webp" if negotiated else None
    cost = decode_cost(source, geometry, animate)
    return Job(source, output, geometry, animate, cost, alternative)


def render(
    data: Bytes,
    spec: TransformSpec,
    job: Job,
    encoding: Encoding,
    deadline: float,
    pivot: Any = None,
    pivot_side: int = 0,
) -> Rendered:
    """Bytes in, bytes out; raises the edge's HTTP errors only.

    With `pivot` (a pre-shrunk copy of this source) the decode is skipped when the copy
    is large enough; with `pivot_side`, such a copy is made first and returned.
    """
    made = None
    try:
        target = _pre_rotation(spec, job.geometry.resize)
        pivotable = _pivotable(spec, job)
        if pivot is None and pivot_side and pivotable:
            made = pivot = _make_pivot(data, job.source, max(pivot_side, *target))
        from_pivot = pivot is not None and pivotable and _fits(target, pivot)
        if from_pivot:
            image = (
                pivot
                if target == (pivot.width, pivot.height)
                else pivot.thumbnail_image(target[0], height=target[1], size="force")
            )
        else:
            if job.source.format == "jpeg" and job.source.progressive:
                check_scans(data)  # multiscan only: baseline files skip the count
            image = _load(data, spec, target, job.animate)
        for step in build(spec, job.geometry, job.output, job.animate):
            if time.monotonic() > deadline:
                raise GatewayTimeout("transform deadline exceeded")
            image = step(image)
        body, output = encode(image, job.output, spec, encoding, job.alternative, deadline)
    except pyvips.Error as exc:
        if "out of memory" in str(exc).lower():  # vips_tracked_malloc's words
            raise OverMemory() from None
        raise UnprocessableImage(_vips_reason(exc)) from None
    except MemoryError:
        raise OverMemory() from None
    pages = int(meta_field(image, "n-pages") or 1) if job.animate else 1
    return Rendered(
        body, output, image.width, image.height // pages, pages, job.source, made, from_pivot
    )


def _pre_rotation(spec: TransformSpec, size: tuple[int, int]) -> tuple[int, int]:
    return (size[1], size[0]) if spec.rotate in (90, 270) else size


def _pivotable(spec: TransformSpec, job: Job) -> bool:
    return spec.trim is None and not job.animate and job.source.pages == 1


def _fits(target: tuple[int, int], pivot: Any) -> bool:
    return bool(target[0] <= pivot.width and target[1] <= pivot.height)


def _make_pivot(data: Bytes, source: SourceInfo, side: int) -> Any:
    """The source decoded (with shrink-on-load) to `side` px on its long side, in memory."""
    scale = min(1.0, side / max(source.width, source.height))
    width = max(1, round(source.width * scale))
    height = max(1, round(source.height * scale))
    image = _thumbnail(data, width, height=height, size="force", option_string="fail_on=truncated")
    return to_srgb(image).copy_memory()


def _vips_reason(exc: pyvips.Error) -> str:
    detail = str(exc).lower()
    if "truncated" in detail or "premature" in detail or "unexpected end" in detail:
        return "image is truncated or corrupt"
    return "image cannot be decoded"


def _load(data: Bytes, spec: TransformSpec, target: tuple[int, int], animate: bool) -> pyvips.Image:
    """Decode with shrink-on-load straight to `target` (the resize size, pre-rotation axes)."""
    options = "n=-1,fail_on=truncated" if animate else "fail_on=truncated"
    width, height = target
    if spec.trim is None:
        image = _thumbnail(data, width, height=height, size="force", option_string=options)
        return to_srgb(image)
    image = pyvips.Image.new_from_source(_memory(data), options).autorot()
    if spec.trim == "border":
        left, top, w, h = image.find_trim()
        if w > 0 and h > 0:
            image = image.crop(left, top, w, h)
    elif isinstance(spec.trim, tuple):
        top, right, bottom, left = spec.trim
        image = image.crop(left, top, image.width - left - right, image.height - top - bottom)
    return to_srgb(image.thumbnail_image(width, height=height, size="force"))


def _memory(data: Bytes) -> pyvips.Source:
    """A libvips source reading `data` where it is (a memoryview from the worker's receive
    buffer, or bytes), which must outlive the images made from it (a call's lifetime).
    The `*_buffer` loaders copy the whole source into a blob first: `thumbnail_source`
    from memory took 8-9% less CPU than `thumbnail_buffer` for the 2560x1600 and the
    5120x2880 JPEGs (loadtests/bench_transform.py runs its plain loops the same way)."""
    return pyvips.Source.new_from_memory(data)


def _thumbnail(data: Bytes, width: int, **options: Any) -> pyvips.Image:
    source = _memory(data)
    image = pyvips.Image.thumbnail_source(source, width, **options)
    image._references.append(source)  # as new_from_source does: the data stays alive
    return image


def to_srgb(image: pyvips.Image) -> pyvips.Image:
    """8-bit sRGB (or 8-bit grey): CMYK, Lab, 16-bit and ICC-tagged sources converge here."""
    if image.interpretation not in ("srgb", "b-w") or image.format != "uchar":
        target = "b-w" if image.interpretation in ("b-w", "grey16") else "srgb"
        image = image.colourspace(target)
    if image.format != "uchar":
        image = image.cast("uchar")
    return image
