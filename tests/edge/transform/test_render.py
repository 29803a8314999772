"""The libvips pipeline, one behaviour per test, on small generated images."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import pyvips

from cdn_common.errors import PayloadTooLarge, UnsupportedMedia
from edge.options import parse_options
from edge.security.limits import Limits
from edge.transform.encode import Encoding
from edge.transform.render import (
    Rendered,
    UnprocessableImage,
    prepare,
    probe,
    probe_in_python,
    render,
)
from tests.images import (
    cmyk_jpeg,
    gif,
    jpeg,
    oriented_jpeg,
    png,
    png16,
    png_bomb,
    svg,
    webp,
)

LIMITS = Limits(max_src_px=50_000_000, max_frames=100, max_out=8192)


def run(data: bytes, options: str, accept: str = "", limits: Limits = LIMITS) -> Rendered:
    spec = parse_options(options)
    job = prepare(data, spec, accept, limits)
    return render(data, spec, job, Encoding(), time.monotonic() + 30)


def decoded(result: Rendered) -> pyvips.Image:
    image = pyvips.Image.new_from_buffer(result.body, "")
    if image.get_typeof("n-pages") and image.get("n-pages") > 1:
        image = pyvips.Image.new_from_buffer(result.body, "", n=-1)
    return image


def test_only_jpeg_and_png_headers_are_read_without_libvips() -> None:
    # the others (frame counts, SVG scans, HEIF boxes) are libvips' and go to a worker
    for data in (jpeg(), png(), png(alpha=True), oriented_jpeg(orientation=6)):
        assert probe_in_python(data, LIMITS) == probe(data, LIMITS)
    assert not any(
        probe_in_python(data, LIMITS)
        for data in (gif(), webp(), svg(), b"", b"\xff\xd8", jpeg()[:40])
    )
    with pytest.raises(PayloadTooLarge):
        probe_in_python(jpeg(200, 100), Limits(max_src_px=10_000, max_frames=1, max_out=100))


def test_resize_keeps_aspect() -> None:
    result = run(jpeg(200, 100), "w=50")
    assert (result.width, result.height, result.format) == (50, 25, "jpeg")
    assert (decoded(result).width, decoded(result).height) == (50, 25)


@pytest.mark.parametrize(
    ("options", "size"),
    [
        ("w=40,h=40,fit=cover", (40, 40)),
        ("w=40,h=40,fit=cover,g=auto", (40, 40)),
        ("w=40,h=40,fit=crop,g=left", (40, 40)),
        ("w=40,h=40,fit=pad", (40, 40)),
        ("w=40,h=40,fit=scale-down", (40, 20)),
        ("w=40,h=10,fit=squeeze", (40, 10)),
        ("w=400,fit=contain", (400, 200)),
        ("w=400", (200, 100)),
    ],
)
def test_fit_modes_give_the_planned_size(options: str, size: tuple[int, int]) -> None:
    image = decoded(run(jpeg(200, 100), options))
    assert (image.width, image.height) == size


def test_exif_orientation_6_comes_out_landscape() -> None:
    data = oriented_jpeg(32, 64, orientation=6)  # stored portrait
    assert pyvips.Image.new_from_buffer(data, "").get("orientation") == 6
    result = run(data, "w=64")
    image = decoded(result)
    assert (image.width, image.height) == (64, 32)
    assert not image.get_typeof("orientation") or image.get("orientation") == 1


def test_cmyk_comes_out_srgb() -> None:
    data = cmyk_jpeg()
    assert pyvips.Image.new_from_buffer(data, "").interpretation == "cmyk"
    image = decoded(run(data, "w=32"))
    assert image.interpretation == "srgb"
    assert image.bands == 3


def test_16_bit_sources_become_8_bit() -> None:
    image = decoded(run(png16(), "w=32"))
    assert image.format == "uchar"
    assert image.interpretation == "srgb"


@pytest.mark.parametrize("fmt", ["webp", "png", "avif"])
def test_alpha_survives_where_the_format_has_it(fmt: str) -> None:
    image = decoded(run(png(alpha=True), f"w=32,f={fmt}"))
    assert image.hasalpha()


def test_alpha_is_flattened_on_the_background_for_jpeg() -> None:
    transparent = pyvips.Image.black(16, 16, bands=4).copy(interpretation="srgb")
    data = bytes(transparent.pngsave_buffer())
    image = decoded(run(data, "f=jpeg,background=%2300ff00".replace("%23", "#")))
    assert not image.hasalpha()
    r, g, b = (image.extract_band(i).avg() for i in range(3))
    assert g > 200 and r < 40 and b < 40


def test_pad_uses_the_background_colour() -> None:
    image = decoded(run(jpeg(200, 100), "w=100,h=100,fit=pad,background=#0000ff,f=png"))
    top = image.crop(0, 0, 100, 10)
    assert top.extract_band(2).avg() > 200 and top.extract_band(0).avg() < 40


def test_animation_keeps_its_frames() -> None:
    result = run(gif(40, 30, frames=4), "w=20")
    assert result.pages == 4
    image = decoded(result)
    assert image.get("n-pages") == 4
    assert (image.width, image.get("page-height")) == (20, 15)


def test_animation_cropped_per_frame() -> None:
    result = run(gif(40, 30, frames=3), "w=10,h=10,fit=cover,rotate=90")
    assert (result.width, result.height, result.pages) == (10, 10, 3)


def test_anim_false_keeps_the_first_frame() -> None:
    result = run(gif(40, 30, frames=4), "w=20,anim=false")
    assert result.pages == 1


def test_too_many_frames_is_refused_before_decoding() -> None:
    with pytest.raises(PayloadTooLarge, match="frames"):
        run(gif(8, 8, frames=5), "w=4", limits=Limits(50_000_000, 4, 8192))


def test_svg_is_rasterised() -> None:
    result = run(svg(100, 50), "w=50")
    assert result.format == "png"
    assert (result.width, result.height) == (50, 25)
    assert decoded(result).get("vips-loader") == "pngload_buffer"


def test_svg_with_entities_is_refused() -> None:
    bomb = b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "aaaa">]>' + svg()
    with pytest.raises(UnsupportedMedia):
        run(bomb, "w=10")


def test_decompression_bomb_is_refused_from_the_header() -> None:
    data = png_bomb()
    assert len(data) < 2000
    started = time.monotonic()
    with pytest.raises(PayloadTooLarge):
        run(data, "w=100")
    assert time.monotonic() - started < 1


def test_truncated_source_is_422() -> None:
    data = jpeg(300, 200)
    with pytest.raises(UnprocessableImage, match="truncated"):
        run(data[: len(data) // 2], "w=100")


@pytest.mark.parametrize("data", [b"", b"hello", b"<html></html>", b"\x89PNG\r\n\x1a\n"])
def test_non_images_are_415(data: bytes) -> None:
    with pytest.raises(UnsupportedMedia):
        run(data, "w=10")


@pytest.mark.parametrize(
    ("options", "loader"),
    [
        ("f=jpeg", "jpegload_buffer"),
        ("f=png", "pngload_buffer"),
        ("f=webp", "webpload_buffer"),
        ("f=avif", "heifload_buffer"),
        ("f=gif", "gifload_buffer"),
    ],
)
def test_encoders(options: str, loader: str) -> None:
    assert decoded(run(jpeg(), options)).get("vips-loader") == loader


def test_jpeg_progressive_and_baseline() -> None:
    # above 128 x 128 px (smaller ones are baseline either way: test_encode.py)
    source = jpeg(200, 150)
    progressive = pyvips.Image.new_from_buffer(run(source, "f=jpeg").body, "")
    baseline = pyvips.Image.new_from_buffer(run(source, "f=baseline-jpeg").body, "")
    assert progressive.get("interlaced") == 1
    assert not baseline.get_typeof("interlaced") or baseline.get("interlaced") == 0


def test_metadata_is_stripped_unless_kept() -> None:
    data = oriented_jpeg(orientation=1)
    stripped = pyvips.Image.new_from_buffer(run(data, "w=16").body, "")
    kept = pyvips.Image.new_from_buffer(run(data, "w=16,metadata=keep").body, "")
    assert not stripped.get_typeof("exif-data")
    assert kept.get_typeof("exif-data")


def test_copyright_keeps_only_copyright_and_artist() -> None:
    source = pyvips.Image.black(32, 32, bands=3).copy(interpretation="srgb")
    for name, value in (("Copyright", "ACME"), ("Artist", "Jane"), ("Make", "Canon")):
        source.set_type(pyvips.GValue.gstr_type, f"exif-ifd0-{name}", value)
    data = bytes(source.jpegsave_buffer(keep="exif"))
    out = pyvips.Image.new_from_buffer(run(data, "w=16,metadata=copyright").body, "")
    assert out.get("exif-ifd0-Copyright").startswith("ACME")
    assert out.get("exif-ifd0-Artist").startswith("Jane")
    assert not out.get_typeof("exif-ifd0-Make")


def test_quality_changes_size() -> None:
    data = jpeg(300, 200)
    assert len(run(data, "q=20").body) < len(run(data, "q=95").body)


def test_rotate_flip_blur_sharpen_trim() -> None:
    result = run(jpeg(200, 100), "rotate=90,flip=h,blur=4,sharpen=2,trim=10;10;10;10")
    assert (result.width, result.height) == (80, 180)
    border = run(webp(), "trim=border")
    assert border.width <= 64


def test_deadline_between_steps() -> None:
    from cdn_common.errors import GatewayTimeout

    spec = parse_options("w=40,h=40,fit=cover,blur=2")
    data = jpeg(200, 100)
    job = prepare(data, spec, "", LIMITS)
    with pytest.raises(GatewayTimeout):
        render(data, spec, job, Encoding(), time.monotonic() - 1)


def test_svg_external_references_are_not_loaded(tmp_path: Path) -> None:
    """Rendering an SVG must not reach files or the network (librsvg without a base URL)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            self.wfile.write(png(4, 4))

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    secret = tmp_path / "secret.png"
    secret.write_bytes(png(4, 4))
    port = server.server_address[1]
    extra = (
        f'<image href="http://127.0.0.1:{port}/leak.png" width="50" height="50"/>'
        f'<image href="file://{secret}" x="50" width="50" height="50"/>'
        '<script>alert(1)</script><rect width="10" height="10" onload="alert(1)"/>'
    )
    try:
        with pytest.raises(UnsupportedMedia, match="scripts, event handlers or external"):
            run(svg(100, 50, extra), "w=100")
        # below the refusal, libvips' own SVG loader reaches nothing either
        image = pyvips.Image.new_from_buffer(svg(100, 50, extra), "").flatten()
        image = image.copy_memory()
    finally:
        server.shutdown()
    assert hits == [], "no request left the process"
    for x in (25, 75):  # where the two images would have been drawn: still the red rect
        red, green, blue = image.getpoint(x, 25)[:3]
        assert red > 200 and green < 30 and blue < 30, "nothing was loaded from outside"


