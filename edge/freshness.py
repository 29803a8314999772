"""How long a response may be reused by a shared cache (RFC 9111 §4.2), as pure functions."""

from __future__ import annotations

from cdn_common.http import digits, parse_http_date

HEURISTIC_FRACTION = 0.1  # of the Last-Modified age (RFC 9111 §4.2.2, as Traffic Server and nginx)
HEURISTIC_MAX = 86400.0


def directives(cache_control: str | None) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for part in (cache_control or "").split(","):
        name, _, value = part.strip().partition("=")
        if name:
            found[name.lower()] = value.strip('"') if value else None
    return found


def freshness_lifetime(
    cache_control: str | None, expires: str | None, date: float, last_modified: str | None
) -> float:
    """Seconds a shared cache may serve the response without revalidating; 0 = store not."""
    cc = directives(cache_control)
    if "no-store" in cc or "private" in cc or "no-cache" in cc:
        return 0.0
    for name in ("s-maxage", "max-age"):
        value = cc.get(name)
        if value is not None:
            return float(value) if digits(value) else 0.0
    if expires is not None:
        when = parse_http_date(expires)
        return max(0.0, when - date) if when is not None else 0.0
    modified = parse_http_date(last_modified) if last_modified else None
    if modified is not None and modified < date:
        return min(HEURISTIC_MAX, (date - modified) * HEURISTIC_FRACTION)
    return 0.0
