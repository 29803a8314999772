"""Geometry and format choices, against a table worked out by hand."""

from __future__ import annotations

import pytest

from edge.options import BadOption, TransformSpec, parse_options
from edge.transform.plan import (
    Geometry,
    SourceInfo,
    choose_format,
    crop_offset,
    decode_cost,
    plan_geometry,
    rotated_size,
)

# source 1000x500
TABLE = [
    ("_", Geometry((1000, 500))),
    ("w=400", Geometry((400, 200))),
    ("w=2000", Geometry((1000, 500))),  # scale-down never enlarges
    ("w=2000,fit=contain", Geometry((2000, 1000))),
    ("h=250", Geometry((500, 250))),
    ("h=250,fit=cover", Geometry((500, 250))),  # one side: aspect kept, nothing to crop
    ("w=400,h=400", Geometry((400, 200))),
    ("w=400,h=400,fit=contain", Geometry((400, 200))),
    ("w=400,h=400,fit=pad", Geometry((400, 200), pad=(400, 400))),
    ("w=2000,h=2000,fit=pad", Geometry((2000, 1000), pad=(2000, 2000))),
    ("w=400,h=400,fit=cover", Geometry((800, 400), crop=(400, 400))),
    ("w=400,h=400,fit=crop", Geometry((800, 400), crop=(400, 400))),
    ("w=2000,h=2000,fit=cover", Geometry((4000, 2000), crop=(2000, 2000))),
    ("w=2000,h=2000,fit=crop", Geometry((1000, 500))),  # smaller than the box: scale-down
    ("w=600,h=1000,fit=crop", Geometry((1000, 500), crop=(600, 500))),
    ("w=800,h=200,fit=squeeze", Geometry((800, 200))),
    ("w=500,h=250,fit=pad", Geometry((500, 250))),  # exact fit: no padding
]


@pytest.mark.parametrize(("options", "expected"), TABLE)
def test_fit_geometry(options: str, expected: Geometry) -> None:
    assert plan_geometry(parse_options(options), 1000, 500, 8192) == expected


def test_output_limit() -> None:
    with pytest.raises(BadOption, match="EDGE_MAX_OUT_PX"):
        plan_geometry(TransformSpec(width=9000), 1000, 500, 8192)
    assert plan_geometry(TransformSpec(), 10000, 5000, 8192).output == (8192, 4096)
    assert plan_geometry(TransformSpec(width=8000, fit="contain"), 100, 200, 8192).output == (
        4096,
        8192,
    )


def info(fmt: str = "jpeg", alpha: bool = False, pages: int = 1) -> SourceInfo:
    return SourceInfo(1000, 500, pages, fmt, alpha)


@pytest.mark.parametrize(
    ("options", "source", "accept", "expected"),
    [
        ("f=auto", info(), "image/avif,image/webp,*/*", "avif"),
        ("f=auto", info(), "image/webp,*/*", "webp"),
        ("f=auto", info(), "*/*", "jpeg"),
        ("f=auto", info(alpha=True), "*/*", "png"),
        ("_", info("png"), "", "png"),
        ("_", info("tiff"), "", "jpeg"),
        ("_", info("tiff", alpha=True), "", "png"),
        ("_", info("svg", alpha=True), "", "png"),
        ("_", info("heif"), "", "jpeg"),
        ("f=json", info("webp"), "", "webp"),
        ("f=baseline-jpeg", info("png"), "image/avif", "baseline-jpeg"),
    ],
)
def test_format_choice(options: str, source: SourceInfo, accept: str, expected: str) -> None:
    assert choose_format(parse_options(options), source, accept, animate=False) == expected


def test_animated_auto_prefers_formats_that_animate() -> None:
    spec = parse_options("f=auto")
    assert choose_format(spec, info("gif", pages=3), "image/avif,image/webp", True) == "webp"
    assert choose_format(spec, info("gif", pages=3), "image/avif", True) == "gif"


def test_rotation_and_trim_change_the_planning_axes() -> None:
    source = SourceInfo(1000, 500, 1, "jpeg", False)
    assert rotated_size(parse_options("rotate=90"), source) == (500, 1000)
    assert rotated_size(parse_options("trim=10;20;30;40"), source) == (940, 460)
    with pytest.raises(BadOption, match="trim"):
        rotated_size(parse_options("trim=300;0;300;0"), source)


@pytest.mark.parametrize(
    ("gravity", "expected"),
    [
        ("center", (300, 50)),
        ("left", (0, 50)),
        ("right", (600, 50)),
        ("top", (300, 0)),
        ("bottom", (300, 100)),
        ((0.0, 0.0), (0, 0)),
        ((1.0, 1.0), (600, 100)),
        ((0.5, 0.5), (300, 50)),
        ((0.25, 0.5), (50, 50)),
    ],
)
def test_crop_offsets(gravity: str | tuple[float, float], expected: tuple[int, int]) -> None:
    assert crop_offset(gravity, (1000, 500), (400, 400)) == expected


def test_decode_cost_follows_shrink_on_load() -> None:
    baseline = SourceInfo(5120, 2880, 1, "jpeg", False)
    progressive = SourceInfo(5120, 2880, 1, "jpeg", False, progressive=True)
    small = Geometry((640, 360))
    assert decode_cost(progressive, small, False) > 10 * decode_cost(baseline, small, False)
    png = SourceInfo(5120, 2880, 1, "png", True)
    assert decode_cost(png, small, False) >= 5120 * 2880 * 4
