"""The identity route `/_/_/{path}` as an RFC 9111 shared cache in front of the origin.

The query string, the client's end-to-end headers and the origin's status and headers
pass through; what is stored is the whole response (status, headers less hop-by-hop
and CDN-Cache-Control/Surrogate-Control, body) under the URL plus the request headers
its `Vary` names, born when RFC 9111 §4.2.3 says (Date, Age, request and response
times), fresh as `httpcache.lifetime` says. Stale responses are served only with
permission (`stale-while-revalidate`, `stale-if-error`, `max-stale`), or by the
operator's defaults for an origin marked trusted (`EDGE_ORIGIN_TRUSTED`). Client
conditionals and single ranges are answered from the stored response. Unsafe methods
(when `EDGE_PASSTHROUGH_METHODS` allows them) are forwarded, never stored, and a success
invalidates the URL and the same-origin `Location` / `Content-Location`.

Successful responses are kept to `EDGE_PASSTHROUGH_TYPES` (default `image/*`); raster
images pass as the origin sent them (their header checked against the limits in a
worker), anything that is not a raster image under the default is rendered by the
image flow (SVG is never served as SVG there).
"""

from __future__ import annotations

import copy
import fnmatch
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import unquote

from starlette.types import Receive, Scope, Send

from cdn_common.errors import GatewayTimeout, HTTPError, PayloadTooLarge, UnsupportedMedia
from cdn_common.http import parse_range
from edge import httpcache
from edge.cache.coalesce import Coalescer
from edge.cache.entry import Entry
from edge.cache.tiers import TieredCache
from edge.clock import Clock
from edge.origin_client import Fetcher, Proxied
from edge.respond import answer_fields
from edge.settings import EdgeSettings
from edge.stats import EdgeStats
from edge.transform.runner import Transformer

RASTER = frozenset({"image/jpeg", "image/png", "image/webp", "image/gif", "image/avif"})
CONDITIONAL = frozenset({b"if-none-match", b"if-modified-since", b"if-range", b"range"})
NOT_FORWARDED = httpcache.HOP_BY_HOP | {b"host", b"content-length", b"cdn-loop"}
VARY_MEMORY = 65536


