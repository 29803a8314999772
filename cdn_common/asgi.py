"""The outermost pure-ASGI layer of both services: errors to responses, metrics, access log.

Exceptions become responses here and nowhere else: an `HTTPError` gives its own status
and message, anything else a logged 500. Every request then counts in the metrics and
writes one JSON log line (fields endpoints add to `scope["log"]` are included).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cdn_common.errors import HeadersTooLarge, HTTPError, URITooLong, error_body
from cdn_common.http import now_date
from cdn_common.logs import REQUEST_ID, AccessLog, RequestFields
from cdn_common.metrics import RequestSeries, cache_outcome

error_log = logging.getLogger("errors")
# `_created` series double every counter for no use on a dashboard.
disable_created_metrics()  # type: ignore[no-untyped-call]


class HTTPMetrics:
    """Per-app registry (so tests can build many apps) holding the request series."""

    def __init__(self, namespace: str) -> None:
        self.registry = CollectorRegistry()
        self.requests = RequestSeries(namespace)
        self.registry.register(self.requests)
        # the standard process_* series (CPU, memory, descriptors) of this process
        ProcessCollector(registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def send_response(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """A whole small response that no cache should keep (health, metrics, API answers)."""
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def serve_lifespan(
    receive: Receive,
    send: Send,
    on_shutdown: Callable[[], Awaitable[None]],
    on_startup: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """The ASGI lifespan protocol: `on_startup` to start background work, `on_shutdown`
    to close pools."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if on_startup is not None:
                await on_startup()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await on_shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def send_error(send: Send, error: HTTPError, *, head: bool) -> None:
    body = error_body(error)
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"x-content-type-options", b"nosniff"),
    ]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


MAX_URL_BYTES = 8192  # as nginx's large_client_header_buffers; no image URL needs more
MAX_HEADER_BYTES = 32768


def _check_sizes(scope: Scope) -> None:
    """414/431 before any parsing: the server has the bytes already, but nothing of ours
    (parsers, logs, cache keys) should work on megabytes of URL or headers."""
    raw = scope.get("raw_path") or scope["path"].encode()
    if len(raw) + len(scope.get("query_string", b"")) > MAX_URL_BYTES:
        raise URITooLong()
    if sum(len(name) + len(value) for name, value in scope["headers"]) > MAX_HEADER_BYTES:
        raise HeadersTooLarge()


class AccessMiddleware:
    @staticmethod
    def _flushing(send: Send, access_log: AccessLog) -> Send:
        """Write buffered request lines before the process may exit: uvicorn ends a
        SIGTERM shutdown by re-raising the signal, so no atexit hook would run."""

        async def lifespan_send(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                access_log.flush()
            await send(message)

        return lifespan_send

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: HTTPMetrics,
        classify: Callable[[str], str],
        access_log: AccessLog | None = None,
        date: bool = False,
    ) -> None:
        """`date`: add a `Date` to every response that has none (for a server run with
        uvicorn's own Date header off)."""
        self.date = date
        self.app = app
        self.metrics = metrics
        self.classify = classify
        self.access_log = access_log
        self.requests = access_log.requests if access_log is not None else RequestFields()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan" and self.access_log is not None:
                send = self._flushing(send, self.access_log)
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        sent = 0
        started = False

        async def observe(message: Message) -> None:
            nonlocal status, sent, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
                if self.date and not any(name == b"date" for name, _ in message["headers"]):
                    message["headers"] = [*message["headers"], (b"date", now_date())]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        fields: dict[str, Any] = {}
        scope["log"] = fields
        client = scope.get("client")
        who, request_id = self.requests.members(client[0] if client else "", scope["headers"])
        fields["request_id"] = request_id
        token = REQUEST_ID.set(request_id)  # fetches made for this request send it on
        series = self.metrics.requests
        series.in_flight += 1
        try:
            _check_sizes(scope)
            await self.app(scope, receive, observe)
        except HTTPError as error:
            if started:
                raise
            await send_error(observe, error, head=scope["method"] == "HEAD")
        except Exception:
            error_log.exception("unhandled error", extra={"fields": {"path": scope["path"]}})
            if started:
                raise
            await send_error(observe, HTTPError(), head=scope["method"] == "HEAD")
        finally:
            REQUEST_ID.reset(token)
            series.in_flight -= 1
            elapsed = time.perf_counter() - start
            route = self.classify(scope["path"])
            cache = cache_outcome(fields.get("cache"))
            series.observe(route, scope["method"], status, elapsed, sent, cache)
            if self.access_log is not None:
                fields.update(
                    method=scope["method"],
                    path=fields.get("path", scope["path"][:256]),
                    status=status,
                    bytes=sent,
                    duration_ms=round(elapsed * 1000, 3),
                )
                self.access_log.write(fields, who)
