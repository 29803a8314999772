"""Blob keys: the one function that turns a request path into a key that cannot escape the store.

Rules (each violation is a 400 naming it): UTF-8, at most 1024 bytes, segments of
at most 255 bytes separated by single `/`; no empty, `.`-leading (so no `.`/`..`,
and the store's own `.meta`/`.staging` stay unreachable) or `_`-leading first segment
(reserved for routes such as `_meta`); no backslash, `%`, NUL or control character;
percent-encoded slashes and backslashes are refused before decoding.
"""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import unquote_to_bytes

from cdn_common.errors import BadRequest

MAX_KEY_BYTES = 1024
MAX_SEGMENT_BYTES = 255
RESERVED = frozenset({"healthz", "readyz", "metrics"})
_FORBIDDEN_CHARS = re.compile(r"[\x00-\x1f\x7f\\%]")
_ENCODED_SEPARATOR = re.compile(rb"%(2f|5c)", re.IGNORECASE)


class BadKey(BadRequest):
    message = "invalid key"


@lru_cache(maxsize=65536)
def key_from_raw_path(raw_path: bytes) -> str:
    """Decode the percent-encoded path after the route's leading `/` and validate it.

    Pure, so memoised: hot keys are validated once (an invalid one raises every time).
    """
    if _ENCODED_SEPARATOR.search(raw_path):
        raise BadKey("invalid key: encoded slash or backslash")
    try:
        key = unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError:
        raise BadKey("invalid key: not UTF-8") from None
    return validate_key(key)


def validate_key(key: str) -> str:
    if not key:
        raise BadKey("invalid key: empty")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise BadKey(f"invalid key: longer than {MAX_KEY_BYTES} bytes")
    if key.startswith("/"):
        raise BadKey("invalid key: absolute path")
    bad = _FORBIDDEN_CHARS.search(key)
    if bad:
        raise BadKey(f"invalid key: forbidden character {bad.group()!r}")
    segments = key.split("/")
    for segment in segments:
        if not segment:
            raise BadKey("invalid key: empty segment")
        if segment.startswith("."):
            raise BadKey("invalid key: segment starts with '.'")
        if len(segment.encode()) > MAX_SEGMENT_BYTES:
            raise BadKey(f"invalid key: segment longer than {MAX_SEGMENT_BYTES} bytes")
    if segments[0].startswith("_") or (len(segments) == 1 and key in RESERVED):
        raise BadKey("invalid key: reserved name")
    return key
