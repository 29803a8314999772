"""The steps of a transform: `build(spec, geometry, output, animate)` returns only those
the request asks for, each a function of one libvips image; `render` runs them with the
deadline checked in between. One step, one test (tests/edge/test_render.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyvips

from edge.options import TransformSpec
from edge.transform.plan import ALPHA_FORMATS, Geometry, crop_offset

Step = Callable[[pyvips.Image], pyvips.Image]


def meta_field(image: pyvips.Image, name: str) -> Any:
    """A header field of `image`, or None when it has none."""
    return image.get(name) if image.get_typeof(name) else None


def build(spec: TransformSpec, geometry: Geometry, output: str, animate: bool) -> tuple[Step, ...]:
    """The steps this request needs, in order; nothing that is not asked for."""
    steps: list[Step] = []
    per_frame: list[Step] = []
    if spec.rotate:
        angle = {90: "d90", 180: "d180", 270: "d270"}[spec.rotate]
        per_frame.append(lambda im: im.rot(angle))
    if geometry.crop is not None:
        per_frame.append(_cropper(spec, geometry.crop, animate))
    if spec.flip:
        per_frame.append(_flipper(spec.flip))
    if geometry.pad is not None:
        per_frame.append(_padder(spec, geometry.pad))
    if per_frame:
        steps.append(_each_frame(per_frame) if animate else _chain(per_frame))
    if spec.rotate or "v" in (spec.flip or "") or (geometry.crop and spec.gravity == "auto"):
        # these read the image out of order; the decode is sequential, so hold the
        # (already resized) pixels in memory first
        steps.insert(0, lambda im: im.copy_memory())
    if spec.blur:
        sigma = spec.blur / 2
        steps.append(lambda im: im.gaussblur(sigma))
    if spec.sharpen:
        amount = spec.sharpen
        steps.append(lambda im: im.sharpen(sigma=1.0, m2=amount))
    if output not in ALPHA_FORMATS:
        steps.append(_flattener(spec))
    return tuple(steps)


def _chain(steps: list[Step]) -> Step:
    def run(image: pyvips.Image) -> pyvips.Image:
        for step in steps:
            image = step(image)
        return image

    return run


def _each_frame(steps: list[Step]) -> Step:
    chained = _chain(steps)

    def run(image: pyvips.Image) -> pyvips.Image:
        pages = int(meta_field(image, "n-pages") or 1)
        frame_height = image.height // pages
        frames = [
            chained(image.crop(0, i * frame_height, image.width, frame_height))
            for i in range(pages)
        ]
        joined = pyvips.Image.arrayjoin(frames, across=1).copy()
        joined.set_type(pyvips.GValue.gint_type, "page-height", frames[0].height)
        return joined

    return run


def _cropper(spec: TransformSpec, box: tuple[int, int], animate: bool) -> Step:
    def crop(image: pyvips.Image) -> pyvips.Image:
        if spec.gravity == "auto" and not animate:
            return image.smartcrop(box[0], box[1], interesting="attention")
        left, top = crop_offset(
            "center" if spec.gravity == "auto" else spec.gravity, (image.width, image.height), box
        )
        return image.crop(left, top, box[0], box[1])

    return crop


def _flipper(flip: str) -> Step:
    def run(image: pyvips.Image) -> pyvips.Image:
        if "h" in flip:
            image = image.fliphor()
        if "v" in flip:
            image = image.flipver()
        return image

    return run


def _padder(spec: TransformSpec, box: tuple[int, int]) -> Step:
    background = spec.background or (255, 255, 255, 255)

    def pad(image: pyvips.Image) -> pyvips.Image:
        if background[3] < 255 and not image.hasalpha():
            image = image.bandjoin_const([255])
        if image.bands < 3 and len(background) > 2:
            image = image.colourspace("srgb")
        left, top = crop_offset(
            spec.gravity if spec.gravity != "auto" else "center",
            box,
            (image.width, image.height),
        )
        colour = list(background[: image.bands]) if image.hasalpha() else list(background[:3])
        colour = colour[: image.bands]
        return image.embed(left, top, box[0], box[1], extend="background", background=colour)

    return pad


def _flattener(spec: TransformSpec) -> Step:
    background = list((spec.background or (255, 255, 255, 255))[:3])

    def flatten(image: pyvips.Image) -> pyvips.Image:
        if not image.hasalpha():
            return image
        colour = background if image.bands > 2 else [sum(background) / 3]
        return image.flatten(background=colour)

    return flatten
