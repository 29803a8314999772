"""A tiny origin for cache tests: serves images from a dict, counts what it is asked,
answers conditional requests, and can be told to fail. Served over a real socket."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field

from starlette.types import Receive, Scope, Send

from cdn_common.http import http_date


@dataclass
class Blob:
    body: bytes
    cache_control: str = "public, max-age=3600"
    content_type: str = "image/jpeg"
    modified: float = 1_700_000_000.0

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.body).hexdigest()[:16] + '"'


@dataclass
class CountingOrigin:
    blobs: dict[str, Blob] = field(default_factory=dict)
    gets: int = 0
    conditional: int = 0
    not_modified: int = 0
    fail_with: int | None = None  # answer every request with this status
    delay: float = 0.0  # seconds before answering a blob request
    request_ids: list[str] = field(default_factory=list)  # X-Request-ID of each blob GET

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/healthz":
            await self._send(send, 200, b"ok", [])
            return
        self.gets += 1
        self.request_ids += [v.decode() for k, v in scope["headers"] if k == b"x-request-id"]
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_with is not None:
            await self._send(send, self.fail_with, b"failing", [])
            return
        blob = self.blobs.get(scope["path"].lstrip("/"))
        if blob is None:
            await self._send(send, 404, b"no such blob", [])
            return
        headers = [
            (b"etag", blob.etag.encode()),
            (b"cache-control", blob.cache_control.encode()),
            (b"last-modified", http_date(blob.modified).encode()),
        ]
        request = dict(scope["headers"])
        if b"if-none-match" in request:
            self.conditional += 1
            if request[b"if-none-match"].decode() == blob.etag:
                self.not_modified += 1
                await self._send(send, 304, b"", headers)
                return
        headers.append((b"content-type", blob.content_type.encode()))
        await self._send(send, 200, blob.body, headers)

    @staticmethod
    async def _send(
        send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        if status != 304:
            headers = [*headers, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