def halves() -> bytes:
    """200x100: the left half red, the right half blue."""
    red = pyvips.Image.black(100, 100).new_from_image([255, 0, 0])
    blue = pyvips.Image.black(100, 100).new_from_image([0, 0, 255])
    return bytes(red.join(blue, "horizontal").copy(interpretation="srgb").pngsave_buffer())


def dominant(result: Rendered) -> str:
    image = decoded(result)
    red, blue = image.extract_band(0).avg(), image.extract_band(2).avg()
    return "red" if red > blue + 50 else "blue" if blue > red + 50 else "mixed"


@pytest.mark.parametrize(
    ("gravity", "kept"),
    [
        ("left", "red"),
        ("right", "blue"),
        ("0.1x0.5", "red"),
        ("0.9x0.5", "blue"),
        ("center", "mixed"),
    ],
)
def test_crop_gravity_keeps_the_right_part(gravity: str, kept: str) -> None:
    result = run(halves(), f"w=50,h=50,fit=cover,g={gravity},f=png")
    assert (result.width, result.height) == (50, 50)
    assert dominant(result) == kept


def test_pad_gravity_places_the_image() -> None:
    image = decoded(run(halves(), "w=200,h=200,fit=pad,g=top,background=#00ff00,f=png"))
    top, bottom = image.crop(0, 0, 200, 100), image.crop(0, 100, 200, 100)
    assert top.extract_band(1).avg() < 10, "the image sits at the top"
    assert bottom.extract_band(1).avg() > 245, "the padding fills the bottom"
