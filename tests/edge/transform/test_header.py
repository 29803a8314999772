"""The Python JPEG/PNG header reader answers as libvips does, or not at all."""

from __future__ import annotations

import struct

import pytest
import pyvips
from hypothesis import given, settings
from hypothesis import strategies as st

from cdn_common.errors import UnsupportedMedia
from edge.transform.header import Header, exif_orientation, read_header
from edge.transform.render import _vips_header
from tests.images import cmyk_jpeg, gradient, jpeg, oriented_jpeg, png, png16


def grey_jpeg() -> bytes:
    return bytes(gradient()[0].copy(interpretation="b-w").jpegsave_buffer())


def progressive_jpeg() -> bytes:
    return bytes(gradient(80, 60).jpegsave_buffer(interlace=True))


def palette_png(alpha: bool) -> bytes:
    return bytes(gradient(40, 30, 4 if alpha else 3).pngsave_buffer(palette=True))


def grey_alpha_png() -> bytes:
    image = gradient()[0].bandjoin(gradient()[1]).copy(interpretation="b-w")
    return bytes(image.pngsave_buffer())


def oriented_png(orientation: int) -> bytes:
    image = gradient(50, 20).copy()
    image.set_type(pyvips.GValue.gint_type, "orientation", orientation)
    return bytes(image.pngsave_buffer(keep="exif"))


SOURCES = {
    "jpeg": jpeg,
    "progressive": progressive_jpeg,
    "grey": grey_jpeg,
    "cmyk": cmyk_jpeg,
    **{f"orientation-{o}": (lambda o=o: oriented_jpeg(64, 32, o)) for o in range(1, 9)},
    "png": png,
    "png-alpha": lambda: png(alpha=True),
    "png16": png16,
    "palette": lambda: palette_png(False),
    "palette-alpha": lambda: palette_png(True),
    "grey-alpha-png": grey_alpha_png,
    "png-orientation-6": lambda: oriented_png(6),
}


@pytest.mark.parametrize("name", SOURCES)
def test_the_reader_agrees_with_libvips(name: str) -> None:
    data = SOURCES[name]()
    header = read_header(data)
    assert header is not None, "a plain JPEG or PNG is read without libvips"
    assert header == _vips_header(data)[0]


def test_what_it_cannot_vouch_for_is_left_to_libvips() -> None:
    good_png = png()
    bad_crc = bytearray(good_png)
    bad_crc[20] ^= 0x01  # height changed, IHDR checksum now wrong
    assert read_header(bytes(bad_crc)) is None
    assert read_header(good_png[:40]) is None, "no IDAT: the header is not complete"
    base = jpeg()
    sos = base.index(b"\xff\xda")
    assert read_header(base[:sos]) is None, "no SOS: libjpeg would not finish the header"
    twelve_bit = bytearray(base)
    sof = base.index(b"\xff\xc0")
    twelve_bit[sof + 4] = 12
    assert read_header(bytes(twelve_bit)) is None
    arithmetic = bytearray(base)
    arithmetic[sof + 1] = 0xC9
    assert read_header(bytes(arithmetic)) is None
    assert read_header(b"GIF89a" + b"\x00" * 20) is None
    assert read_header(bytes(gradient().webpsave_buffer())) is None


def tiff(orientation: int | None, big_endian: bool = False, kind: int = 3) -> bytes:
    fmt = ">" if big_endian else "<"
    entries = []
    if orientation is not None:
        entries.append(struct.pack(fmt + "HHIHH", 0x0112, kind, 1, orientation, 0))
    entries.append(struct.pack(fmt + "HHII", 0x010F, 2, 4, 0))  # Make, inline
    ifd = struct.pack(fmt + "H", len(entries)) + b"".join(entries) + b"\x00\x00\x00\x00"
    return (b"MM" if big_endian else b"II") + struct.pack(fmt + "HI", 42, 8) + ifd


def test_exif_orientation_both_byte_orders_and_bad_blocks() -> None:
    assert exif_orientation(tiff(6)) == 6
    assert exif_orientation(tiff(8, big_endian=True)) == 8
    assert exif_orientation(tiff(None)) == 1
    assert exif_orientation(tiff(9)) is None
    assert exif_orientation(tiff(6, kind=4)) is None  # a LONG: left to libvips
    assert exif_orientation(tiff(6)[:20]) is None  # entries cut short
    assert exif_orientation(b"XX" + tiff(6)[2:]) is None


def bare_jpeg() -> bytes:
    return bytes(gradient().jpegsave_buffer(keep="none"))  # libvips adds EXIF otherwise


def with_exif(data: bytes, block: bytes) -> bytes:
    """`data` (a JPEG) with an APP1 EXIF segment after SOI."""
    segment = b"Exif\x00\x00" + block
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(segment) + 2) + segment + data[2:]


def test_a_second_exif_block_is_left_to_libvips() -> None:
    assert read_header(with_exif(jpeg(), tiff(6))) is None, "libvips wrote one already"
    once = with_exif(bare_jpeg(), tiff(6))
    header = read_header(once)
    assert header is not None and header.orientation == 6
    assert header == _vips_header(once)[0]
    assert read_header(with_exif(once, tiff(3))) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.integers(min_value=0, max_value=600))
def test_no_input_makes_the_reader_raise_or_disagree(noise: bytes, cut: int) -> None:
    """Mangled headers: either no answer, or the answer libvips gives."""
    for base in (jpeg(), png(alpha=True), with_exif(bare_jpeg(), tiff(6))):
        data = base[:cut] + noise + base[cut + len(noise) :]
        header = read_header(data)
        if header is None:
            continue
        assert isinstance(header, Header)
        try:
            vips = _vips_header(data)[0]
        except UnsupportedMedia:
            continue  # libvips refuses the header: the decode in the worker fails too (422)
        assert header == vips
