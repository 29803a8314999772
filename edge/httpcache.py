"""RFC 9111 as pure functions: what a shared cache may store, for how long, and how old
a stored response is. No I/O; times are POSIX seconds passed in.

Parsing is lenient where the RFC says so: several `Cache-Control` lines are one list,
names are case-insensitive, values may be quoted, an invalid delta-seconds or `Expires`
means "already stale", not an error. `CDN-Cache-Control` (RFC 9213), then
`Surrogate-Control`, replace `Cache-Control` for this cache's own decisions, and are
never forwarded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from cdn_common.http import digits, etag_matches_weak, parse_http_date

Headers = list[tuple[bytes, bytes]]
Directives = Mapping[str, str | None]

# RFC 9110 §15.1: statuses a cache may store without explicit freshness (heuristically)
HEURISTIC_STATUSES = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})
# statuses this cache understands well enough to store at all
UNDERSTOOD_STATUSES = HEURISTIC_STATUSES | {302, 303, 307}
HEURISTIC_FRACTION = 0.1  # of the Last-Modified age (RFC 9111 §4.2.2)
HEURISTIC_MAX = 86400.0
DELTA_MAX = 2**31  # RFC 9111 §1.2.2: a delta-seconds too large to hold is this
# RFC 9110 §7.6.1 and the fields a cache consumes itself
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
CONSUMED = frozenset({b"cdn-cache-control", b"surrogate-control"})
RECOMPUTED = frozenset({b"age"})  # a stored response's Age is the cache's to say


def values(headers: Headers, name: bytes) -> list[str]:
    """Every value of a field, lines in order (a list field's lines are one list)."""
    return [value.decode("latin-1") for key, value in headers if key == name]


def directives(lines: Iterable[str]) -> dict[str, str | None]:
    """Cache-Control directives, names lower-cased, values unquoted; the first of a
    repeated directive wins."""
    found: dict[str, str | None] = {}
    for line in lines:
        for part in _split(line):
            name, sep, value = part.partition("=")
            name = name.strip().lower()
            if name and name not in found:
                found[name] = _unquote(value.strip()) if sep else None
    return found


def _split(line: str) -> list[str]:
    """Comma-separated, but not inside a quoted string (`no-cache="a, b"`)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in line:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def seconds(value: str | None) -> int | None:
    """A delta-seconds; None when missing or invalid (then the directive gives no time)."""
    if value is None or not digits(value):
        return None
    return min(int(value), DELTA_MAX)


def cache_directives(headers: Headers) -> dict[str, str | None]:
    """The directives this cache obeys: CDN-Cache-Control, else Surrogate-Control, else
    Cache-Control."""
    lines = values(headers, b"cdn-cache-control")
    if lines:
        return directives(lines)
    lines = values(headers, b"surrogate-control")
    if lines:
        return surrogate_directives(lines)
    return directives(values(headers, b"cache-control"))


def surrogate_directives(lines: Iterable[str]) -> dict[str, str | None]:
    """Edge Architecture 1.0 `Surrogate-Control`: a directive with `;device` targets one
    named surrogate and is not ours (we have no device token); `max-age=60+30` is 60
    fresh, then 30 more that may be served stale while revalidating."""
    found: dict[str, str | None] = {}
    for name, value in directives(lines).items():
        if ";" in name or (value is not None and ";" in value):
            continue
        if name == "max-age" and value is not None and "+" in value:
            value, _, extra = value.partition("+")
            found.setdefault("stale-while-revalidate", extra.strip())
        found.setdefault(name, value)
    return found


def qualified(cc: Directives, headers: Headers) -> tuple[dict[str, str | None], Headers]:
    """`no-cache="a, b"` and `private="a"` (RFC 9111 §5.2.2.4, §5.2.2.7): a shared cache
    may store the response without the listed fields, as if the directive were absent."""
    kept_cc = dict(cc)
    dropped: set[bytes] = set()
    for name in ("no-cache", "private"):
        fields = cc.get(name)
        if fields and fields.strip():
            dropped |= {f.strip().lower().encode("latin-1") for f in fields.split(",")}
            del kept_cc[name]
    return kept_cc, [(n, v) for n, v in headers if n not in dropped]


def stale_window(cc: Directives, name: str, default: float) -> float:
    """Seconds `stale-while-revalidate` / `stale-if-error` grant; `default` (the operator's,
    for a trusted origin, else 0) when the response does not say."""
    given = seconds(cc.get(name)) if name in cc else None
    return float(given) if given is not None else default


def source_lifetime(
    cache_control: str | None, expires: str | None, date: float, last_modified: str | None
) -> float:
    """A fetched source's freshness for this cache, 0 when it must not be reused without
    revalidation (no-store, private, no-cache, or nothing to go by)."""
    cc = directives([cache_control or ""])
    if {"no-store", "private", "no-cache"} & cc.keys():
        return 0.0
    headers: Headers = []
    if expires is not None:
        headers.append((b"expires", expires.encode("latin-1")))
    if last_modified is not None:
        headers.append((b"last-modified", last_modified.encode("latin-1")))
    return lifetime(200, cc, headers, date) or 0.0


def lifetime(
    status: int, cc: Directives, headers: Headers, date: float, *, shared: bool = True
) -> float | None:
    """Freshness lifetime (RFC 9111 §4.2.1): s-maxage, max-age, Expires - Date, then a
    heuristic for the statuses that allow one; None when nothing gives a lifetime."""
    if shared and "s-maxage" in cc:
        return float(seconds(cc["s-maxage"]) or 0)
    if "max-age" in cc:
        return float(seconds(cc["max-age"]) or 0)
    expires = values(headers, b"expires")
    if expires:
        when = parse_http_date(expires[0]) if len(expires) == 1 else None
        return max(0.0, when - date) if when is not None else 0.0  # invalid: stale
    if status in HEURISTIC_STATUSES or "public" in cc:
        modified = values(headers, b"last-modified")
        stamp = parse_http_date(modified[0]) if modified else None
        if stamp is not None and stamp < date:
            return min(HEURISTIC_MAX, (date - stamp) * HEURISTIC_FRACTION)
    return None


def birth(headers: Headers, request_time: float, response_time: float) -> float:
    """When the response was, in effect, made (RFC 9111 §4.2.3): response_time less its
    corrected initial age. A stored response's Age is then `now - birth`."""
    dates = values(headers, b"date")
    date = parse_http_date(dates[0]) if dates else None
    apparent = max(0.0, response_time - date) if date is not None else 0.0
    ages = values(headers, b"age")
    age = seconds(ages[0].strip()) if ages else None
    corrected_age = (age or 0) + (response_time - request_time)
    return response_time - max(apparent, corrected_age)


def date_of(headers: Headers, response_time: float) -> float:
    """The response's Date, or when it arrived when it has none or an invalid one."""
    dates = values(headers, b"date")
    parsed = parse_http_date(dates[0]) if dates else None
    return parsed if parsed is not None else response_time


def storable(
    method: str,
    status: int,
    request_cc: Directives,
    cc: Directives,
    headers: Headers,
    *,
    authorized: bool,
) -> bool:
    """Whether a shared cache may store the response (RFC 9111 §3, §3.5)."""
    if method != "GET" or status not in UNDERSTOOD_STATUSES:
        return False
    if "no-store" in request_cc or "no-store" in cc or "private" in cc:
        return False
    if any(v.strip() == "*" for v in values(headers, b"vary")):
        return False
    if authorized and not ({"public", "s-maxage", "must-revalidate"} & cc.keys()):
        return False
    explicit = {"public", "max-age", "s-maxage"} & cc.keys() or values(headers, b"expires")
    return bool(explicit) or status in HEURISTIC_STATUSES


def stored_headers(headers: Headers) -> Headers:
    """What is kept and forwarded: no hop-by-hop fields, none that `Connection` lists,
    none this cache consumes (CDN-Cache-Control, Surrogate-Control)."""
    dropped = HOP_BY_HOP | CONSUMED | RECOMPUTED | connection_listed(headers)
    return [(name, value) for name, value in headers if name not in dropped]


def connection_listed(headers: Headers) -> set[bytes]:
    """The field names `Connection` makes hop-by-hop (RFC 9110 §7.6.1)."""
    return {
        token.strip().lower().encode("latin-1")
        for value in values(headers, b"connection")
        for token in value.split(",")
        if token.strip()
    }


def vary_names(headers: Headers) -> tuple[str, ...]:
    names = {
        token.strip().lower()
        for value in values(headers, b"vary")
        for token in value.split(",")
        if token.strip()
    }
    return tuple(sorted(names))


def updated(stored: Headers, fresh: Headers) -> Headers:
    """A stored response's headers after a 304 (RFC 9111 §4.3.4): the 304's fields
    replace the stored ones of the same name; Content-Length is the stored one's."""
    replaced = {name for name, _ in fresh} - {b"content-length"}
    kept = [(name, value) for name, value in stored if name not in replaced]
    return kept + [(name, value) for name, value in stored_headers(fresh) if name in replaced]


def vary_key(names: tuple[str, ...], headers: Headers) -> str:
    """The secondary key (RFC 9111 §4.1): the request's values of the Vary'd fields,
    whitespace folded, hashed."""
    if not names:
        return ""
    parts = []
    for name in names:
        found = values(headers, name.encode("latin-1"))
        parts.append(name + ":" + ",".join(" ".join(v.split()) for v in found))
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=12).hexdigest()