class Proxy:
    def __init__(
        self,
        settings: EdgeSettings,
        cache: TieredCache,
        fetcher: Fetcher,
        transformer: Transformer,
        stats: EdgeStats,
        clock: Clock,
        forget: Callable[[str], object],
    ) -> None:
        self.settings = settings
        self.forget = forget  # a source's every entry and byte on this node
        self.cache = cache
        self.fetcher = fetcher
        self.transformer = transformer
        self.stats = stats
        self.clock = clock
        self.types = tuple(t.strip().lower() for t in settings.passthrough_types)
        self.fills: Coalescer[Proxied] = Coalescer()
        self.vary: dict[str, tuple[str, ...]] = {}  # URL -> the request headers it varies on
        self.max_bytes = int(settings.max_src_mb * 1024 * 1024)
        self.stale_defaults = settings.stale_defaults

    def allows(self, content_type: str) -> bool:
        kind = content_type.split(";")[0].strip().lower()
        return any(fnmatch.fnmatchcase(kind, pattern) for pattern in self.types)

    # -- reads ----------------------------------------------------------------------

    async def get(
        self,
        scope: Scope,
        send: Send,
        source_id: str,
        target: str,
        render: Callable[[], Awaitable[None]],
    ) -> None:
        """GET or HEAD of `target` (path and query): from the cache when the RFC allows,
        else from the origin. `render` answers through the image flow instead."""
        headers: httpcache.Headers = list(scope["headers"])
        request_cc = httpcache.directives(httpcache.values(headers, b"cache-control"))
        if not request_cc and b"no-cache" in b",".join(v for n, v in headers if n == b"pragma"):
            request_cc = {"no-cache": None}
        primary = f"proxy\x00{target}"
        key = self._key(primary, headers)
        now = self.clock()
        found = None if "no-store" in request_cc else await self.cache.lookup(key)
        if found is not None:
            entry, tier = found
            answer = await self._from_store(entry, tier, headers, request_cc, target, now)
            if not isinstance(answer, Proxied):
                self._learn(scope, answer[0], target)
                await self._send(send, scope, *answer, headers, b"cache;desc=" + tier.encode())
                return
            fetched = answer
            # RFC 9211 §2.2: fresh but the request would not take it, or stale and changed
            forward = "request" if entry.fresh_until > now else "stale"
        elif "only-if-cached" in request_cc:
            raise GatewayTimeout("not in cache (only-if-cached)")
        else:
            fetched = await self._fetch(target, headers, request_cc)
            forward = "vary-miss" if self.vary.get(primary) else "uri-miss"
        if not self._deliverable(fetched):
            await render()
            return
        if fetched.status == 200 and httpcache.content_type(fetched.headers) in RASTER:
            # passed on undecoded, but never a bomb: size and frames against the limits
            info = await self.transformer.probe(fetched.body, self._deadline())
            if info.pages > self.transformer.limits.max_frames:
                raise PayloadTooLarge("source has too many frames")
        entry, stored, sent = self._store(primary, headers, request_cc, source_id, fetched)
        status = f"edge; fwd={forward}; fwd-status={fetched.status}" + (
            "; stored" if stored else ""
        )
        if stored:
            self._learn(scope, entry, target)
        took = (fetched.response_time - fetched.request_time) * 1000
        await self._send(send, scope, sent, status, headers, b"origin;dur=%.1f" % took)

    def _learn(self, scope: Scope, entry: Entry, target: str) -> None:
        """Let the fast paths answer this exact path: a 200 without a query or Vary."""
        raw = scope.get("raw_path")
        if (
            raw
            and entry.status == 200
            and "?" not in target
            and not httpcache.values(entry.headers, b"vary")
        ):
            self.cache.learn_route(entry, raw)

    async def _from_store(
        self,
        entry: Entry,
        tier: str,
        headers: httpcache.Headers,
        request_cc: httpcache.Directives,
        target: str,
        now: float,
    ) -> tuple[Entry, str] | Proxied:
        """The stored entry to send and its Cache-Status, or the new response that a
        revalidation brought."""
        age = max(0.0, now - entry.stored)
        fresh_for = entry.fresh_until - now
        max_age = httpcache.seconds(request_cc.get("max-age"))
        min_fresh = httpcache.seconds(request_cc.get("min-fresh")) or 0
        fresh = fresh_for > min_fresh and (max_age is None or age <= max_age)
        if fresh and "no-cache" not in request_cc:
            self.stats.count(tier)
            return entry, f"edge; hit; detail={tier}"  # as the fast path says it
        if (
            "max-stale" in request_cc
            and not entry.must_revalidate
            and "no-cache" not in (request_cc)
        ):
            allowed = httpcache.seconds(request_cc["max-stale"])
            if (allowed is None and request_cc["max-stale"] is None) or (
                allowed is not None and -fresh_for <= allowed
            ):
                return entry, f"edge; hit; detail={tier}-max-stale"
        if "only-if-cached" in request_cc:
            raise GatewayTimeout("no fresh response in cache (only-if-cached)")
        if (
            fresh_for <= 0  # stale by the origin's word, not only too old for this client
            and not ({"no-cache", "max-age", "min-fresh"} & request_cc.keys())
            and not entry.must_revalidate
            and entry.may_serve_stale(now, entry.swr)
        ):
            self.stats.count("stale")
            self.fills.start(
                "reval\x00" + entry.key, lambda: self._revalidate(entry, headers, target)
            )
            ttl = math.floor(fresh_for)
            return entry, f"edge; hit; ttl={ttl}; detail={tier}-stale-while-revalidate"
        try:
            fetched, _ = await self.fills.run(
                "reval\x00" + entry.key, lambda: self._revalidate(entry, headers, target)
            )
        except HTTPError as error:
            if error.status >= 500 and entry.may_serve_stale(now, entry.sie):
                self.stats.count("stale_if_error")
                return entry, f"edge; fwd=stale; fwd-status={error.status}; detail=stale-if-error"
            raise
        if fetched.status == 304:
            self.stats.count("revalidated")
            forward = "request" if fresh_for > 0 else "stale"
            return entry, f"edge; fwd={forward}; fwd-status=304"
        if fetched.status >= 500 and entry.may_serve_stale(now, entry.sie):
            self.stats.count("stale_if_error")
            status = f"edge; fwd=stale; fwd-status={fetched.status}; detail=stale-if-error"
            return entry, status
        return fetched  # changed: the caller stores and sends the new response

    async def _revalidate(self, entry: Entry, headers: httpcache.Headers, target: str) -> Proxied:
        sent = self._forwarded(headers, store=True)
        if entry.source_etag:
            sent.append(("if-none-match", entry.source_etag))
        if entry.source_modified:
            sent.append(("if-modified-since", entry.source_modified))
        fetched = await self.fetcher.proxy(
            "GET", target, sent, max_bytes=self.max_bytes, deadline=self._deadline()
        )
        if fetched.status == 304:
            self._refreshed(entry, fetched)
        return fetched

    def _refreshed(self, entry: Entry, fetched: Proxied) -> Entry:
        """A 304's headers into the stored response, and its freshness anew."""
        entry.headers = httpcache.updated(entry.headers, fetched.headers)
        entry.wire_head = None
        cc = httpcache.cache_directives(entry.headers)
        born = httpcache.birth(entry.headers, fetched.request_time, fetched.response_time)
        date = httpcache.date_of(entry.headers, fetched.response_time)
        life = httpcache.lifetime(entry.status, cc, entry.headers, date) or 0.0
        entry.stored = born
        self.cache.refresh(entry, born + (0.0 if "no-cache" in cc else life))
        return entry

    async def _fetch(
        self, target: str, headers: httpcache.Headers, request_cc: httpcache.Directives
    ) -> Proxied:
        sent = self._forwarded(headers, store=True)
        if any(name == b"authorization" for name, _ in headers) or "no-store" in request_cc:
            return await self.fetcher.proxy(
                "GET", target, sent, max_bytes=self.max_bytes, deadline=self._deadline()
            )
        fetched, _ = await self.fills.run(
            f"fetch\x00{target}\x00{self._vary_part(target, headers)}",
            lambda: self.fetcher.proxy(
                "GET", target, sent, max_bytes=self.max_bytes, deadline=self._deadline()
            ),
        )
        return fetched

    def _deliverable(self, fetched: Proxied) -> bool:
        """Whether the proxy answers with what it fetched (else the image flow renders)."""
        if not 200 <= fetched.status < 300:
            return True
        kind = httpcache.content_type(fetched.headers)
        if "*" not in self.types and kind not in RASTER and kind.startswith("image/"):
            return False  # SVG and other non-raster images are rendered, never passed on
        if not self.allows(kind):
            raise UnsupportedMedia(f"{kind or 'untyped'} responses are not passed through")
        # markup labelled as an image goes to the image flow, which refuses it
        return not (kind in RASTER and fetched.body[:64].lstrip()[:1] == b"<")

    def _store(
        self,
        primary: str,
        headers: httpcache.Headers,
        request_cc: httpcache.Directives,
        source_id: str,
        fetched: Proxied,
    ) -> tuple[Entry, bool, Entry]:
        """The entry as stored, whether it was, and the entry to send the asker."""
        kept = httpcache.stored_headers(fetched.headers)
        if not httpcache.values(kept, b"access-control-allow-origin"):
            kept += self.settings.cors_fields
        full = kept
        cc, kept = httpcache.qualified(httpcache.cache_directives(fetched.headers), kept)
        authorized = any(name == b"authorization" for name, _ in headers)
        names = httpcache.vary_names(fetched.headers)
        key = primary + "\x00" + httpcache.vary_key(names, headers)
        born = httpcache.birth(fetched.headers, fetched.request_time, fetched.response_time)
        date = httpcache.date_of(fetched.headers, fetched.response_time)
        life = httpcache.lifetime(fetched.status, cc, fetched.headers, date)
        entry = Entry(
            key=key,
            source=source_id,
            status=fetched.status,
            body=fetched.body,
            headers=httpcache.with_length(kept, len(fetched.body)),
            etag=httpcache.first(kept, b"etag").encode("latin-1"),
            stored=born,
            fresh_until=born + (0.0 if "no-cache" in cc else (life or 0.0)),
            swr=httpcache.stale_window(cc, "stale-while-revalidate", self.stale_defaults[0]),
            sie=httpcache.stale_window(cc, "stale-if-error", self.stale_defaults[1]),
            must_revalidate=bool({"must-revalidate", "proxy-revalidate", "s-maxage"} & cc.keys()),
            source_etag=httpcache.first(kept, b"etag") or None,
            source_modified=httpcache.first(kept, b"last-modified") or None,
        )
        keep = httpcache.storable(
            "GET", fetched.status, request_cc, cc, fetched.headers, authorized=authorized
        ) and (life is not None or bool(entry.source_etag or entry.source_modified))
        if keep:
            if len(self.vary) >= VARY_MEMORY:
                self.vary.pop(next(iter(self.vary)))
            self.vary[primary] = names
            self.cache.store(entry)
        sent = entry
        if len(kept) != len(full):  # the asker still gets the fields kept from others
            sent = copy.copy(entry)
            sent.headers, sent.wire_head = httpcache.with_length(full, len(fetched.body)), None
        return entry, keep, sent

    # -- answers ----------------------------------------------------------------------

    async def _send(
        self,
        send: Send,
        scope: Scope,
        entry: Entry,
        status: str,
        headers: httpcache.Headers,
        timing: bytes,
    ) -> None:
        now = self.clock()
        head = scope["method"] == "HEAD"
        if "log" in scope:
            scope["log"]["cache"] = status
        fields = answer_fields(entry, status.encode(), timing, now)
        stored = entry.headers
        code, body, extra = entry.status, bytes(entry.body), []
        if httpcache.not_modified(entry.status, entry.headers, headers):
            kept = [(n, v) for n, v in stored if n not in (b"content-length",)]
            await _start(send, 304, kept + fields, b"")
            return
        ranges = httpcache.values(headers, b"range")
        if code == 200 and ranges and httpcache.if_range_holds(entry.headers, headers):
            wanted = parse_range(ranges[0], len(body))
            if wanted is not None:
                body = body[wanted.start : wanted.end + 1]
                code = 206
                extra = [
                    (
                        b"content-range",
                        b"bytes %d-%d/%d" % (wanted.start, wanted.end, len(entry.body)),
                    )
                ]
        out = [(n, v) for n, v in stored if n != b"content-length"] + extra + fields
        out.append((b"content-length", b"%d" % len(body)))
        await _start(send, code, out, b"" if head else body)

    # -- writes -----------------------------------------------------------------------

    async def forward(
        self, scope: Scope, receive: Receive, send: Send, target: str
    ) -> tuple[int, str | None]:
        """An unsafe method passed to the origin (never stored); on success the URL and
        the same-origin Location / Content-Location it names are invalidated."""
        headers: httpcache.Headers = list(scope["headers"])

        async def body() -> AsyncIterator[bytes]:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                yield message.get("body", b"")
                if not message.get("more_body"):
                    return

        fetched = await self.fetcher.proxy(
            scope["method"],
            target,
            self._forwarded(headers, store=False),
            max_bytes=self.max_bytes,
            deadline=self._deadline(),
            body=body(),
        )
        if 200 <= fetched.status < 400:
            for location in (b"location", b"content-location"):
                for value in httpcache.values(fetched.headers, location):
                    self.invalidate(httpcache.same_origin_path(value, self.fetcher.origin_url))
            self.invalidate(target)
        kept = httpcache.stored_headers(fetched.headers)
        kept = [(n, v) for n, v in kept if n != b"content-length"]
        kept.append((b"content-length", b"%d" % len(fetched.body)))
        await _start(send, fetched.status, kept, fetched.body)
        return fetched.status, None

    def invalidate(self, target: str | None) -> None:
        """Everything held for the source a path names: every query and Vary form of it
        and its transformed variants (RFC 9111 §4.4 allows invalidating more)."""
        if target:
            source = unquote(target.split("?", 1)[0]).lstrip("/")
            if source:
                self.forget(source)

    # -- helpers ----------------------------------------------------------------------

    def _key(self, primary: str, headers: httpcache.Headers) -> str:
        return primary + "\x00" + httpcache.vary_key(self.vary.get(primary, ()), headers)

    def _vary_part(self, target: str, headers: httpcache.Headers) -> str:
        return httpcache.vary_key(self.vary.get(f"proxy\x00{target}", ()), headers)

    def _forwarded(self, headers: httpcache.Headers, *, store: bool) -> list[tuple[str, str]]:
        listed = httpcache.connection_listed(headers)
        dropped = NOT_FORWARDED | listed | (CONDITIONAL if store else frozenset())
        return [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in headers
            if name not in dropped
        ]

    def _deadline(self) -> float:
        return time.monotonic() + self.settings.deadline_s


async def _start(send: Send, status: int, headers: httpcache.Headers, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
