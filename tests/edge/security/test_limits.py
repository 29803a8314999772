"""Costs refused before any pixel is decoded or encoded: a blur too wide for its image,
an AVIF too large to encode in time, a JPEG with too many scans."""

from __future__ import annotations

import pytest

from cdn_common.errors import BadRequest, HTTPError
from edge.options import parse_options
from edge.security.limits import MAX_JPEG_SCANS, Limits, check_scans
from edge.transform.encode import Encoding
from edge.transform.render import prepare, render
from tests.images import jpeg

LIMITS = Limits(max_src_px=50_000_000, max_frames=100, max_out=8192)
BIG = jpeg(6000, 4000)  # 24 MP: plain colour, cheap to make


def test_a_blur_over_the_budget_is_refused_before_decoding() -> None:
    with pytest.raises(BadRequest, match="blur budget"):
        prepare(BIG, parse_options("blur=250"), "", LIMITS)
    assert prepare(BIG, parse_options("blur=250,w=400"), "", LIMITS).geometry.resize[0] == 400
    assert prepare(BIG, parse_options("blur=10"), "", LIMITS)  # small sigma: fine at 24 MP


def test_avif_over_its_area_is_refused_when_asked_for_and_avoided_when_negotiated() -> None:
    with pytest.raises(BadRequest, match="AVIF"):
        prepare(BIG, parse_options("f=avif"), "", LIMITS)
    auto = prepare(BIG, parse_options("f=auto"), "image/avif,image/webp", LIMITS)
    assert auto.output == "webp"
    assert prepare(BIG, parse_options("f=auto,w=2000"), "image/avif", LIMITS).output == "avif"


def test_scans_are_counted() -> None:
    check_scans(b"\xff\xda" * MAX_JPEG_SCANS)
    with pytest.raises(HTTPError) as refused:
        check_scans(memoryview(b"\xff\xda" * (MAX_JPEG_SCANS + 1)))
    assert refused.value.status == 422


def test_a_progressive_jpeg_with_too_many_scans_is_not_decoded() -> None:
    import pyvips

    image = pyvips.Image.black(64, 64).copy(interpretation="srgb")
    progressive = image.jpegsave_buffer(interlace=True)
    spec = parse_options("w=32")
    assert render(progressive, spec, prepare(progressive, spec, "", LIMITS), Encoding(), 1e12)
    # a comment segment after SOI, full of start-of-scan markers, stands in for the scans
    comment = b"\xff\xda" * (MAX_JPEG_SCANS + 1)
    segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
    hostile = progressive[:2] + segment + progressive[2:]
    job = prepare(hostile, spec, "", LIMITS)
    assert job.source.progressive
    with pytest.raises(HTTPError) as refused:
        render(hostile, spec, job, Encoding(), 1e12)
    assert refused.value.status == 422 and "scans" in refused.value.public_message
