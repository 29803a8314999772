"""Every image response's head, built here for every path that answers one.

A stored entry carries its own status line and headers; each answer adds the same
per-request fields, in the same order, whichever path sends it: the protocol-level hit
path (`edge/protocol.py`, as wire bytes), the ASGI fast path and the full app (as ASGI
messages). `Age` (RFC 9111 §5.1), `Cache-Status` (RFC 9211) and `Server-Timing` are
those fields; a child edge also gets the entry's own freshness in `CDN-Cache-Control`
(RFC 9213).
"""

from __future__ import annotations

from typing import NamedTuple

from starlette.types import Send

from cdn_common.http import etag_matches_weak, now_date
from edge.cache.entry import Entry

Fields = list[tuple[bytes, bytes]]
NOT_MODIFIED_DROPS = (b"content-length", b"content-type")


class Ready(NamedTuple):
    """A hit the fast paths can send as it is: the entry and its per-request fields (as
    `answer_fields` gives them, or as wire lines for the protocol path)."""

    entry: Entry
    age: int
    cache_status: bytes
    timing: bytes

    def fields(self) -> Fields:
        fields = [(AGE, b"%d" % self.age), (STATUS, self.cache_status), (TIMING, self.timing)]
        if not self.entry.has_date:
            fields.append((DATE, now_date()))
        return fields

    def lines(self) -> bytes:
        """The same fields as HTTP/1.1 header lines."""
        lines = b"age: %d\r\ncache-status: %s\r\nserver-timing: %s\r\n" % (
            self.age,
            self.cache_status,
            self.timing,
        )
        if not self.entry.has_date:
            lines += b"date: " + now_date() + b"\r\n"
        return lines


AGE, STATUS, TIMING, DATE = b"age", b"cache-status", b"server-timing", b"date"


def answer_fields(entry: Entry, cache_status: bytes, timing: bytes, now: float) -> Fields:
    """The per-request fields every answer adds to its entry's stored headers: a Date
    too when the entry keeps none of its own (a proxied response keeps its origin's)."""
    return Ready(entry, max(0, int(now - entry.stored)), cache_status, timing).fields()


def child_edge_control(entry: Entry, now: float) -> tuple[bytes, bytes]:
    """Tells a child edge how long the entry itself stays fresh."""
    ttl = max(0, int(entry.fresh_until - now))
    control = f"max-age={ttl}, stale-while-revalidate={int(entry.swr)}"
    control += f", stale-if-error={int(entry.sie)}"
    if entry.must_revalidate:
        control += ", must-revalidate"
    return (b"cdn-cache-control", control.encode())


def not_modified(entry: Entry, if_none_match: bytes | None) -> bool:
    """Whether a client's `If-None-Match` matches the entry (weak comparison, RFC 9110
    §13.1.2), so a 304 answers it."""
    return (
        if_none_match is not None
        and entry.status == 200
        and etag_matches_weak(if_none_match.decode("latin-1"), entry.etag.decode("latin-1"))
    )


async def send_entry(
    send: Send, entry: Entry, fields: Fields, *, head: bool, if_none_match: bytes | None = None
) -> int:
    """The entry as ASGI messages, or a 304 for a matching `If-None-Match`; the bytes of
    body sent."""
    if not_modified(entry, if_none_match):
        kept = [h for h in entry.headers if h[0] not in NOT_MODIFIED_DROPS]
        await send({"type": "http.response.start", "status": 304, "headers": kept + fields})
        await send({"type": "http.response.body", "body": b""})
        return 0
    await send(
        {"type": "http.response.start", "status": entry.status, "headers": entry.headers + fields}
    )
    body = b"" if head else entry.body
    await send({"type": "http.response.body", "body": body})
    return len(body)
