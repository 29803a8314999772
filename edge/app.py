"""The edge's ASGI app: image URLs through the cache tiers, purge, health, metrics.

A request goes: fast path (exact URL in L1) -> parse (pure) -> cache tiers (memory,
disk, shared) -> on a miss, one coalesced fill per key: a parent edge or the source
(itself cached and coalesced) -> prepare (header, limits, plan) -> render in the
transform pool -> store in the tiers -> respond. Stale entries are revalidated by asking
the origin about their source (a 304 keeps every variant of it), in the background
within `stale-while-revalidate`, and served stale within `stale-if-error` when the
origin fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import logging
import math
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson
import xxhash
from cachetools import LRUCache, TTLCache
from starlette.types import Receive, Scope, Send

from cdn_common.asgi import (
    MAX_HEADER_BYTES,
    AccessMiddleware,
    HTTPMetrics,
    send_response,
    serve_lifespan,
)
from cdn_common.auth import bearer_token, find_secret
from cdn_common.errors import (
    BadGateway,
    BadRequest,
    Forbidden,
    GatewayTimeout,
    HTTPError,
    MethodNotAllowed,
    PayloadTooLarge,
    Unauthorized,
    error_body,
)
from cdn_common.http import etag_matches_weak
from cdn_common.logs import AccessLog
from cdn_common.metrics import tally
from edge.cache.coalesce import Coalescer
from edge.cache.disk import DiskTier
from edge.cache.entry import Entry
from edge.cache.memory import MemoryTier
from edge.cache.shared import SharedTier
from edge.cache.tiers import TieredCache
from edge.fetch import Fetched, Fetcher
from edge.freshness import directives, freshness_lifetime
from edge.options import TransformSpec
from edge.pipeline.plan import CONTENT_TYPES, SourceInfo
from edge.pipeline.render import (
    Encoding,
    Limits,
    Rendered,
    prepare,
    probe,
    probe_in_python,
    render,
)
from edge.settings import EdgeSettings
from edge.sourcecache import PIVOT_SIDE, SourceCache
from edge.stats import EdgeStats
from edge.urls import CDN_CGI, OriginSource, Source, parse_request
from edge.workers import DecoderCrashed, TransformPool

log = logging.getLogger("edge")

MIB = 1024 * 1024
FAST_LOG_LINES = 65536  # pre-built access-log fragments kept by the fast path
PROBED_ENTRIES = 65536  # headers already read, by (source, etag)
VALIDATED_ENTRIES = 65536  # sources recently validated with the origin
# A source whose decode killed a worker (SEGV, ABRT: a libvips or codec bug it triggers)
# is refused with 422 for CRASHED_S instead of killing a worker per new variant; only a
# source some worker has rendered is decoded in this process (pre-shrunk copies), so a
# crashing image can cost a worker, never the edge.
CRASHED_S = 600.0
CRASHED_ENTRIES = 4096
PROVEN_ENTRIES = 65536
# A source is passed through untouched only when it is a raster image by both the
# origin's word and its first byte; SVG, HTML or anything odd is rendered (or refused).
PASSTHROUGH_TYPES = frozenset({"image/jpeg", "image/png", "image/webp", "image/gif", "image/avif"})
# `format=auto` depends on the request only through these two capabilities
ACCEPT_FOR_CLASS = {"": "", "a": "image/avif", "w": "image/webp", "aw": "image/avif,image/webp"}
UNSAFE_METHODS = frozenset({"PUT", "POST", "DELETE", "PATCH"})
LOOP_TOKEN = "edge"  # noqa: S105 - not a secret: our CDN-Loop (RFC 8586) token: a request from another edge
FORWARDED_HEADERS = ("authorization", "content-type", "content-length", "if-match", "if-none-match")


def classify(path: str) -> str:
    if path in ("/healthz", "/readyz"):
        return "health"
    if path == "/_purge":
        return "purge"
    if path == "/metrics":
        return "metrics"
    return "image"


def redact(raw_path: str) -> str:
    """The path for logs: the signature replaced, so logs cannot be replayed."""
    if raw_path.startswith(CDN_CGI):
        return raw_path
    _, _, rest = raw_path[1:].partition("/")
    return "/-/" + rest


# Server-Timing names -> access-log fields (milliseconds)
TIMING_FIELDS = {"origin": "upstream_ms", "parent": "upstream_ms", "transform": "transform_ms"}


def timing_fields(timing: str) -> dict[str, float]:
    """`origin;dur=12.5, transform;dur=3.1` -> {"upstream_ms": 12.5, "transform_ms": 3.1}."""
    fields = {}
    for part in timing.split(","):
        name, _, rest = part.strip().partition(";")
        field = TIMING_FIELDS.get(name)
        if field is not None and rest.startswith("dur="):
            with contextlib.suppress(ValueError):
                fields[field] = float(rest[4:])
    return fields


def accept_class(accept: bytes) -> str:
    return ("a" if b"image/avif" in accept else "") + ("w" if b"image/webp" in accept else "")


def fast_key(raw: bytes, klass: str) -> bytes:
    return raw + b"\x00" + klass.encode()


@dataclass(slots=True)
class Ask:
    """One request's view of what it wants (the fill runs with the first asker's)."""

    raw: bytes
    key: str
    source: Source
    spec: TransformSpec
    klass: str
    auto: bool
    deadline: float
    from_edge: bool


class EdgeApp:
    def __init__(
        self,
        settings: EdgeSettings,
        fetcher: Fetcher,
        pool: TransformPool,
        metrics: HTTPMetrics,
        cache: TieredCache,
    ) -> None:
        self.settings = settings
        self.fetcher = fetcher
        self.pool = pool
        self.cache = cache
        self.sources = SourceCache(
            int(settings.source_cache_mb * MIB), int(settings.decoded_cache_mb * MIB)
        )
        self.stats = EdgeStats(pool, self.sources, cache)
        metrics.registry.register(self.stats)
        self.metrics = metrics
        self.limits = Limits(
            max_src_px=int(settings.max_src_mp * 1_000_000),
            max_frames=settings.max_frames,
            max_out=settings.max_out_px,
        )
        self.encoding = Encoding(
            jpeg_quality=settings.jpeg_quality,
            webp_quality=settings.webp_quality,
            avif_quality=settings.avif_quality,
            webp_effort=settings.webp_effort,
            avif_effort=settings.avif_effort,
            png_effort=settings.png_effort,
        )
        self.max_src_bytes = int(settings.max_src_mb * MIB)
        # decoded copies are libvips images in this process: their jobs run in its threads
        self.pivots_enabled = settings.decoded_cache_mb > 0
        self._probed: dict[tuple[str, str | None], SourceInfo] = {}
        self._crashed: TTLCache[tuple[str, str], bool] = TTLCache(CRASHED_ENTRIES, CRASHED_S)
        self._proven: LRUCache[tuple[str, str], bool] = LRUCache(PROVEN_ENTRIES)
        self._cache_control = settings.cache_control.encode()
        self.fills: Coalescer[tuple[Entry, str]] = Coalescer()
        self.source_fills: Coalescer[Fetched] = Coalescer()
        # source -> (ETag, fresh until): a 304 for a source freshens all its variants
        self.validated: LRUCache[str, tuple[str | None, float]] = LRUCache(VALIDATED_ENTRIES)
        self.wall = cache.wall

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send, self._close, self._start)
            return
        path: str = scope["path"]
        if path == "/healthz":
            await send_response(send, 200, b"ok\n", b"text/plain")
        elif path == "/readyz":
            problem = await self._unready()
            await send_response(send, 503 if problem else 200, problem or b"ready\n", b"text/plain")
        elif path == "/metrics":
            await send_response(send, 200, self.metrics.render(), b"text/plain; version=0.0.4")
        elif path == "/_purge":
            if scope["method"] != "POST":
                raise MethodNotAllowed(headers={"Allow": "POST"})
            await self._purge(scope, receive, send)
        else:
            await self._image(scope, receive, send)

    async def _unready(self) -> bytes:
        """Why this node should not get traffic yet, or b"" when it should."""
        if not await self.fetcher.origin_ready():
            return b"origin unreachable\n"
        disk = self.cache.disk
        if disk is not None and not await disk.writable():
            return b"disk cache not writable\n"
        return b""

    async def _start(self) -> None:
        # everything loaded so far lives as long as the process: keep it out of the
        # collector's generations, so collections stay proportional to request garbage
        gc.collect()
        gc.freeze()
        if self.cache.disk is not None:
            # the index rebuild runs while requests are served (they read files directly)
            task = asyncio.get_running_loop().create_task(self.cache.disk.rebuild())
            self.cache.disk.pending.add(task)
            task.add_done_callback(self.cache.disk.pending.discard)

    async def _close(self) -> None:
        await self.cache.flush()
        if self.cache.shared is not None:
            await self.cache.shared.close()
        await self.fetcher.close()
        self.pool.close()

    # -- the image route ----------------------------------------------------------------

    async def _image(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_bytes: bytes = scope.get("raw_path") or scope["path"].encode()
        try:
            raw = raw_bytes.decode().split("?", 1)[0]
        except UnicodeDecodeError:
            raise BadRequest("path is not UTF-8") from None
        scope["log"]["path"] = redact(raw)
        request = parse_request(
            raw,
            keys=self.settings.signing_keys,
            allow_unsigned=self.settings.unsigned_allowed,
            allowed_hosts=self.settings.allowed_sources,
        )
        method = scope["method"]
        source = request.source
        if (
            method in UNSAFE_METHODS
            and request.spec.is_identity
            and isinstance(source, OriginSource)
        ):
            await self._forward(scope, receive, send, source)
            return
        if method not in ("GET", "HEAD"):
            raise MethodNotAllowed(headers={"Allow": "GET, HEAD"})
        headers = dict(scope["headers"])
        spec = request.spec
        auto = spec.format == "auto"
        klass = accept_class(headers.get(b"accept", b"")) if auto else ""
        ask = Ask(
            raw=raw_bytes,
            key=f"{request.source.id}\x00{spec.canonical}\x00{klass}",
            source=request.source,
            spec=spec,
            klass=klass,
            auto=auto,
            deadline=time.monotonic() + self.settings.deadline_s,
            from_edge=LOOP_TOKEN in headers.get(b"cdn-loop", b"").decode("latin-1"),
        )
        async with asyncio.timeout(self.settings.deadline_s + 1):
            entry, status, timing = await self._lookup(ask)
        scope["log"]["cache"] = status
        scope["log"].update(timing_fields(timing))
        await self._send(scope, send, headers, ask, entry, status, timing)

    async def _lookup(self, ask: Ask) -> tuple[Entry, str, str]:
        """The entry to answer with, its Cache-Status and its Server-Timing."""
        started = time.perf_counter()
        found = await self.cache.lookup(ask.key)
        if found is None:
            self.stats.count("miss")
            (entry, timing), collapsed = await self._fill(ask)
            status = "edge; fwd=uri-miss" + ("; collapsed" if collapsed else "; stored")
            return entry, status, timing
        entry, tier = found
        now = self.wall()
        lookup = f"cache;desc={tier};dur={(time.perf_counter() - started) * 1000:.2f}"
        if now < entry.fresh_until:
            self.stats.count(tier)
            return entry, f"edge; hit; detail={tier}", lookup
        return await self._stale(ask, entry, tier, now, lookup)

    async def _stale(
        self, ask: Ask, entry: Entry, tier: str, now: float, lookup: str
    ) -> tuple[Entry, str, str]:
        known = self.validated.get(entry.source)
        if known is not None and known[1] > now and entry.status < 400:
            if known[0] == entry.source_etag:  # the source was revalidated for a sibling
                self.cache.refresh(entry, known[1])
                self.stats.count(tier)
                return entry, f"edge; hit; detail={tier}", lookup
        elif entry.status < 400 and entry.may_serve_stale(now, entry.swr):
            self.stats.count("stale")
            self.fills.start("reval\x00" + ask.key, lambda: self._revalidate(ask, entry))
            ttl = math.floor(entry.fresh_until - now)
            return entry, f"edge; hit; ttl={ttl}; detail={tier}-stale-while-revalidate", lookup
        try:
            (fresh, timing), _collapsed = await self.fills.run(
                "reval\x00" + ask.key, lambda: self._revalidate(ask, entry)
            )
        except HTTPError as error:
            if error.status >= 500 and entry.status < 400 and entry.may_serve_stale(now, entry.sie):
                self.stats.count("stale_if_error")
                ttl = math.floor(entry.fresh_until - now)
                status = (
                    f"edge; fwd=stale; fwd-status={error.status}; ttl={ttl}; detail=stale-if-error"
                )
                return entry, status, lookup
            raise
        self.stats.count("revalidated" if fresh is entry else "miss")
        code = 304 if fresh is entry else 200
        return fresh, f"edge; fwd=stale; fwd-status={code}", timing

    async def _revalidate(self, ask: Ask, entry: Entry) -> tuple[Entry, str]:
        """Ask the origin whether the entry's source changed; a 304 freshens the entry."""
        if entry.status >= 400 or not (entry.source_etag or entry.source_modified):
            return await self._produce(ask)
        if ask.deadline <= time.monotonic():  # background refresh of an old request's ask
            ask.deadline = time.monotonic() + self.settings.deadline_s
        fetched = await self.fetcher.fetch(
            ask.source,
            max_bytes=self.max_src_bytes,
            deadline=ask.deadline,
            validators=(entry.source_etag, entry.source_modified),
        )
        timing = f"origin;desc=revalidate;dur={fetched.seconds * 1000:.1f}"
        if fetched.not_modified:
            lifetime = self._lifetime(fetched)
            fresh_until = fetched.received + (lifetime or 0.0)
            self.validated[entry.source] = (entry.source_etag, fresh_until)
            self.cache.refresh(entry, fresh_until)
            return entry, timing
        # changed: every variant of the old version goes; this one is made from the new
        self.cache.purge_source(entry.source, soft=False)
        self.sources.purge(entry.source)
        self.validated[entry.source] = (
            fetched.etag,
            fetched.received + (self._lifetime(fetched) or 0),
        )
        return await self._produce(ask, fetched)

    async def _fill(self, ask: Ask) -> tuple[tuple[Entry, str], bool]:
        return await self.fills.run(ask.key, lambda: self._produce(ask))

    async def _produce(self, ask: Ask, fetched: Fetched | None = None) -> tuple[Entry, str]:
        """Make the response for `ask` (parent edge, or source + transform) and store it."""
        if self.settings.parent_url and not ask.from_edge and fetched is None:
            try:
                return await self._from_parent(ask)
            except (BadGateway, GatewayTimeout) as error:
                self.stats.count("parent_error")
                log.warning(
                    "parent edge failed, asking the origin",
                    extra={"fields": {"error": error.public_message}},
                )
        held = 0

        async def reserve(size: int) -> None:
            # source bytes in flight are bounded for transforms (passthrough streams on)
            nonlocal held
            if not ask.spec.is_identity:
                held += await self.pool.hold(size, ask.deadline)

        try:
            if fetched is None:
                fetched, timing = await self._source(ask.source, ask.deadline, reserve)
            else:
                timing = f"origin;dur={fetched.seconds * 1000:.1f}"
            lifetime = self._lifetime(fetched)
            entry, more = await self._make(ask, fetched, lifetime)
            timing += more
        except HTTPError as error:
            if 400 <= error.status < 500 and self.settings.negative_ttl_s:
                self._store_error(ask, error)
            raise
        finally:
            if held:
                await self.pool.release_source(held)
        if lifetime is not None:
            self.cache.store(entry)
        return entry, timing

    async def _make(self, ask: Ask, fetched: Fetched, lifetime: float | None) -> tuple[Entry, str]:
        spec = ask.spec
        origin_etag = None
        timing = ""
        if spec.is_identity and _passthrough(fetched):
            # not decoded, but never a bomb: the header's size and frames against the limits
            if probe(fetched.body, self.limits).pages > self.limits.max_frames:
                raise PayloadTooLarge("source has too many frames")
            body, content_type = fetched.body, fetched.content_type.split(";")[0]
            if fetched.etag and fetched.etag.startswith('"'):
                origin_etag = fetched.etag  # the origin's strong tag names these very bytes
            cache_control = (fetched.cache_control or self.settings.cache_control).encode()
        else:
            started = time.monotonic()
            accept = ACCEPT_FOR_CLASS[ask.klass]
            rendered = await self._render(ask.source.id, fetched, spec, accept, ask.deadline)
            elapsed = time.monotonic() - started
            self.stats.transform.observe(rendered.format, elapsed)
            timing = f", transform;dur={elapsed * 1000:.1f}"
            if spec.format == "json":
                body, content_type = _describe(rendered), "application/json"
            else:
                body, content_type = rendered.body, CONTENT_TYPES[rendered.format]
            cache_control = self._cache_control
        etag = origin_etag or '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'
        headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"etag", etag.encode()),
            (b"cache-control", cache_control),
            (b"x-content-type-options", b"nosniff"),
        ]
        if fetched.last_modified:
            headers.append((b"last-modified", fetched.last_modified.encode("latin-1")))
        if ask.auto:
            headers.append((b"vary", b"Accept"))
        return self._entry(ask, fetched, lifetime, 200, body, headers, etag.encode()), timing

    def _entry(
        self,
        ask: Ask,
        fetched: Fetched,
        lifetime: float | None,
        status: int,
        body: bytes,
        headers: list[tuple[bytes, bytes]],
        etag: bytes,
    ) -> Entry:
        cc = directives(fetched.cache_control)
        received = fetched.received or self.wall()
        settings = self.settings
        swr = cc.get("stale-while-revalidate")
        sie = cc.get("stale-if-error")
        return Entry(
            key=ask.key,
            source=ask.source.id,
            status=status,
            body=body,
            headers=headers,
            etag=etag,
            stored=received,
            fresh_until=received + (lifetime or 0.0),
            swr=float(swr) if swr and swr.isdigit() else settings.stale_while_revalidate_s,
            sie=float(sie) if sie and sie.isdigit() else settings.stale_if_error_s,
            # RFC 9111 §4.2.4: these forbid serving stale; no lifetime at all: not stored
            must_revalidate=lifetime is None
            or any(
                d in cc for d in ("must-revalidate", "proxy-revalidate", "s-maxage", "no-cache")
            ),
            source_etag=fetched.etag if fetched.cache_status is None else None,
            source_modified=fetched.last_modified if fetched.cache_status is None else None,
        )

    def _lifetime(self, fetched: Fetched) -> float | None:
        """Seconds fresh, clamped to the configured floor and ceiling; None: do not store."""
        cc = directives(fetched.cache_control)
        if "no-store" in cc or "private" in cc:
            return None
        lifetime = freshness_lifetime(
            fetched.cache_control,
            fetched.expires,
            fetched.received or self.wall(),
            fetched.last_modified,
        )
        if "no-cache" in cc:
            return 0.0
        return min(max(lifetime, self.settings.min_ttl_s), self.settings.max_ttl_s)

    def _store_error(self, ask: Ask, error: HTTPError) -> None:
        body = error_body(error)
        now = self.wall()
        entry = Entry(
            key=ask.key,
            source=ask.source.id,
            status=error.status,
            body=body,
            headers=[
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
            etag=b"",
            stored=now,
            fresh_until=now + self.settings.negative_ttl_s,
            must_revalidate=True,
        )
        self.cache.memory.put(entry)  # errors stay on this node, briefly

    async def _from_parent(self, ask: Ask) -> tuple[Entry, str]:
        parents = self.settings.parent_url
        parent = max(parents, key=lambda p: hashlib.blake2b((p + ask.key).encode()).digest())
        fetched = await self.fetcher.fetch(
            ask.source,
            max_bytes=self.max_src_bytes,
            deadline=ask.deadline,
            via=parent + ask.raw.decode(),
            headers={"accept": ACCEPT_FOR_CLASS[ask.klass], "cdn-loop": LOOP_TOKEN},
        )
        headers = [
            (b"content-type", fetched.content_type.encode("latin-1")),
            (b"content-length", str(len(fetched.body)).encode()),
            (b"cache-control", self._cache_control),
            (b"x-content-type-options", b"nosniff"),
        ]
        etag = (fetched.etag or "").encode("latin-1")
        if etag:
            headers.append((b"etag", etag))
        if fetched.last_modified:
            headers.append((b"last-modified", fetched.last_modified.encode("latin-1")))
        if ask.auto:
            headers.append((b"vary", b"Accept"))
        lifetime = self._lifetime(fetched)
        entry = self._entry(ask, fetched, lifetime, 200, fetched.body, headers, etag)
        if lifetime is not None:
            self.cache.store(entry)
        self.stats.count("parent")
        return entry, f"parent;dur={fetched.seconds * 1000:.1f}"

    async def _source(
        self, source: Source, deadline: float, reserve: Callable[[int], Awaitable[None]]
    ) -> tuple[Fetched, str]:
        """The source's bytes, from memory when fresh there, and the Server-Timing part."""
        self.sources.touch(source.id)
        fetched = self.sources.get(source.id)
        if fetched is not None:
            self.stats.source_hits += 1
            return fetched, "source-cache;dur=0"

        async def fetch() -> Fetched:
            got = await self.fetcher.fetch(
                source, max_bytes=self.max_src_bytes, deadline=deadline, reserve=reserve
            )
            self.sources.put(source.id, got)
            upstream = "origin" if isinstance(source, OriginSource) else "remote"
            self.stats.origin.observe(upstream, got.seconds)
            return got

        fetched, collapsed = await self.source_fills.run(source.id, fetch)
        if collapsed:
            await reserve(len(fetched.body))
            return fetched, "origin;desc=collapsed"
        return fetched, f"origin;dur={fetched.seconds * 1000:.1f}"

    async def _render(
        self, source_id: str, fetched: Fetched, spec: TransformSpec, accept: str, deadline: float
    ) -> Rendered:
        # only an ETag ties what is remembered about a source to these exact bytes
        version = fetched.etag
        identity = version  # of the bytes, for the crash memory: the ETag, else a hash
        if self._crashed:
            identity = version or _digest(fetched.body)
            if (source_id, identity) in self._crashed:
                raise DecoderCrashed()
        try:
            return await self._render_in_pool(source_id, version, fetched, spec, accept, deadline)
        except DecoderCrashed:
            self._crashed[(source_id, identity or _digest(fetched.body))] = True
            log.warning(
                "source crashed a transform worker; its variants are refused",
                extra={"fields": {"source": source_id, "for_s": CRASHED_S}},
            )
            raise

    async def _render_in_pool(
        self,
        source_id: str,
        version: str | None,
        fetched: Fetched,
        spec: TransformSpec,
        accept: str,
        deadline: float,
    ) -> Rendered:
        known = self._probed.get((source_id, version)) if version else None
        # a JPEG or PNG header is read here in 5-50 us (edge/pipeline/header.py), less than
        # a hand-off costs the event loop; any header libvips reads (libheif, librsvg,
        # libwebp, giflib, or a JPEG our parser gives up on) walks more of the file and is
        # read in a worker, where a crash costs a process, not the edge
        info = known or probe_in_python(fetched.body, self.limits)
        if info is not None:
            job = prepare(fetched.body, spec, accept, self.limits, info)
        else:
            job = await self.pool.run(
                prepare, fetched.body, spec, accept, self.limits, cost=1, deadline=deadline
            )
        if known is None and version:
            if len(self._probed) >= PROBED_ENTRIES:
                self._probed.pop(next(iter(self._probed)))
            self._probed[(source_id, version)] = job.source
        pivot, pivot_side = None, 0
        if (
            version
            and self.pivots_enabled
            and self.sources.hot(source_id)
            and (source_id, version) in self._proven
        ):
            pivot = self.sources.pivot(source_id, version)
            pivot_side = 0 if pivot is not None else PIVOT_SIDE
        here = pivot is not None or pivot_side > 0
        rendered = await self.pool.run(
            render,
            fetched.body,
            spec,
            job,
            self.encoding,
            deadline,
            pivot,
            pivot_side,
            cost=job.cost,
            deadline=deadline,
            here=here,
        )
        if version and not here:
            self._proven[(source_id, version)] = True
        if rendered.pivot is not None and version:
            self.stats.copies_made += 1
            self.sources.keep_pivot(source_id, version, rendered.pivot)
        elif pivot is not None and rendered.from_pivot:
            self.stats.copies_used += 1
        return rendered

    async def _send(
        self,
        scope: Scope,
        send: Send,
        headers: dict[bytes, bytes],
        ask: Ask,
        entry: Entry,
        status: str,
        timing: str,
    ) -> None:
        now = self.wall()
        if entry.status == 200:
            route = fast_key(ask.raw, ask.klass) if ask.auto else ask.raw
            if self.cache.memory.policy.peek(entry.key) is entry:
                self.cache.memory.alias(entry, route)
            if self.cache.disk is not None:
                self.cache.disk.route(route, entry.key)
        extra = [
            (b"age", str(max(0, int(now - entry.stored))).encode()),
            (b"cache-status", status.encode()),
            (b"server-timing", timing.encode()),
        ]
        if ask.from_edge:  # tell a child edge how long the entry itself stays fresh
            ttl = max(0, int(entry.fresh_until - now))
            control = f"max-age={ttl}, stale-while-revalidate={int(entry.swr)}"
            control += f", stale-if-error={int(entry.sie)}"
            if entry.must_revalidate:
                control += ", must-revalidate"
            extra.append((b"cdn-cache-control", control.encode()))
        if_none_match = headers.get(b"if-none-match")
        if (
            if_none_match is not None
            and entry.status == 200
            and etag_matches_weak(if_none_match.decode("latin-1"), entry.etag.decode("latin-1"))
        ):
            kept = [h for h in entry.headers if h[0] not in (b"content-length", b"content-type")]
            await send({"type": "http.response.start", "status": 304, "headers": kept + extra})
            await send({"type": "http.response.body", "body": b""})
            return
        await send(
            {
                "type": "http.response.start",
                "status": entry.status,
                "headers": entry.headers + extra,
            }
        )
        body = b"" if scope["method"] == "HEAD" else entry.body
        await send({"type": "http.response.body", "body": body})

    # -- writes through the no-options route ---------------------------------------------

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, source: OriginSource
    ) -> None:
        """An unsafe method on `/_/_/{key}`: forwarded to the origin (RFC 9111 §4.4), and
        what this edge holds for the source is invalidated when the origin accepts it."""
        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name.decode("latin-1") in FORWARDED_HEADERS
        }

        async def body() -> AsyncIterator[bytes]:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                yield message.get("body", b"")
                if not message.get("more_body"):
                    return

        status, response_headers, content = await self.fetcher.forward(
            scope["method"], source, headers, body()
        )
        if status < 400:
            self._drop_source(source.id, soft=False)
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": content})

    # -- purge -------------------------------------------------------------------------

    def _drop_source(self, source: str, *, soft: bool) -> int:
        dropped = self.cache.purge_source(source, soft=soft)
        dropped += self.sources.purge(source)
        self.validated.pop(source, None)
        for key in [k for k in self._probed if k[0] == source]:
            del self._probed[key]
        return dropped

    async def _purge(self, scope: Scope, receive: Receive, send: Send) -> None:
        """POST /_purge {"source"|"url"|"prefix": "...", "mode": "hard"|"soft"}."""
        if not self.settings.purge_keys:
            raise Forbidden("purge is disabled: no EDGE_PURGE_KEYS")
        headers = dict(scope["headers"])
        token = bearer_token(headers.get(b"authorization", b"").decode("latin-1"))
        if find_secret(token, self.settings.purge_keys) is None:
            raise Unauthorized()
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > 65536:
                raise PayloadTooLarge("purge request too large")
            if not message.get("more_body"):
                break
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise BadRequest(
                'expected JSON {"source"|"url"|"prefix": "...", "mode": "hard"|"soft"}'
            )
        mode = document.get("mode", "hard")
        if mode not in ("hard", "soft"):
            raise BadRequest('mode must be "hard" or "soft"')
        soft = mode == "soft"
        targets = [name for name in ("source", "url", "prefix") if name in document]
        if len(targets) != 1 or not isinstance(document[targets[0]], str):
            raise BadRequest('expected exactly one of "source", "url" or "prefix" as a string')
        target = document[targets[0]]
        if targets[0] == "source":
            dropped = self._drop_source(target, soft=soft)
        elif targets[0] == "prefix":
            if not target:
                raise BadRequest('an empty prefix would purge everything; say so with "/"')
            prefix = "" if target == "/" else target
            dropped = self.cache.purge_prefix(prefix, soft=soft)
            for source in self.sources.sources_under(prefix):
                dropped += self.sources.purge(source)
        else:
            request = parse_request(
                target.split("?", 1)[0],
                keys=self.settings.signing_keys,
                allow_unsigned=True,
                allowed_hosts=self.settings.allowed_sources,
            )
            base = f"{request.source.id}\x00{request.spec.canonical}\x00"
            classes = ACCEPT_FOR_CLASS if request.spec.format == "auto" else {"": ""}
            dropped = self.cache.purge_keys([base + k for k in classes], soft=soft)
        self.stats.purges += 1
        await send_response(
            send, 200, json.dumps({"purged": dropped, "mode": mode}).encode(), b"application/json"
        )


