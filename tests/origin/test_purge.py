"""Purge webhooks: called on overwrite and delete, off the request path, retried and logged."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from pathlib import Path

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from tests.images import jpeg
from tests.origin.conftest import ADMIN, make_app
from tests.servers import ServerThread


class Edge:
    """A stand-in edge purge endpoint over a real socket: records calls, fails the first N."""

    def __init__(self, failures: int = 0, delay: float = 0.0) -> None:
        self.calls: list[tuple[dict[str, object], str]] = []
        self.failures = failures
        self.delay = delay
        self.event = threading.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if self.delay:
            await asyncio.sleep(self.delay)
        status = 503 if self.failures > 0 else 200
        self.failures -= 1
        auth = dict(scope["headers"]).get(b"authorization", b"").decode()
        self.calls.append((json.loads(body), auth))
        if status == 200:
            self.event.set()
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def test_overwrite_and_delete_call_the_webhooks(blob_dir: Path) -> None:
    edges = [Edge(), Edge(delay=1.0)]
    with ServerThread(edges[0]) as one, ServerThread(edges[1]) as two:
        hooks = f"{one.url}/_purge,{two.url}/_purge"
        app = make_app(blob_dir, purge_webhooks=hooks, purge_key="purge-secret")
        with ServerThread(app) as origin:
            put = httpx.put(f"{origin.url}/a.jpg", content=jpeg(), headers=ADMIN)
            assert put.status_code == 201
            time.sleep(0.2)
            assert edges[0].calls == [], "a new blob has nothing to purge"
            started = time.monotonic()
            put = httpx.put(f"{origin.url}/a.jpg", content=jpeg(quality=30), headers=ADMIN)
            assert put.status_code == 200
            assert time.monotonic() - started < 0.9, "the slow edge must not delay the response"
            assert edges[0].event.wait(5) and edges[1].event.wait(5)
            assert edges[0].calls == [({"source": "a.jpg", "mode": "hard"}, "Bearer purge-secret")]
            edges[0].event.clear()
            assert httpx.delete(f"{origin.url}/a.jpg", headers=ADMIN).status_code == 204
            assert edges[0].event.wait(5)
            assert len(edges[0].calls) == 2


def test_failing_webhook_is_retried_then_logged(
    blob_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    flaky, broken = Edge(failures=2), Edge(failures=100)
    with ServerThread(flaky) as one, ServerThread(broken) as two:
        app = make_app(blob_dir, purge_webhooks=f"{one.url}/p,{two.url}/p")
        app.app.purge._backoff = 0.01  # type: ignore[attr-defined]
        with caplog.at_level(logging.WARNING, logger="origin.purge"), ServerThread(app) as origin:
            httpx.put(f"{origin.url}/a.jpg", content=jpeg(), headers=ADMIN)
            assert httpx.delete(f"{origin.url}/a.jpg", headers=ADMIN).status_code == 204
            assert flaky.event.wait(5)
            deadline = time.monotonic() + 5
            while len(broken.calls) < 4 and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.1)
            metrics = httpx.get(f"{origin.url}/metrics").text
    assert len(flaky.calls) == 3
    assert len(broken.calls) == 4
    failures = [r for r in caplog.records if r.getMessage() == "purge webhook failed"]
    assert len(failures) == 1
    assert failures[0].fields["problem"] == "HTTP 503"  # type: ignore[attr-defined]
    assert 'origin_purge_webhook_calls_total{result="ok"} 1.0' in metrics
    assert 'origin_purge_webhook_calls_total{result="failed"} 1.0' in metrics


def test_unreachable_webhook_does_not_fail_the_write(blob_dir: Path) -> None:
    app = make_app(blob_dir, purge_webhooks="http://127.0.0.1:9/_purge")
    with ServerThread(app) as origin:
        httpx.put(f"{origin.url}/a.jpg", content=jpeg(), headers=ADMIN)
        response = httpx.delete(f"{origin.url}/a.jpg", headers=ADMIN)
    assert response.status_code == 204  # every delivery failed; the write did not
