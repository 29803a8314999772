"""The allow-list for absolute `http(s)://` sources (`EDGE_ALLOWED_SOURCES`): checked
when the URL is parsed and again for every redirect (`edge/origin_client.py`); where
the connection goes is checked by `netguard`."""

from __future__ import annotations


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """Exact names, or `*.example.com` for any subdomain (not the apex)."""
    for pattern in allowed:
        pattern = pattern.lower()
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]):
                return True
        elif host == pattern:
            return True
    return False