def content_type(headers: Headers) -> str:
    return first(headers, b"content-type").split(";")[0].strip().lower()


def first(headers: Headers, name: bytes) -> str:
    found = values(headers, name)
    return found[0] if found else ""


def with_length(headers: Headers, size: int) -> Headers:
    kept = [(n, v) for n, v in headers if n != b"content-length"]
    return [*kept, (b"content-length", b"%d" % size)]


def not_modified(status: int, stored: Headers, headers: Headers) -> bool:
    """The client's conditional against the stored response (RFC 9110 §13.2.2)."""
    if status != 200:
        return False
    if_none_match = values(headers, b"if-none-match")
    etag = first(stored, b"etag")
    if if_none_match:
        return bool(etag) and etag_matches_weak(",".join(if_none_match), etag)
    since = values(headers, b"if-modified-since")
    modified = first(stored, b"last-modified")
    if since and modified:
        asked, have = parse_http_date(since[0]), parse_http_date(modified)
        return asked is not None and have is not None and have <= asked
    return False


def if_range_holds(stored: Headers, headers: Headers) -> bool:
    condition = values(headers, b"if-range")
    if not condition:
        return True
    etag = first(stored, b"etag")
    return bool(etag) and not etag.startswith("W/") and condition[0].strip() == etag


def same_origin_path(value: str, origin: str) -> str | None:
    """A Location's path and query when it is on the origin (relative, or the same host)."""
    parts = urlsplit(value)
    base = urlsplit(origin)
    if parts.scheme and (parts.scheme, parts.netloc) != (base.scheme, base.netloc):
        return None
    if not parts.path.startswith("/"):
        return None
    return parts.path + (f"?{parts.query}" if parts.query else "")
