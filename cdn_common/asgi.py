"""The outermost pure-ASGI layer of both services: errors to responses, metrics, access log.

Exceptions become responses here and nowhere else: an `HTTPError` gives its own status
and message, anything else a logged 500. Every request then counts in the metrics and
writes one JSON log line (fields endpoints add to `scope["log"]` are included).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cdn_common.errors import HTTPError, error_body
from cdn_common.logs import AccessLog

error_log = logging.getLogger("errors")
# `_created` series double every counter for no use on a dashboard.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Image requests span sub-millisecond cache hits to multi-second transforms of large sources.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class HTTPMetrics:
    """Per-app registry (so tests can build many apps) with the request series."""

    def __init__(self, namespace: str) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            f"{namespace}_http_requests",
            "HTTP requests by route, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            f"{namespace}_http_request_duration_seconds",
            "Time from request start to the last byte sent.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.response_bytes = Counter(
            f"{namespace}_http_response_bytes",
            "Body bytes sent.",
            ["route"],
            registry=self.registry,
        )
        # label lookups cost more than the increments; keep the children
        self._children: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}
        self.in_flight = Gauge(
            f"{namespace}_http_requests_in_flight",
            "Requests being served now.",
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def observe(self, route: str, method: str, status: int, seconds: float, sent: int) -> None:
        children = self._children.get((route, method, status))
        if children is None:
            children = (
                self.requests.labels(route, method, str(status)),
                self.duration.labels(route),
                self.response_bytes.labels(route),
            )
            self._children[(route, method, status)] = children
        children[0].inc()
        children[1].observe(seconds)
        children[2].inc(sent)


async def send_error(send: Send, error: HTTPError, *, head: bool) -> None:
    body = error_body(error)
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


class AccessMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: HTTPMetrics,
        classify: Callable[[str], str],
        access_log: AccessLog | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.classify = classify
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
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
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        fields: dict[str, Any] = {}
        scope["log"] = fields
        self.metrics.in_flight.inc()
        try:
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
            self.metrics.in_flight.dec()
            elapsed = time.perf_counter() - start
            self.metrics.observe(
                self.classify(scope["path"]), scope["method"], status, elapsed, sent
            )
            if self.access_log is not None:
                fields.update(
                    method=scope["method"],
                    path=fields.get("path", scope["path"]),
                    status=status,
                    bytes=sent,
                    duration_ms=round(elapsed * 1000, 3),
                )
                self.access_log.write(fields)
