"""JPEG and PNG headers read in Python, before libvips sees the file.

The transform path needs a source's size, orientation, alpha and scan mode before it
decides anything (limits, lane, geometry), and that is a few dozen bytes of the file.
pyvips' `new_from_buffer` took 270 us of CPU for a 2560x1600 JPEG to tell it (a third
of the event loop's busy time in the transform benchmark). imgproxy reads headers
itself for the same reason. Only the plain cases are answered here: baseline or
progressive 8-bit JPEG, PNG with a sound IHDR, one well-formed EXIF orientation at most.
Anything else (other formats, other SOF types, a second EXIF block, an orientation
outside 1-8, a header running past the data) gives None, and libvips reads the header
as before. tests/edge/test_header.py holds both readers to the same answers.
"""

from __future__ import annotations

import zlib
from typing import Literal, NamedTuple


class Header(NamedTuple):
    format: str
    width: int  # stored axes, before orientation
    height: int
    has_alpha: bool
    orientation: int
    progressive: bool  # libvips' jpeg-multiscan: more than one scan


# a source: bytes in the edge, a read-only view of its receive buffer in a worker
Bytes = bytes | memoryview


MAX_JPEG_SIDE = 65500  # libjpeg's JPEG_MAX_DIMENSION
MAX_PNG_SIDE = 10_000_000  # libvips' VIPS_MAX_COORD
SOF_READ = {0xC0: False, 0xC1: False, 0xC2: True}  # baseline, extended, progressive Huffman
SOF_LEFT = frozenset(range(0xC3, 0xD0)) - {0xC4, 0xC8, 0xCC}  # lossless, arithmetic...
STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RSTn: no length
PNG_START = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR"


def read_header(data: Bytes) -> Header | None:
    if data[:3] == b"\xff\xd8\xff":
        return _jpeg(data)
    if data[:16] == PNG_START:
        return _png(data)
    return None


def _jpeg(data: Bytes) -> Header | None:
    size = len(data)
    pos = 2
    frame: tuple[int, int, int, bool] | None = None  # width, height, components, progressive
    orientation = 0  # none seen
    while pos + 4 <= size:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in STANDALONE:
            pos += 2
            continue
        if marker in (0xD8, 0xD9):  # a second SOI, or EOI before any scan
            return None
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if end > size or end < pos + 4:
            return None
        if marker == 0xDA:  # SOS: the header is complete
            if frame is None or end == pos + 4:
                return None
            width, height, components, progressive = frame
            # libjpeg's has_multiple_scans: progressive, or a first scan without every component
            multiscan = progressive or data[pos + 4] < components
            return Header("jpeg", width, height, False, orientation or 1, multiscan)
        if marker in SOF_LEFT:
            return None
        if marker in SOF_READ:
            segment = data[pos + 4 : end]
            if frame is not None or len(segment) < 6 or segment[0] != 8:
                return None
            height = int.from_bytes(segment[1:3], "big")
            width = int.from_bytes(segment[3:5], "big")
            components = segment[5]
            if not (0 < width <= MAX_JPEG_SIDE and 0 < height <= MAX_JPEG_SIDE):
                return None
            if components not in (1, 3, 4):
                return None
            frame = (width, height, components, SOF_READ[marker])
        elif marker == 0xE1 and data[pos + 4 : pos + 10] == b"Exif\x00\x00":
            if orientation:
                return None
            found = exif_orientation(data[pos + 10 : end])
            if found is None:
                return None
            orientation = found
        pos = end
    return None


def _png(data: Bytes) -> Header | None:
    if len(data) < 33 or zlib.crc32(data[12:29]) != int.from_bytes(data[29:33], "big"):
        return None
    width = int.from_bytes(data[16:20], "big")
    height = int.from_bytes(data[20:24], "big")
    colour = data[25]
    if not (0 < width <= MAX_PNG_SIDE and 0 < height <= MAX_PNG_SIDE):
        return None
    if colour not in (0, 2, 3, 4, 6):
        return None
    alpha = colour in (4, 6)
    orientation = 0
    pos = 33
    size = len(data)
    while pos + 8 <= size:
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            return Header("png", width, height, alpha, orientation or 1, False)
        end = pos + 12 + length
        if end > size:
            return None
        if kind == b"tRNS":
            alpha = True
        elif kind == b"eXIf":
            found = exif_orientation(data[pos + 8 : pos + 8 + length])
            if found is None or orientation:
                return None
            orientation = found
        pos = end
    return None


def exif_orientation(tiff: Bytes) -> int | None:
    """Orientation from a TIFF-structured EXIF block's IFD0: 1 when absent, None when
    the block is not well formed or the value is not one of the eight."""
    endian: Literal["little", "big"]
    order = tiff[:2]
    if order == b"II":
        endian = "little"
    elif order == b"MM":
        endian = "big"
    else:
        return None
    if len(tiff) < 8 or int.from_bytes(tiff[2:4], endian) != 42:
        return None
    ifd = int.from_bytes(tiff[4:8], endian)
    if ifd < 8 or ifd + 2 > len(tiff):
        return None
    count = int.from_bytes(tiff[ifd : ifd + 2], endian)
    if ifd + 2 + 12 * count > len(tiff):
        return None
    for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
        if int.from_bytes(tiff[entry : entry + 2], endian) != 0x0112:
            continue
        kind = int.from_bytes(tiff[entry + 2 : entry + 4], endian)
        values = int.from_bytes(tiff[entry + 4 : entry + 8], endian)
        if kind != 3 or values != 1:  # one SHORT
            return None
        value = int.from_bytes(tiff[entry + 8 : entry + 10], endian)
        return value if 1 <= value <= 8 else None
    return 1
