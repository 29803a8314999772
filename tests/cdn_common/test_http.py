from __future__ import annotations

import pytest

from cdn_common.errors import RangeNotSatisfiable
from cdn_common.http import (
    ByteRange,
    etag_matches_strong,
    etag_matches_weak,
    http_date,
    not_modified,
    parse_http_date,
    parse_range,
)


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-99", 1000, ByteRange(0, 99)),
        ("bytes=900-", 1000, ByteRange(900, 999)),
        ("bytes=-100", 1000, ByteRange(900, 999)),
        ("bytes=-5000", 1000, ByteRange(0, 999)),
        ("bytes=990-2000", 1000, ByteRange(990, 999)),
        ("bytes=0-0", 1, ByteRange(0, 0)),
        ("bytes=0-1,5-9", 1000, None),  # several ranges: serve it whole
        ("items=0-1", 1000, None),
        ("bytes=abc", 1000, None),
        ("bytes=9-3", 1000, None),
        ("bytes=-", 1000, None),
    ],
)
def test_parse_range(header: str, size: int, expected: ByteRange | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"), [("bytes=1000-", 1000), ("bytes=-0", 10), ("bytes=0-", 0)]
)
def test_unsatisfiable_range(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable) as caught:
        parse_range(header, size)
    assert caught.value.headers["Content-Range"] == f"bytes */{size}"


def test_etag_comparison() -> None:
    assert etag_matches_weak('"a", W/"b"', '"b"')
    assert etag_matches_weak("*", '"x"')
    assert not etag_matches_weak('"a"', '"b"')
    assert etag_matches_strong('"a", "b"', '"b"')
    assert not etag_matches_strong('W/"b"', '"b"')
    assert not etag_matches_strong('"b"', 'W/"b"')


def test_http_dates_round_trip() -> None:
    assert http_date(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == 784111777
    assert parse_http_date("yesterday") is None


def test_not_modified_prefers_etags_over_dates() -> None:
    date = http_date(1000)
    assert not_modified('"a"', None, '"a"', 1000)
    assert not not_modified('"b"', date, '"a"', 1000)  # If-None-Match wins
    assert not_modified(None, date, '"a"', 1000)
    assert not not_modified(None, http_date(999), '"a"', 1000)
    assert not not_modified(None, "garbage", '"a"', 1000)
