"""Getting source bytes: one pooled client for the origin, one guarded client for remote URLs.

Every failure is mapped here, in one place, to the edge's errors:
404/410 from upstream -> 404; 400 -> 400; other 4xx -> 502 (a configuration problem
between edge and upstream, not the client's); 5xx -> 502; unreachable -> 502;
timeouts -> 504; a body over EDGE_MAX_SRC_MB -> 413 (from Content-Length up front,
else while streaming).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from cdn_common.errors import (
    BadGateway,
    BadRequest,
    GatewayTimeout,
    NotFound,
    PayloadTooLarge,
)
from edge.netguard import IP, ForbiddenAddress, guarded_transport, public_address
from edge.urls import OriginSource, Source, host_allowed

MAX_REDIRECTS = 5
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade"}
)


@dataclass(frozen=True, slots=True)
class Fetched:
    body: bytes
    content_type: str
    etag: str | None
    last_modified: str | None
    cache_control: str | None
    expires: str | None
    seconds: float
    received: float = 0.0  # wall-clock time of the response (RFC 9111 response_time)
    not_modified: bool = False  # a 304 to a conditional request: no body
    cache_status: str | None = None  # an upstream edge's Cache-Status


@asynccontextmanager
async def _upstream_errors(what: str) -> AsyncIterator[None]:
    try:
        yield
    except (httpx.TimeoutException, TimeoutError):
        raise GatewayTimeout(f"{what} timed out") from None
    except httpx.InvalidURL:
        raise BadRequest("invalid source URL") from None
    except httpx.TooManyRedirects:
        raise BadGateway(f"{what} redirected too often") from None
    except httpx.HTTPError:
        raise BadGateway(f"{what} unreachable") from None


def _check_status(status: int, what: str) -> None:
    if status < 300:
        return
    if status in (404, 410):
        raise NotFound("source not found")
    if status == 400:
        raise BadRequest(f"{what} refused the source path")
    raise BadGateway(f"{what} answered {status}")


def _fetched(
    headers: httpx.Headers, body: bytes, started: float, *, not_modified: bool = False
) -> Fetched:
    # an upstream edge states the entry's own freshness in CDN-Cache-Control (RFC 9213)
    return Fetched(
        body=body,
        content_type=headers.get("content-type", "application/octet-stream"),
        etag=headers.get("etag"),
        last_modified=headers.get("last-modified"),
        cache_control=headers.get("cdn-cache-control") or headers.get("cache-control"),
        expires=headers.get("expires"),
        seconds=time.monotonic() - started,
        received=time.time(),
        not_modified=not_modified,
        cache_status=headers.get("cache-status"),
    )


class Fetcher:
    def __init__(
        self,
        origin_url: str,
        *,
        allowed_hosts: tuple[str, ...] = (),
        connect_timeout: float = 2.0,
        read_timeout: float = 10.0,
        origin_transport: httpx.AsyncBaseTransport | None = None,
        remote_address_check: Callable[[IP], bool] = public_address,
    ) -> None:
        self.origin_url = origin_url
        self.allowed_hosts = allowed_hosts
        timeout = httpx.Timeout(read_timeout, connect=connect_timeout, pool=connect_timeout)
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        self._origin = httpx.AsyncClient(
            timeout=timeout,
            limits=limits,
            # retries=1: one more try on connection errors (never after a request was sent)
            transport=origin_transport or httpx.AsyncHTTPTransport(retries=1, limits=limits),
        )
        self._remote = httpx.AsyncClient(
            timeout=timeout,
            limits=limits,
            transport=guarded_transport(remote_address_check),
            follow_redirects=True,
            max_redirects=MAX_REDIRECTS,
            event_hooks={"request": [self._check_redirect_host]},
        )

    async def _check_redirect_host(self, request: httpx.Request) -> None:
        if request.url.scheme not in ("http", "https") or not host_allowed(
            request.url.host, self.allowed_hosts
        ):
            raise ForbiddenAddress("source redirected to a host that is not allowed")

    async def fetch(
        self,
        source: Source,
        *,
        max_bytes: int,
        deadline: float,
        reserve: Callable[[int], Awaitable[None]] | None = None,
        validators: tuple[str | None, str | None] = (None, None),
        via: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Fetched:
        """The source's bytes. `reserve(n)` is awaited before n more bytes are read (from
        Content-Length up front, else chunk by chunk), so the caller can bound them.

        `validators` (ETag, Last-Modified) make it a conditional request: a 304 comes
        back as `not_modified` with no body. `via` replaces the URL (a parent edge)."""
        if via is not None:
            client, url, what = self._origin, via, "parent edge"
        elif isinstance(source, OriginSource):
            client, url, what = self._origin, source.url(self.origin_url), "origin"
        else:
            client, url, what = self._remote, source.url, "source"
        request_headers = dict(headers or {})
        etag, modified = validators
        if etag:
            request_headers["if-none-match"] = etag
        if modified:
            request_headers["if-modified-since"] = modified
        started = time.monotonic()
        remaining = deadline - started
        if remaining <= 0:
            raise GatewayTimeout("deadline exceeded before fetching")
        async with (
            _upstream_errors(what),
            asyncio.timeout(remaining),
            client.stream("GET", url, headers=request_headers) as response,
        ):
            if response.status_code == 304 and (etag or modified):
                return _fetched(response.headers, b"", started, not_modified=True)
            _check_status(response.status_code, what)
            declared = response.headers.get("content-length")
            expected = int(declared) if declared is not None and declared.isdigit() else 0
            if expected > max_bytes:
                raise PayloadTooLarge("source is over the size limit")
            if reserve is not None and expected:
                await reserve(expected)
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge("source is over the size limit")
                if reserve is not None and size > expected:
                    await reserve(len(chunk))
                chunks.append(chunk)
        return _fetched(response.headers, b"".join(chunks), started)

    async def forward(
        self,
        method: str,
        source: OriginSource,
        headers: dict[str, str],
        body: AsyncIterator[bytes],
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """An unsafe request passed through to the origin, body streamed; its answer."""
        async with _upstream_errors("origin"):
            response = await self._origin.request(
                method, source.url(self.origin_url), headers=headers, content=body
            )
        kept = [
            (name.lower(), value)
            for name, value in response.headers.raw
            if name.lower() not in HOP_BY_HOP
        ]
        return response.status_code, kept, response.content

    async def origin_ready(self) -> bool:
        """The origin answers: our origin's /healthz, or any non-5xx from another HTTP
        origin (a sidecar's application serves static files, not /healthz)."""
        try:
            response = await self._origin.get(f"{self.origin_url}/healthz", timeout=2.0)
        except httpx.HTTPError:
            return False
        return response.status_code < 500

    async def close(self) -> None:
        await self._origin.aclose()
        await self._remote.aclose()
