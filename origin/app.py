"""The origin's ASGI app: blob routes, metadata, health and metrics.

Dispatch is a handful of string checks rather than a router: the blob GET is the
hot path, and it must stay one thread hop (open, stat, read) plus two ASGI messages.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from functools import lru_cache
from typing import Any

from prometheus_client import Counter
from starlette.types import Receive, Scope, Send

from cdn_common.asgi import AccessMiddleware, HTTPMetrics, send_response, serve_lifespan
from cdn_common.errors import BadRequest, MethodNotAllowed, NotFound
from cdn_common.http import (
    ByteRange,
    etag_matches_strong,
    http_date,
    not_modified,
    parse_http_date,
    parse_range,
)
from cdn_common.logs import AccessLog
from origin.auth import ApiKey, authorize
from origin.keys import key_from_raw_path
from origin.purge import PurgeNotifier
from origin.settings import OriginSettings
from origin.stores.base import SKIP, WHOLE, BlobMeta, BlobStore, Precondition, Selection
from origin.upload import ClientGone, receive_upload

META_PREFIX = "/_meta/"
# Served blobs are images, never documents: an SVG opened straight from the origin
# must not run script or load anything.
SAFETY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", b"default-src 'none'; style-src 'unsafe-inline'; sandbox"),
]


def classify(path: str) -> str:
    if path in ("/healthz", "/readyz"):
        return "health"
    if path == "/metrics":
        return "metrics"
    if path.startswith(META_PREFIX):
        return "meta"
    return "blob"


_CONDITIONAL = frozenset({b"if-none-match", b"if-modified-since", b"range"})


def _whole(meta: BlobMeta) -> Selection:
    return WHOLE


class _Selector:
    """Decides, from the blob's metadata alone, what a GET/HEAD sends."""

    __slots__ = ("head", "if_modified_since", "if_none_match", "if_range", "not_modified", "range")

    def __init__(self, headers: dict[bytes, bytes], head: bool) -> None:
        self.head = head
        self.if_none_match = _text(headers.get(b"if-none-match"))
        self.if_modified_since = _text(headers.get(b"if-modified-since"))
        self.range = _text(headers.get(b"range"))
        self.if_range = _text(headers.get(b"if-range"))
        self.not_modified = False

    def __call__(self, meta: BlobMeta) -> Selection:
        if not_modified(self.if_none_match, self.if_modified_since, meta.etag, meta.modified):
            self.not_modified = True
            return SKIP
        if self.head:
            return SKIP
        if self.range is not None and self._range_applies(meta):
            return parse_range(self.range, meta.size) or WHOLE
        return WHOLE

    def _range_applies(self, meta: BlobMeta) -> bool:
        if self.if_range is None:
            return True
        if self.if_range.startswith(('"', "W/")):
            return etag_matches_strong(self.if_range, meta.etag)
        since = parse_http_date(self.if_range)
        return since is not None and int(meta.modified) <= since


@lru_cache(maxsize=16384)
def _blob_headers(
    meta: BlobMeta, cache_control: bytes
) -> tuple[tuple[tuple[bytes, bytes], ...], tuple[tuple[bytes, bytes], ...]]:
    """A blob's 304 headers and its full 200 headers, built once per blob version."""
    validators = (
        (b"etag", meta.etag.encode()),
        (b"last-modified", http_date(meta.modified).encode()),
        (b"cache-control", cache_control),
        (b"accept-ranges", b"bytes"),
    )
    entity = (
        *validators,
        (b"content-type", meta.content_type.encode()),
        (b"content-length", str(meta.size).encode()),
        *SAFETY_HEADERS,
    )
    return validators, entity


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


