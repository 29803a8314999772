"""Pure HTTP helpers: dates, entity-tag matching (RFC 9110 §13) and single byte ranges."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from functools import lru_cache
from typing import Any

from cdn_common.errors import RangeNotSatisfiable


def digits(text: str) -> bool:
    """Only ASCII 0-9, at least one: `str.isdigit` also takes "²" (which `int` then
    refuses: a 500 where a 400 was due) and "٣" (which it accepts)."""
    return text.isascii() and text.isdigit()


def http_date(timestamp: float) -> str:
    """IMF-fixdate for a POSIX timestamp, as Last-Modified and Date want it."""
    return _http_date(int(timestamp))


@lru_cache(maxsize=4096)
def _http_date(seconds: int) -> str:
    return format_datetime(datetime.fromtimestamp(seconds, UTC), usegmt=True)


_now: list[Any] = [-1, b""]  # the second last formatted, and its Date value


def now_date() -> bytes:
    """The current time as a Date field value (formatted once a second)."""
    second = int(time.time())
    if second != _now[0]:
        _now[1] = _http_date(second).encode()
        _now[0] = second
    value: bytes = _now[1]
    return value


def parse_http_date(value: str) -> float | None:
    """A POSIX timestamp, or None when the value is not an HTTP date (RFC 9110 §5.6.7)."""
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.timestamp()


def _opaque(tag: str) -> str:
    tag = tag.strip()
    return tag[2:] if tag.startswith("W/") else tag


def etag_matches_weak(header: str, etag: str) -> bool:
    """If-None-Match semantics: weak comparison against a list of tags or `*`."""
    if header.strip() == "*":
        return True
    mine = _opaque(etag)
    return any(_opaque(candidate) == mine for candidate in header.split(","))


def etag_matches_strong(header: str, etag: str) -> bool:
    """If-Match semantics: strong comparison; a weak tag never matches."""
    if header.strip() == "*":
        return True
    if etag.startswith("W/"):
        return False
    return any(candidate.strip() == etag for candidate in header.split(","))


def not_modified(
    if_none_match: str | None, if_modified_since: str | None, etag: str, mtime: float
) -> bool:
    """Whether a GET/HEAD should be answered 304 (RFC 9110 §13.2.2 order)."""
    if if_none_match is not None:
        return etag_matches_weak(if_none_match, etag)
    if if_modified_since is not None:
        since = parse_http_date(if_modified_since)
        return since is not None and int(mtime) <= since
    return False


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # inclusive, as in Content-Range

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


def parse_range(header: str, size: int) -> ByteRange | None:
    """The one byte range a `Range` header asks for (RFC 9110 §14.2).

    None means "serve the whole representation": a header we do not understand,
    or several ranges (allowed to be ignored). An unsatisfiable single range raises.
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (digits(first) or first == "") or not (digits(last) or last == ""):
        return None
    if first == "":
        if last == "":
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        return ByteRange(max(0, size - suffix), size - 1)
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable(size)
    return ByteRange(start, min(int(last), size - 1) if last else size - 1)