class FastPath:
    """Exact-URL hits, answered before routing, parsing or the middleware stack.

    Fresh 200 entries without conditional headers take this path: from L1 through the
    memory tier's aliases, and from L2 through the disk tier's routes (request path ->
    key, learnt when the slow path answered it), read inline and promoted to L1 as the
    slow path would. Everything else (misses, stale entries, conditionals, large files)
    goes to the full app. Hits are still counted and logged."""

    def __init__(
        self, app: AccessMiddleware, cache: TieredCache, stats: EdgeStats, wall: Callable[[], float]
    ) -> None:
        self.app = app
        self.memory = cache.memory
        self.fast = cache.memory.fast
        self.policy = cache.memory.policy
        self.disk = cache.disk
        self.routes = cache.disk.routes if cache.disk is not None else {}
        self.stats = stats
        self.series = app.metrics.requests
        self.buckets = self.series.buckets
        self._rows: dict[str, list[float]] = {}  # the series' rows of 200s by method
        self.access_log = app.access_log
        self.wall = wall
        self._lines: dict[tuple[bytes, str, int, bytes], bytes] = {}
        # uvicorn's protocol class for this app (`cdn_common.serve` uses it when set)
        self.http_protocol: type[asyncio.Protocol] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path")
        if scope["type"] != "http" or raw is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method = scope["method"]
        found = self.hit(raw, scope["headers"], method)
        if found is None:
            await self.app(scope, receive, send)
            return
        entry, status, now = found
        body = entry.body if method == "GET" else b""
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*entry.headers, status, (b"age", b"%d" % (now - entry.stored))],
            }
        )
        await send({"type": "http.response.body", "body": body})
        self.account(raw, method, status, len(body), started)

    def hit(
        self, raw: bytes, headers: Iterable[tuple[bytes, bytes]], method: str
    ) -> tuple[Entry, tuple[bytes, bytes], float] | None:
        """The fresh 200 entry for an exact-URL hit, with its Cache-Status header and the
        time; None for whatever the full app must answer."""
        if not (self.fast or self.routes):
            return None
        accept = b""
        size = 0
        for name, value in headers:
            size += len(name) + len(value)
            if name == b"accept":
                accept = value
            elif name == b"if-none-match" or name == b"cdn-loop":
                return None
        if size > MAX_HEADER_BYTES or (method != "GET" and method != "HEAD"):  # 431 or not ours
            return None
        status = MEMORY_HIT
        entry = self.fast.get(raw)
        if entry is None:
            # a path is either negotiated (format=auto) or not: its raw form and its
            # negotiated form never both match, so the negotiated key is made only when
            # the raw one is in neither tier
            route = raw
            found = self.routes.get(raw)
            if found is None:
                route = fast_key(raw, accept_class(accept))
                entry = self.fast.get(route)
                found = self.routes.get(route)
            if entry is None:
                entry = None if found is None else self._from_disk(route, *found)
                status = DISK_HIT
        now = self.wall()
        if entry is None or now >= entry.fresh_until or entry.status != 200:
            return None
        if status is MEMORY_HIT:
            self.policy.get(entry.key)
            self.stats.memory_fast += 1
        else:
            self.stats.count("disk")
        return entry, status, now

    def account(
        self, raw: bytes, method: str, status: tuple[bytes, bytes], sent: int, started: float
    ) -> None:
        """A hit into the request metrics and the access log, as the full app records it."""
        elapsed = time.perf_counter() - started
        row = self._rows.get(method)
        if row is None:
            row = self._rows[method] = self.series.row("image", method, 200)
        tally(row, self.buckets, elapsed, sent)
        if self.access_log is not None:
            # the line's constant part is built once per (path, method, size, tier)
            line_key = (raw, method, sent, status[1])
            fragment = self._lines.get(line_key)
            if fragment is None:
                if len(self._lines) > FAST_LOG_LINES:
                    self._lines.clear()
                path = redact(urllib.parse.unquote(raw.decode("ascii")))
                fields: dict[str, object] = {"method": method, "path": path}
                fields.update(cache=status[1].decode(), status=200, bytes=sent)
                fragment = orjson.dumps(fields)[1:-1] + b',"duration_ms":'
                self._lines[line_key] = fragment
            self.access_log.write_timed(fragment, elapsed)

    def _from_disk(self, route: bytes, key: str, name: str) -> Entry | None:
        """An L2 hit for a path the slow path has answered, promoted to L1."""
        assert self.disk is not None  # routes are learnt by the disk tier
        entry = self.disk.get_now(key, name)
        if entry is not None and self.memory.put(entry):
            self.memory.alias(entry, route)
        return entry


