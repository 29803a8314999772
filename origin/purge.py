"""Telling edges a blob changed: POST to each `ORIGIN_PURGE_WEBHOOKS` URL, off the request path.

Each call is a background task with its own retries (exponential backoff on
connection errors and 5xx; a 4xx is final). Failures are logged and counted, never
raised into the request that caused them.
"""

from __future__ import annotations

import asyncio
import logging

import httpx
from prometheus_client import CollectorRegistry, Counter

log = logging.getLogger("origin.purge")
ATTEMPTS = 4
FIRST_BACKOFF = 0.25


class PurgeNotifier:
    def __init__(
        self,
        urls: tuple[str, ...],
        token: str | None,
        registry: CollectorRegistry,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        backoff: float = FIRST_BACKOFF,
    ) -> None:
        self.urls = urls
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(5.0), transport=transport)
        self._tasks: set[asyncio.Task[None]] = set()
        self._backoff = backoff
        self.calls = Counter(
            "origin_purge_webhook_calls",
            "Purge webhook deliveries by result (ok, failed).",
            ["result"],
            registry=registry,
        )

    def blob_changed(self, key: str) -> None:
        """Schedule a purge of `key` (all its variants) on every edge; returns at once."""
        for url in self.urls:
            task = asyncio.create_task(self._deliver(url, key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, url: str, key: str) -> None:
        body = {"source": key, "mode": "hard"}
        problem = ""
        for attempt in range(ATTEMPTS):
            if attempt:
                await asyncio.sleep(self._backoff * 2 ** (attempt - 1))
            try:
                response = await self._client.post(url, json=body, headers=self._headers)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code < 300:
                self.calls.labels("ok").inc()
                return
            problem = f"HTTP {response.status_code}"
            if response.status_code < 500:
                break
        self.calls.labels("failed").inc()
        log.warning(
            "purge webhook failed",
            extra={"fields": {"url": url, "key": key, "problem": problem}},
        )

    async def drain(self, grace: float = 5.0) -> None:
        """Wait (bounded) for deliveries in flight, then close the client."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
        for task in self._tasks:
            task.cancel()
        await self._client.aclose()
