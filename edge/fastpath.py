"""Exact-URL hits, answered before routing, parsing or the middleware stack.

Fresh 200 entries without conditional headers take this path: from L1 through the
memory tier's aliases, and from L2 through the disk tier's routes (request path -> key,
learnt when the full app answered it), read inline and promoted to L1 as the full app
would. Everything else (misses, stale entries, conditionals, large heads) goes to the
full app. Hits are still counted and logged, and answered with the same fields
(`edge/respond.py`). `edge/protocol.py` asks `ready()` from inside the HTTP protocol;
`FastPath.__call__` is the same path for servers without it.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable, Iterable

import orjson
from starlette.types import Receive, Scope, Send

from cdn_common.asgi import MAX_HEADER_BYTES, AccessMiddleware
from cdn_common.logs import Headers, Peer
from cdn_common.metrics import tally
from edge.cache.tiers import TieredCache
from edge.respond import Ready
from edge.routes import redact
from edge.stats import EdgeStats

FAST_LOG_LINES = 65536
# request fields whose answer is not the stored entry as it is: conditionals, ranges,
# the client's own cache directives (RFC 9111 §5.2.1), a child edge's CDN-Loop
NOT_FAST = frozenset(
    {
        b"if-none-match",
        b"if-modified-since",
        b"range",
        b"cache-control",
        b"pragma",
        b"cdn-loop",
    }
)  # pre-built access-log fragments kept by the fast path
MEMORY = b"edge; hit; detail=memory"
DISK = b"edge; hit; detail=disk"
# no `dur` on these (optional in W3C Server Timing): timing a lookup of a
# microsecond cost two clock reads and a float format on every hit, a tenth of its cost
TIMING = {MEMORY: b"cache;desc=memory", DISK: b"cache;desc=disk"}


class FastPath:
    def __init__(
        self,
        app: AccessMiddleware,
        cache: TieredCache,
        stats: EdgeStats,
        wall: Callable[[], float],
        not_fast: frozenset[bytes] = NOT_FAST,
    ) -> None:
        self.not_fast = not_fast
        self.app = app
        self.cache = cache
        self.stats = stats
        self.series = app.metrics.requests
        self.buckets = self.series.buckets
        self._rows: dict[str, list[float]] = {}  # the series' rows of 200s by method
        self.access_log = app.access_log
        self.wall = wall
        self._lines: dict[tuple[bytes, str, int, bytes], bytes] = {}
        # uvicorn's protocol class and options for this app (`cdn_common.serve` uses them)
        self.http_protocol: type[object] | None = None
        self.uvicorn_options: dict[str, object] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path")
        if scope["type"] != "http" or raw is None or scope.get("query_string"):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method = scope["method"]
        ready = self.ready(raw, scope["headers"], method)
        if ready is None:
            await self.app(scope, receive, send)
            return
        entry = ready.entry
        body = entry.body if method == "GET" else b""
        headers = entry.headers + ready.fields()
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        peer, asked = scope.get("client"), scope["headers"]
        self.account(raw, method, ready.cache_status, len(body), started, peer, asked)

    def ready(
        self, raw: bytes, headers: Iterable[tuple[bytes, bytes]], method: str
    ) -> Ready | None:
        """A fresh 200 entry for an exact-URL hit with its per-request fields; None for
        whatever the full app must answer."""
        accept = b""
        size = 0
        for name, value in headers:
            size += len(name) + len(value)
            if name == b"accept":
                accept = value
            elif name in self.not_fast:
                return None
        if size > MAX_HEADER_BYTES or (method != "GET" and method != "HEAD"):  # 431 or not ours
            return None
        found = self.cache.exact(raw, accept)
        if found is None:
            return None
        entry, in_memory = found
        now = self.wall()
        if now >= entry.fresh_until or entry.status != 200:
            return None
        if in_memory:
            self.stats.memory_fast += 1
            status = MEMORY
        else:
            self.stats.count("disk")
            status = DISK
        timing = TIMING[status]
        # tuple.__new__ is what the NamedTuple's own __new__ calls, less a Python frame
        return tuple.__new__(Ready, (entry, max(0, int(now - entry.stored)), status, timing))

    def answered_in_protocol(self) -> None:
        self.stats.protocol_hits += 1

    def account(
        self,
        raw: bytes,
        method: str,
        status: bytes,
        sent: int,
        started: float,
        peer: Peer = None,
        headers: Headers | None = None,
    ) -> None:
        """A hit into the request metrics and the access log, as the full app records it
        (the request's own fields, `peer` and `headers`, are read when the log flushes)."""
        elapsed = time.perf_counter() - started
        row = self._rows.get(method)
        if row is None:
            row = self._rows[method] = self.series.row("image", method, 200, "hit")
        tally(row, self.buckets, elapsed, sent)
        if self.access_log is not None:
            # the line's constant part is built once per (path, method, size, tier)
            line_key = (raw, method, sent, status)
            fragment = self._lines.get(line_key)
            if fragment is None:
                if len(self._lines) > FAST_LOG_LINES:
                    self._lines.clear()
                path = redact(urllib.parse.unquote(raw.decode("ascii")))
                fields: dict[str, object] = {"method": method, "path": path}
                fields.update(cache=status.decode(), status=200, bytes=sent)
                fragment = orjson.dumps(fields)[1:-1] + b',"duration_ms":'
                self._lines[line_key] = fragment
            self.access_log.write_timed(fragment, elapsed, peer, headers)
