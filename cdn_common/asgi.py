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

access_log = logging.getLogger("access")
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
        self.in_flight = Gauge(
            f"{namespace}_http_requests_in_flight",
            "Requests being served now.",
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


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
        log_requests: bool = True,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.classify = classify
        self.log_requests = log_requests

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
            route = self.classify(scope["path"])
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.duration.labels(route).observe(elapsed)
            self.metrics.response_bytes.labels(route).inc(sent)
            if self.log_requests:
                fields.update(
                    method=scope["method"],
                    path=fields.get("path", scope["path"]),
                    status=status,
                    bytes=sent,
                    duration_ms=round(elapsed * 1000, 3),
                )
                access_log.info("request", extra={"fields": fields})
