"""Freshness lifetimes (RFC 9111 §4.2) and the source cache that obeys them."""

from __future__ import annotations

import pytest

from cdn_common.http import http_date
from edge import httpcache
from edge.cache.sources import SourceCache
from edge.httpcache import source_lifetime
from edge.origin_client import Fetched

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("cache_control", "expires", "last_modified", "lifetime"),
    [
        ("public, max-age=3600", None, None, 3600),
        ("max-age=60, s-maxage=600", None, None, 600),  # a shared cache takes s-maxage
        ("max-age=60", http_date(NOW + 9999), None, 60),  # max-age beats Expires
        (None, http_date(NOW + 120), None, 120),
        (None, http_date(NOW - 5), None, 0),
        (None, "not a date", None, 0),
        ("no-store, max-age=3600", None, None, 0),
        ("private, max-age=3600", None, None, 0),
        ("no-cache", None, None, 0),
        ("max-age=abc", None, None, 0),
        (None, None, http_date(NOW - 1000), 100),  # heuristic: 10% of the age
        (None, None, http_date(NOW - 10_000_000), 86400),  # capped at a day
        (None, None, None, 0),
    ],
)
def test_lifetime(
    cache_control: str | None, expires: str | None, last_modified: str | None, lifetime: float
) -> None:
    assert source_lifetime(cache_control, expires, NOW, last_modified) == pytest.approx(lifetime)


def test_surrogate_control_targets_and_stale_extension() -> None:
    headers = [(b"surrogate-control", b"max-age=30+90, no-store;other-device")]
    cc = httpcache.cache_directives([*headers, (b"cache-control", b"no-store")])
    assert cc == {"max-age": "30", "stale-while-revalidate": "90"}
    cdn = [(b"cdn-cache-control", b"max-age=5"), *headers]
    assert httpcache.cache_directives(cdn) == {"max-age": "5"}, "CDN-Cache-Control first"


def test_directives_are_one_list_and_quoted_commas_stay_inside() -> None:
    cc = httpcache.directives(['no-cache="Set-Cookie, X-A", MAX-AGE=10', "max-age=99, public"])
    assert cc == {"no-cache": "Set-Cookie, X-A", "max-age": "10", "public": None}
    kept_cc, kept = httpcache.qualified(
        cc, [(b"set-cookie", b"a"), (b"x-a", b"b"), (b"etag", b'"e"')]
    )
    assert "no-cache" not in kept_cc and kept == [(b"etag", b'"e"')]


def test_stale_windows_come_from_the_response_else_the_default() -> None:
    cc = httpcache.directives(["max-age=1, stale-while-revalidate=30, stale-if-error=bad"])
    assert httpcache.stale_window(cc, "stale-while-revalidate", 0.0) == 30
    assert httpcache.stale_window(cc, "stale-if-error", 600.0) == 600
    assert httpcache.stale_window({}, "stale-if-error", 0.0) == 0


def fetched(cache_control: str | None = "max-age=10", expires: str | None = None) -> Fetched:
    return Fetched(b"x" * 100, "image/jpeg", '"e"', None, cache_control, expires, 0.0)


def test_sources_are_kept_until_they_expire() -> None:
    now = [0.0]
    cache = SourceCache(10_000, 0, clock=lambda: now[0], wall=lambda: NOW)
    cache.put("a", fetched(cache_control="no-store"))
    assert cache.get("a") is None, "no-store is not kept"
    cache.put("a", fetched())
    assert cache.get("a") is not None
    now[0] = 10.5
    assert cache.get("a") is None, "expired after max-age"


def test_expires_header_is_honoured() -> None:
    now = [0.0]
    cache = SourceCache(10_000, 0, clock=lambda: now[0], wall=lambda: NOW)
    for _ in range(2):
        cache.touch("a")
    cache.put("a", fetched(cache_control=None, expires=http_date(NOW + 30)))
    now[0] = 29
    assert cache.get("a") is not None
    now[0] = 31
    assert cache.get("a") is None


def test_purge_and_budget() -> None:
    cache = SourceCache(1300, 0)  # room for two entries of 100 bytes + 512 overhead
    for key in ("a", "b", "c"):
        cache.touch(key)
        cache.touch(key)
        cache.put(key, fetched())
    assert cache.source_bytes <= 1300
    assert cache.get("a") is None, "the oldest unreused went first"
    assert cache.get("c") is not None
    assert cache.purge("c") == 1
    assert cache.get("c") is None
