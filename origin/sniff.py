"""What an upload is, judged from its bytes by libvips' own loaders, and its header.

Only formats an image CDN serves are accepted: libvips can also load CSV, matrix,
raw and its own `.vips` format, which are not images anyone should upload.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyvips
from pyvips import ffi, vips_lib

from cdn_common.errors import UnsupportedMedia
from cdn_common.svg import svg_text

SNIFF_BYTES = 4096

# libvips loader class name (without the Buffer/File/Source suffix) -> media type
_LOADERS = {
    "VipsForeignLoadJpeg": "image/jpeg",
    "VipsForeignLoadPng": "image/png",
    "VipsForeignLoadWebp": "image/webp",
    "VipsForeignLoadNsgif": "image/gif",
    "VipsForeignLoadGif": "image/gif",
    "VipsForeignLoadHeif": "image/heif",
    "VipsForeignLoadSvg": "image/svg+xml",
    "VipsForeignLoadTiff": "image/tiff",
    "VipsForeignLoadJp2k": "image/jp2",
    "VipsForeignLoadJxl": "image/jxl",
}
_AVIF_BRANDS = (b"avif", b"avis")

# Read headers fresh every time: libvips' operation cache keys loads by file name,
# and a blob replaced under the same name must not report the old dimensions.
pyvips.cache_set_max(0)


@dataclass(frozen=True, slots=True)
class ImageInfo:
    content_type: str
    width: int
    height: int
    pages: int


def sniff_type(head: bytes) -> str | None:
    """The media type of an image whose first bytes are `head`, or None when it is not one."""
    if not head:
        return None
    pointer = vips_lib.vips_foreign_find_load_buffer(head, len(head))
    # a miss appends to libvips' process-wide error buffer, which nothing else clears:
    # it grew by a line per sniffed non-image, for ever
    vips_lib.vips_error_clear()
    if pointer == ffi.NULL:
        return None
    loader = ffi.string(pointer).decode()
    for prefix, media_type in _LOADERS.items():
        if loader.startswith(prefix):
            if media_type == "image/heif" and head[8:12] in _AVIF_BRANDS:
                return "image/avif"
            return media_type
    return None


def read_header(path: Path, head: bytes) -> ImageInfo:
    """Type and dimensions from the header only (no pixels are decoded); 415 if unreadable."""
    content_type = sniff_type(head)
    if content_type is None:
        raise UnsupportedMedia("not an image format this service accepts")
    if content_type == "image/svg+xml":
        svg_text(path.read_bytes())  # bounded before librsvg parses it (413 past a limit)
    try:
        image = pyvips.Image.new_from_file(str(path), access="sequential")
        pages = image.get("n-pages") if image.get_typeof("n-pages") else 1
        height = image.get("page-height") if image.get_typeof("page-height") else image.height
    except pyvips.Error:
        raise UnsupportedMedia("image header cannot be read") from None
    return ImageInfo(content_type, image.width, height, pages)