async def _send_json(
    send: Send, status: int, document: Any, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps(document, separators=(",", ":")).encode()
    await send_response(send, status, body, b"application/json", extra)


async def _body_chunks(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        body = message.get("body", b"")
        if body:
            yield body
        if not message.get("more_body", False):
            return


class OriginApp:
    def __init__(self, settings: OriginSettings, store: BlobStore, metrics: HTTPMetrics) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.purge = PurgeNotifier(settings.purge_webhooks, settings.purge_key, metrics.registry)
        self._cache_control = settings.cache_control.encode()
        self.uploads = Counter(
            "origin_uploads",
            "Committed uploads by API key id.",
            ["owner"],
            registry=metrics.registry,
        )
        self.upload_bytes = Counter(
            "origin_upload_bytes",
            "Bytes of committed uploads by API key id.",
            ["owner"],
            registry=metrics.registry,
        )
        self.deletes = Counter(
            "origin_deletes", "Deleted blobs by API key id.", ["owner"], registry=metrics.registry
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send, self._close)
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if path == "/healthz":
            await send_response(send, 200, b"ok\n", b"text/plain")
        elif path == "/readyz":
            await self.store.check()
            await send_response(send, 200, b"ready\n", b"text/plain")
        elif path == "/metrics":
            await send_response(send, 200, self.metrics.render(), b"text/plain; version=0.0.4")
        elif path.startswith(META_PREFIX):
            await self._meta(scope, send)
        elif method in ("GET", "HEAD"):
            await self._get(scope, send, head=method == "HEAD")
        elif method == "PUT":
            await self._put(scope, receive, send)
        elif method == "DELETE":
            await self._delete(scope, send)
        else:
            raise MethodNotAllowed(headers={"Allow": "GET, HEAD, PUT, DELETE"})

    async def _close(self) -> None:
        await self.purge.drain()
        await self.store.close()

    def _authorize(self, headers: dict[bytes, bytes], scope: str, key: str) -> ApiKey:
        return authorize(self.settings.api_keys, _text(headers.get(b"authorization")), scope, key)

    def _key(self, scope: Scope, skip: int = 1) -> str:
        raw: bytes = (scope.get("raw_path") or scope["path"].encode()).split(b"?", 1)[0]
        return key_from_raw_path(raw[skip:])

    async def _get(self, scope: Scope, send: Send, *, head: bool) -> None:
        key = self._key(scope)
        headers = dict(scope["headers"])
        if not self.settings.public_read:
            self._authorize(headers, "read", key)
        plain = not head and _CONDITIONAL.isdisjoint(headers)
        selector = None if plain else _Selector(headers, head)
        read = await self.store.read(key, selector or _whole)
        if read is None:
            raise NotFound("no such blob")
        meta = read.meta
        validators, entity = _blob_headers(meta, self._cache_control)
        if selector is not None and selector.not_modified:
            await send({"type": "http.response.start", "status": 304, "headers": validators})
            await send({"type": "http.response.body", "body": b""})
            return
        if isinstance(read.selection, ByteRange):
            partial = [
                *validators,
                (b"content-type", meta.content_type.encode()),
                (b"content-length", str(read.selection.length).encode()),
                (b"content-range", read.selection.content_range(meta.size).encode()),
                *SAFETY_HEADERS,
            ]
            await send({"type": "http.response.start", "status": 206, "headers": partial})
        else:
            await send({"type": "http.response.start", "status": 200, "headers": entity})
        body = read.body
        if isinstance(body, bytes):
            await send({"type": "http.response.body", "body": body})
            return
        async with aclosing(body) as chunks:
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def _put(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = self._key(scope)
        headers = dict(scope["headers"])
        api_key = self._authorize(headers, "write", key)
        when = _precondition(headers)
        declared = headers.get(b"content-length")
        if declared is not None and not declared.isdigit():  # bytes: ASCII digits only
            raise BadRequest("invalid Content-Length")
        blob = await receive_upload(
            _body_chunks(receive),
            staging_dir=self.store.staging_dir,
            max_bytes=self.settings.max_upload_bytes,
            declared_length=int(declared) if declared is not None else None,
            owner=api_key.id,
        )
        try:
            meta, replaced = await self.store.put(key, blob, when)
        except BaseException:
            blob.path.unlink(missing_ok=True)  # a commit consumes the file; a failure may not
            raise
        self.uploads.labels(api_key.id).inc()
        self.upload_bytes.labels(api_key.id).inc(meta.size)
        if replaced:
            self.purge.blob_changed(key)
        scope["log"]["owner"] = api_key.id
        await _send_json(
            send, 200 if replaced else 201, meta.to_json(), [(b"etag", meta.etag.encode())]
        )

    async def _delete(self, scope: Scope, send: Send) -> None:
        key = self._key(scope)
        headers = dict(scope["headers"])
        api_key = self._authorize(headers, "delete", key)
        if not await self.store.delete(key, _precondition(headers)):
            raise NotFound("no such blob")
        self.deletes.labels(api_key.id).inc()
        self.purge.blob_changed(key)
        scope["log"]["owner"] = api_key.id
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def _meta(self, scope: Scope, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            raise MethodNotAllowed(headers={"Allow": "GET, HEAD"})
        key = self._key(scope, skip=len(META_PREFIX))
        if not self.settings.public_read:
            headers = dict(scope["headers"])
            self._authorize(headers, "read", key)
        meta = await self.store.stat(key)
        if meta is None:
            raise NotFound("no such blob")
        await _send_json(send, 200, meta.to_json())


def _precondition(headers: dict[bytes, bytes]) -> Precondition:
    if_none_match = _text(headers.get(b"if-none-match"))
    if if_none_match is not None and if_none_match.strip() != "*":
        raise BadRequest("only If-None-Match: * is supported on writes")
    return Precondition(
        if_match=_text(headers.get(b"if-match")), if_none_match_any=if_none_match is not None
    )


def build_app(settings: OriginSettings, store: BlobStore) -> AccessMiddleware:
    metrics = HTTPMetrics("origin")
    app = OriginApp(settings, store, metrics)
    return AccessMiddleware(
        app,
        metrics=metrics,
        classify=classify,
        access_log=AccessLog() if settings.access_log else None,
    )
