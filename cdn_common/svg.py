"""Bounded reading of SVG before librsvg parses it, for both services.

librsvg parses a whole document before it reports even the size, so SVG is checked
first, as its bytes are decompressed: a 67 KB svgz once inflated to about a million
elements and took the edge's process tree to 5 GB and the origin to 1.7 GB. Drawings an
image CDN serves are far under both limits.
"""

from __future__ import annotations

import zlib

from cdn_common.errors import PayloadTooLarge, UnsupportedMedia

MAX_SVG_BYTES = 8 * 1024 * 1024  # decompressed
MAX_SVG_ELEMENTS = 50_000  # counted as "<" (elements, comments, declarations)
CHUNK = 64 * 1024
GZIP = b"\x1f\x8b"


def looks_like_svg(data: bytes | memoryview) -> bool:
    """Text that opens like XML, or gzip: what librsvg would be handed (any other XML is
    refused by libvips after the same bounded check)."""
    head = bytes(data[:64]).lstrip(b" \t\r\n\xef\xbb\xbf")
    return head[:1] == b"<" or head[:2] == GZIP


def svg_text(data: bytes | memoryview) -> bytes:
    """The SVG's text, decompressed (svgz) and checked against the size and element
    limits chunk by chunk, so a bomb is refused after at most one chunk past a limit."""
    raw = bytes(data).lstrip(b" \t\r\n")
    if not raw.startswith(GZIP):
        _check(len(raw), raw.count(b"<"))
        return raw
    inflate = zlib.decompressobj(wbits=47)  # gzip or zlib header
    parts: list[bytes] = []
    size = elements = 0
    pending = raw
    try:
        while pending and not inflate.eof:
            chunk = inflate.decompress(pending, CHUNK)
            pending = inflate.unconsumed_tail
            size += len(chunk)
            elements += chunk.count(b"<")
            _check(size, elements)
            parts.append(chunk)
    except zlib.error:
        raise UnsupportedMedia("compressed SVG is corrupt") from None
    return b"".join(parts)


def _check(size: int, elements: int) -> None:
    if size > MAX_SVG_BYTES:
        raise PayloadTooLarge(f"SVG is over {MAX_SVG_BYTES // (1024 * 1024)} MiB uncompressed")
    if elements > MAX_SVG_ELEMENTS:
        raise PayloadTooLarge(f"SVG has more than {MAX_SVG_ELEMENTS} elements")
