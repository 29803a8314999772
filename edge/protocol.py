"""Fresh exact-URL hits answered inside uvicorn's HTTP protocol, before ASGI.

Under load an L1 hit through ASGI spends more time in the server than in the cache:
uvicorn builds a request cycle with an `asyncio.Event`, starts a task for it, checks
every response header against two regular expressions and writes the head and the
body in two system calls. `HitProtocol` is uvicorn's httptools protocol with one
change: when a request's headers are complete and its `Hits` (the edge's `FastPath`)
has a fresh 200 entry ready for its exact path, the response (the entry's prebuilt
head, uvicorn's default headers, the per-request fields every answer carries, the body)
leaves in one `writev`, and the request is counted and logged as any hit. Everything
else (a query string, conditionals, a pipelined request behind a response still being
written, a client not reading its responses, HTTP/1.0 or `Connection: close`, upgrades,
`Expect: 100-continue`, a `root_path`) takes uvicorn's own path through the full app.
Both paths sit on `edge/security/connections.py`'s limits on connections and heads.

It leans on uvicorn's protocol internals (`on_headers_complete`, `cycle`, `url`,
`headers`, `flow`, `server_state`), which is why pyproject pins uvicorn below its next
minor version; `tests/edge/test_protocol.py` drives it through real sockets and checks
those internals are still there. `EDGE_PROTOCOL_HITS=false` turns it off.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, ClassVar, Protocol, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from cdn_common.logs import Headers, Peer
from edge.respond import Ready
from edge.security.connections import (
    ConnectionLimits,
    ConnectionStats,
    GuardedProtocol,
    guarded_protocol,
)


class Hits(Protocol):
    """What the protocol needs of the edge: a ready answer for a request, or None."""

    def ready(
        self, raw: bytes, headers: Iterable[tuple[bytes, bytes]], method: str
    ) -> Ready | None: ...

    def account(
        self,
        raw: bytes,
        method: str,
        status: bytes,
        sent: int,
        started: float,
        peer: Peer = None,
        headers: Headers | None = None,
    ) -> None: ...

    def answered_in_protocol(self) -> None: ...


class _Idle:
    """What uvicorn's `connection_lost` wakes on a finished cycle: nothing here."""

    def set(self) -> None:
        pass


class _Answered:
    """Stands in for uvicorn's request cycle once a hit has been written: complete, so
    the parser's later callbacks for that request (`on_body`, `on_message_complete`),
    the next request and `shutdown` treat it as done."""

    response_complete = True
    disconnected = False
    keep_alive = True
    message_event = _Idle()


ANSWERED = cast(RequestResponseCycle, _Answered())
METHODS = {b"GET": "GET", b"HEAD": "HEAD"}


# what HitProtocol uses of uvicorn's protocol beyond its public callbacks
INTERNALS = (
    "url",
    "cycle",
    "parser",
    "flow",
    "expect_100_continue",
    "root_path",
    "headers",
    "server_state",
    "transport",
)


class HitProtocol(GuardedProtocol):
    """The guarded protocol answering `hits`' ready answers itself."""

    hits: ClassVar[Hits]
    defaults: ClassVar[list[Any]] = [None, b""]  # uvicorn's default headers and their lines

    def on_headers_complete(self) -> None:
        self._awaiting_head = False  # head_complete(), inline: this runs for every request
        url = self.url
        cycle: RequestResponseCycle | None = self.cycle
        parser = self.parser
        method = METHODS.get(parser.get_method())
        if (
            method is None
            or (cycle is not None and not cycle.response_complete)
            or self.flow.write_paused
            or self.expect_100_continue
            or url[:1] != b"/"
            or b"?" in url
            or b"#" in url
            or self.root_path
            or parser.get_http_version() != "1.1"
            or not parser.should_keep_alive()
            or parser.should_upgrade()
            or self._draining  # uvicorn's cycle answers it, with `Connection: close`
        ):
            super().on_headers_complete()
            return
        started = time.perf_counter()
        ready = self.hits.ready(url, self.headers, method)
        if ready is None:
            super().on_headers_complete()
            return
        entry = ready.entry
        server_headers = self.server_state.default_headers
        if server_headers is not self.defaults[0]:  # uvicorn renews the list every second
            self.defaults[1] = b"".join(b"%s: %s\r\n" % header for header in server_headers)
            self.defaults[0] = server_headers
        lines = self.defaults[1] + ready.lines() + b"\r\n"
        if method == "GET":
            body = entry.body
            self.transport.writelines((entry.head(), lines, body))
            sent = len(body)
        else:
            self.transport.writelines((entry.head(), lines))
            sent = 0
        self.cycle = ANSWERED
        self.hits.answered_in_protocol()
        self.on_response_complete()  # counts it, arms keep-alive or starts a pipelined one
        self.hits.account(url, method, ready.cache_status, sent, started, self.client, self.headers)


def edge_protocol(
    hits: Hits | None, limits: ConnectionLimits, stats: ConnectionStats
) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with the connection limits, answering `hits`' ready
    answers itself (None: every request goes to the ASGI app)."""
    if hits is None:
        return guarded_protocol(limits, stats)
    fields = {
        "limits": limits,
        "stats": stats,
        "per_peer": {},
        "hits": hits,
        "defaults": [None, b""],
    }
    return type("HitProtocol", (HitProtocol,), fields)
