"""The edge's ASGI app: image URLs, health, metrics.

A request goes: parse (pure) -> fetch the source -> prepare (header, limits, plan) ->
render in the transform pool -> respond. The cache issue wraps `fetch` and `render`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable

from starlette.types import Receive, Scope, Send

from cdn_common.asgi import AccessMiddleware, HTTPMetrics, send_response, serve_lifespan
from cdn_common.auth import bearer_token, find_secret
from cdn_common.errors import (
    BadRequest,
    Forbidden,
    MethodNotAllowed,
    PayloadTooLarge,
    Unauthorized,
)
from cdn_common.http import etag_matches_weak
from cdn_common.logs import AccessLog
from edge.fetch import Fetched, Fetcher
from edge.options import TransformSpec
from edge.pipeline.plan import CONTENT_TYPES, SourceInfo
from edge.pipeline.render import Encoding, Limits, Rendered, prepare, render
from edge.settings import EdgeSettings
from edge.sourcecache import PIVOT_SIDE, SourceCache
from edge.stats import EdgeStats
from edge.urls import CDN_CGI, OriginSource, Source, parse_request
from edge.workers import TransformPool

MIB = 1024 * 1024
PROBED_ENTRIES = 65536  # headers already read, by (source, etag)
# A source is passed through untouched only when it is a raster image by both the
# origin's word and its first byte; SVG, HTML or anything odd is rendered (or refused).
PASSTHROUGH_TYPES = frozenset({"image/jpeg", "image/png", "image/webp", "image/gif", "image/avif"})


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


class EdgeApp:
    def __init__(
        self, settings: EdgeSettings, fetcher: Fetcher, pool: TransformPool, metrics: HTTPMetrics
    ) -> None:
        self.settings = settings
        self.fetcher = fetcher
        self.pool = pool
        self.sources = SourceCache(
            int(settings.source_cache_mb * MIB), int(settings.decoded_cache_mb * MIB)
        )
        self.stats = EdgeStats(pool, self.sources)
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
        # decoded copies are libvips images in this process: useless to worker processes
        self.pivots_enabled = settings.decoded_cache_mb > 0 and not settings.transform_processes
        self._probed: dict[tuple[str, str | None], SourceInfo] = {}
        self._cache_control = settings.cache_control.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send, self._close)
            return
        path: str = scope["path"]
        if path == "/healthz":
            await send_response(send, 200, b"ok\n", b"text/plain")
        elif path == "/readyz":
            ready = await self.fetcher.origin_ready()
            await send_response(
                send,
                200 if ready else 503,
                b"ready\n" if ready else b"origin unreachable\n",
                b"text/plain",
            )
        elif path == "/metrics":
            await send_response(send, 200, self.metrics.render(), b"text/plain; version=0.0.4")
        elif path == "/_purge":
            if scope["method"] != "POST":
                raise MethodNotAllowed(headers={"Allow": "POST"})
            await self._purge(scope, receive, send)
        elif scope["method"] not in ("GET", "HEAD"):
            raise MethodNotAllowed(headers={"Allow": "GET, HEAD"})
        else:
            await self._image(scope, send)

    async def _close(self) -> None:
        await self.fetcher.close()
        self.pool.close()

    async def _image(self, scope: Scope, send: Send) -> None:
        try:
            raw = (scope.get("raw_path") or scope["path"].encode()).decode().split("?", 1)[0]
        except UnicodeDecodeError:
            raise BadRequest("path is not UTF-8") from None
        scope["log"]["path"] = redact(raw)
        request = parse_request(
            raw,
            keys=self.settings.signing_keys,
            allow_unsigned=self.settings.unsigned_allowed,
            allowed_hosts=self.settings.allowed_sources,
        )
        deadline = time.monotonic() + self.settings.deadline_s
        headers = dict(scope["headers"])
        accept = headers.get(b"accept", b"").decode("latin-1")
        spec = request.spec
        held = 0

        async def reserve(size: int) -> None:
            # source bytes in flight are bounded for transforms (passthrough streams on)
            nonlocal held
            if not spec.is_identity:
                held += await self.pool.hold(size, deadline)

        etag = None
        try:
            fetched, timing = await self._source(request.source, deadline, reserve)
            if spec.is_identity and _passthrough(fetched):
                body, content_type = fetched.body, fetched.content_type.split(";")[0]
                if fetched.etag and fetched.etag.startswith('"'):
                    etag = fetched.etag  # the origin's strong tag names these very bytes
            else:
                started = time.monotonic()
                rendered = await self._render(request.source.id, fetched, spec, accept, deadline)
                elapsed = time.monotonic() - started
                self.stats.transform.observe(rendered.format, elapsed)
                timing += f", transform;dur={elapsed * 1000:.1f}"
                if spec.format == "json":
                    body, content_type = _describe(rendered), "application/json"
                else:
                    body, content_type = rendered.body, CONTENT_TYPES[rendered.format]
        finally:
            if held:
                await self.pool.release_source(held)
        etag = etag or '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'
        response_headers = [
            (b"etag", etag.encode()),
            (b"cache-control", self._cache_control),
            (b"server-timing", timing.encode()),
        ]
        if fetched.last_modified:
            response_headers.append((b"last-modified", fetched.last_modified.encode("latin-1")))
        if spec.format == "auto":
            response_headers.append((b"vary", b"Accept"))
        if_none_match = headers.get(b"if-none-match")
        if if_none_match is not None and etag_matches_weak(if_none_match.decode("latin-1"), etag):
            await send({"type": "http.response.start", "status": 304, "headers": response_headers})
            await send({"type": "http.response.body", "body": b""})
            return
        response_headers += [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"x-content-type-options", b"nosniff"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": response_headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )

    async def _source(
        self, source: Source, deadline: float, reserve: Callable[[int], Awaitable[None]]
    ) -> tuple[Fetched, str]:
        """The source's bytes, from memory when fresh there, and the Server-Timing part."""
        self.sources.touch(source.id)
        fetched = self.sources.get(source.id)
        if fetched is not None:
            self.stats.source_hits += 1
            return fetched, "source-cache;dur=0"
        fetched = await self.fetcher.fetch(
            source, max_bytes=self.max_src_bytes, deadline=deadline, reserve=reserve
        )
        self.sources.put(source.id, fetched)
        upstream = "origin" if isinstance(source, OriginSource) else "remote"
        self.stats.origin.observe(upstream, fetched.seconds)
        return fetched, f"origin;dur={fetched.seconds * 1000:.1f}"

    async def _render(
        self, source_id: str, fetched: Fetched, spec: TransformSpec, accept: str, deadline: float
    ) -> Rendered:
        # only an ETag ties what is remembered about a source to these exact bytes
        version = fetched.etag
        known = self._probed.get((source_id, version)) if version else None
        if known is not None:
            job = prepare(fetched.body, spec, accept, self.limits, known)
        else:
            loop = asyncio.get_running_loop()
            job = await loop.run_in_executor(None, prepare, fetched.body, spec, accept, self.limits)
            if version:
                if len(self._probed) >= PROBED_ENTRIES:
                    self._probed.pop(next(iter(self._probed)))
                self._probed[(source_id, version)] = job.source
        pivot, pivot_side = None, 0
        if version and self.pivots_enabled and self.sources.hot(source_id):
            pivot = self.sources.pivot(source_id, version)
            pivot_side = 0 if pivot is not None else PIVOT_SIDE
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
        )
        if rendered.pivot is not None and version:
            self.stats.copies_made += 1
            self.sources.keep_pivot(source_id, version, rendered.pivot)
        elif pivot is not None and rendered.from_pivot:
            self.stats.copies_used += 1
        return rendered

    async def _purge(self, scope: Scope, receive: Receive, send: Send) -> None:
        """POST /_purge {"source": "<key or URL>"}: drop what this edge holds for it."""
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
            source = json.loads(body)["source"]
        except (ValueError, KeyError, TypeError):
            source = None
        if not isinstance(source, str):
            raise BadRequest('expected JSON {"source": "..."}')
        dropped = self.sources.purge(source)
        for key in [k for k in self._probed if k[0] == source]:
            del self._probed[key]
        await send_response(
            send, 200, json.dumps({"purged": dropped}).encode(), b"application/json"
        )


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


def build_app(settings: EdgeSettings, fetcher: Fetcher | None = None) -> AccessMiddleware:
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
    app = EdgeApp(settings, fetcher, pool, metrics)
    return AccessMiddleware(
        app,
        metrics=metrics,
        classify=classify,
        access_log=AccessLog() if settings.access_log else None,
    )