MEMORY_HIT = (b"cache-status", b"edge; hit; detail=memory")
DISK_HIT = (b"cache-status", b"edge; hit; detail=disk")


def _digest(body: bytes) -> str:
    """A version for a source the origin gave no ETag."""
    return "xxh3:" + xxhash.xxh3_128_hexdigest(body)


def _passthrough(fetched: Fetched) -> bool:
    declared = fetched.content_type.split(";")[0].strip().lower()
    return declared in PASSTHROUGH_TYPES and fetched.body[:64].lstrip()[:1] != b"<"


def _describe(rendered: Rendered) -> bytes:
    source = rendered.source
    document = {
        "source": {
            "width": source.width,
            "height": source.height,
            "format": source.format,
            "pages": source.pages,
            "size": source.size,
        },
        "result": {
            "width": rendered.width,
            "height": rendered.height,
            "format": rendered.format,
            "pages": rendered.pages,
            "size": len(rendered.body),
        },
    }
    return json.dumps(document, separators=(",", ":")).encode()


def build_cache(settings: EdgeSettings) -> TieredCache:
    memory = MemoryTier(int(settings.memory_cache_mb * MIB))
    disk = None
    if settings.disk_cache_mb > 0:
        disk = DiskTier(
            Path(settings.cache_dir),
            int(settings.disk_cache_mb * MIB),
            int(settings.disk_min_free_mb * MIB),
        )
    shared = None
    if settings.shared_cache_url:
        shared = SharedTier(
            settings.shared_cache_url,
            timeout=settings.shared_cache_timeout_ms / 1000,
            max_object=settings.shared_cache_max_kb * 1024,
            marker_ttl=int(settings.max_ttl_s + settings.stale_if_error_s) + 1,
        )
    return TieredCache(memory, disk, shared)


def build_app(settings: EdgeSettings, fetcher: Fetcher | None = None) -> FastPath:
    metrics = HTTPMetrics("edge")
    fetcher = fetcher or Fetcher(
        settings.origin_url,
        allowed_hosts=settings.allowed_sources,
        connect_timeout=settings.origin_connect_timeout_s,
        read_timeout=settings.origin_read_timeout_s,
    )
    pool = TransformPool(
        settings.workers,
        settings.queue,
        int(settings.transform_memory_mb * MIB),
        source_budget=int(settings.inflight_sources_mb * MIB),
        processes=settings.transform_processes,
    )
    cache = build_cache(settings)
    app = EdgeApp(settings, fetcher, pool, metrics, cache)
    middleware = AccessMiddleware(
        app,
        metrics=metrics,
        classify=classify,
        access_log=AccessLog() if settings.access_log else None,
    )
    fast = FastPath(middleware, cache, app.stats, cache.wall)
    if settings.protocol_hits:
        from edge.protocol import hit_protocol

        fast.http_protocol = hit_protocol(fast)
    return fast
