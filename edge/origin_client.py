"""Getting source bytes: one pooled client for the origin, one guarded client for remote URLs.

The origin client is aiohttp (C-accelerated parser): every transform miss fetches a
source, and a 350 KB body costs ~0.5 ms of event-loop CPU there against ~1.9 ms through
httpx/h11, whose pure-Python parsing was two thirds of the loop's work in the transform
benchmark. Remote URLs keep httpx, whose connection pool takes the SSRF-guarded network
backend (edge/security/netguard.py); they are the rarer path.

Every failure is mapped here, in one place, to the edge's errors:
404/410 from upstream -> 404; 400 -> 400; other 4xx -> 502 (a configuration problem
between edge and upstream, not the client's); 5xx -> 502; unreachable -> 502;
timeouts -> 504; a body over EDGE_MAX_SRC_MB -> 413 (from Content-Length up front,
else while streaming).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import httpx
from multidict import CIMultiDict
from yarl import URL

from cdn_common.errors import (
    BadGateway,
    BadRequest,
    GatewayTimeout,
    NotFound,
    PayloadTooLarge,
)
from cdn_common.http import digits
from cdn_common.logs import REQUEST_ID
from edge.clock import Clock, system_clock
from edge.routes import OriginSource, Source
from edge.security.netguard import IP, ForbiddenAddress, guarded_transport, public_address
from edge.security.sources import host_allowed

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
    except (httpx.TimeoutException, TimeoutError):  # aiohttp's timeouts are TimeoutErrors
        raise GatewayTimeout(f"{what} timed out") from None
    except (httpx.InvalidURL, aiohttp.InvalidURL):
        raise BadRequest("invalid source URL") from None
    except httpx.TooManyRedirects:
        raise BadGateway(f"{what} redirected too often") from None
    except (httpx.HTTPError, aiohttp.ClientError):
        raise BadGateway(f"{what} unreachable") from None


def _check_status(status: int, what: str) -> None:
    if status < 300:
        return
    if status in (404, 410):
        raise NotFound("source not found")
    if status == 400:
        raise BadRequest(f"{what} refused the source path")
    raise BadGateway(f"{what} answered {status}")


def _lines(headers: Mapping[str, str], name: str) -> str | None:
    """Every line of a field as one list (RFC 9110 §5.3): aiohttp's multidict and httpx's
    Headers both yield each line from `items()` (httpx joins them with ", ")."""
    found = [value for key, value in headers.items() if key.lower() == name]
    return ", ".join(found) if found else None


def _fetched(
    headers: Mapping[str, str],
    body: bytes,
    started: float,
    received: float,
    *,
    not_modified: bool = False,
) -> Fetched:
    # an upstream edge states the entry's own freshness in CDN-Cache-Control (RFC 9213)
    return Fetched(
        body=body,
        content_type=headers.get("content-type", "application/octet-stream"),
        etag=headers.get("etag"),
        last_modified=headers.get("last-modified"),
        cache_control=_lines(headers, "cdn-cache-control") or _lines(headers, "cache-control"),
        expires=_lines(headers, "expires"),
        seconds=time.monotonic() - started,
        received=received,
        not_modified=not_modified,
        cache_status=headers.get("cache-status"),
    )


@dataclass(frozen=True, slots=True)
class Proxied:
    """An origin's whole answer on the identity route, with the RFC 9111 times."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    request_time: float
    response_time: float


class Fetcher:
    def __init__(
        self,
        origin_url: str,
        *,
        allowed_hosts: tuple[str, ...] = (),
        connect_timeout: float = 2.0,
        read_timeout: float = 10.0,
        remote_address_check: Callable[[IP], bool] = public_address,
        clock: Clock = system_clock,
        read_key: str | None = None,
    ) -> None:
        self.origin_url = origin_url
        self.clock = clock
        # for an origin whose reads are not public (ORIGIN_PUBLIC_READ=false)
        self._authorization = f"Bearer {read_key}" if read_key else None
        self.allowed_hosts = allowed_hosts
        # connect: waiting for a pooled connection or making one; sock_read: between reads
        self._origin_timeout = aiohttp.ClientTimeout(
            connect=connect_timeout, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._origin: aiohttp.ClientSession | None = None  # made on the loop, at first use
        timeout = httpx.Timeout(read_timeout, connect=connect_timeout, pool=connect_timeout)
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        self._remote = httpx.AsyncClient(
            timeout=timeout,
            limits=limits,
            transport=guarded_transport(remote_address_check),
            follow_redirects=True,
            max_redirects=MAX_REDIRECTS,
            event_hooks={"request": [self._check_redirect_host]},
        )

    @property
    def origin(self) -> aiohttp.ClientSession:
        if self._origin is None:
            self._origin = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=30),
                timeout=self._origin_timeout,
                cookie_jar=aiohttp.DummyCookieJar(),  # an origin's cookies are not ours
                # bytes as the origin sent them: the identity route stores and forwards
                # a Content-Encoding it negotiated with the client, and image fetches ask
                # for no encoding at all
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
                auto_decompress=False,
            )
        return self._origin

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
        request_headers = dict(headers or {})
        request_id = REQUEST_ID.get()
        if request_id is not None:  # the origin logs the same id (the first asker's)
            request_headers["x-request-id"] = request_id
        etag, modified = validators
        if etag:
            request_headers["if-none-match"] = etag
        if modified:
            request_headers["if-modified-since"] = modified
        started = time.monotonic()
        remaining = deadline - started
        if remaining <= 0:
            raise GatewayTimeout("deadline exceeded before fetching")
        read = _Reader(started, max_bytes, reserve, self.clock, conditional=bool(etag or modified))
        if via is not None:
            what, target = "parent edge", via
        elif isinstance(source, OriginSource):
            what, target = "origin", source.url(self.origin_url)
            if self._authorization is not None:
                request_headers["authorization"] = self._authorization
        else:
            async with (
                _upstream_errors("source"),
                asyncio.timeout(remaining),
                self._remote.stream("GET", source.url, headers=request_headers) as response,
            ):
                return await read(
                    "source", response.status_code, response.headers, response.aiter_bytes()
                )
        async with (
            _upstream_errors(what),
            asyncio.timeout(remaining),
            await self._get(URL(target, encoded=True), request_headers) as answer,
        ):
            return await read(what, answer.status, answer.headers, answer.content.iter_any())

    async def _get(self, url: URL, headers: dict[str, str]) -> aiohttp.ClientResponse:
        """GET from the origin (or a parent edge), once more if connecting failed. aiohttp
        itself sends a GET again when a pooled keep-alive connection turns out closed."""
        try:
            return await self.origin.get(url, headers=headers, allow_redirects=False)
        except aiohttp.ClientConnectorError:
            return await self.origin.get(url, headers=headers, allow_redirects=False)

    async def proxy(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        *,
        max_bytes: int,
        deadline: float,
        body: AsyncIterator[bytes] | None = None,
    ) -> Proxied:
        """`method target` (path and query, as the client sent them) on the origin, with
        the client's end-to-end headers; any status comes back, not raised."""
        url = URL(self.origin_url + target, encoded=True)
        sent = [(name, value) for name, value in headers]
        request_id = REQUEST_ID.get()
        if request_id is not None and not any(n == "x-request-id" for n, _ in sent):
            sent.append(("x-request-id", request_id))
        if self._authorization is not None and method in ("GET", "HEAD"):
            sent = [(n, v) for n, v in sent if n != "authorization"]
            sent.append(("authorization", self._authorization))
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise GatewayTimeout("deadline exceeded before fetching")
        request_time = self.clock()
        async with (
            _upstream_errors("origin"),
            asyncio.timeout(remaining),
            self.origin.request(
                method, url, headers=CIMultiDict(sent), data=body, allow_redirects=False
            ) as response,
        ):
            declared = response.headers.get("content-length", "")
            if digits(declared) and int(declared) > max_bytes:
                raise PayloadTooLarge("response is over the size limit")
            parts: list[bytes] = []
            size = 0
            async for chunk in response.content.iter_any():
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge("response is over the size limit")
                parts.append(chunk)
            raw = [(name.lower(), value) for name, value in response.raw_headers]
            return Proxied(response.status, raw, b"".join(parts), request_time, self.clock())

    async def origin_ready(self) -> bool:
        """The origin answers: our origin's /healthz, or any non-5xx from another HTTP
        origin (a sidecar's application serves static files, not /healthz)."""
        try:
            async with self.origin.get(
                f"{self.origin_url}/healthz", timeout=aiohttp.ClientTimeout(total=2.0)
            ) as response:
                return response.status < 500
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def close(self) -> None:
        if self._origin is not None:
            await self._origin.close()
        await self._remote.aclose()


class _Reader:
    """Status check, size limits and `reserve` over a response's body chunks, for either
    client."""

    def __init__(
        self,
        started: float,
        max_bytes: int,
        reserve: Callable[[int], Awaitable[None]] | None,
        clock: Clock,
        *,
        conditional: bool,
    ) -> None:
        self.started = started
        self.clock = clock
        self.max_bytes = max_bytes
        self.reserve = reserve
        self.conditional = conditional

    async def __call__(
        self, what: str, status: int, headers: Mapping[str, str], chunks: AsyncIterator[bytes]
    ) -> Fetched:
        if status == 304 and self.conditional:
            return _fetched(headers, b"", self.started, self.clock(), not_modified=True)
        _check_status(status, what)
        declared = headers.get("content-length")
        expected = int(declared) if declared is not None and digits(declared) else 0
        if expected > self.max_bytes:
            raise PayloadTooLarge("source is over the size limit")
        reserve = self.reserve
        if reserve is not None and expected:
            await reserve(expected)
        parts: list[bytes] = []
        size = 0
        async for chunk in chunks:
            size += len(chunk)
            if size > self.max_bytes:
                raise PayloadTooLarge("source is over the size limit")
            if reserve is not None and size > expected:
                await reserve(len(chunk))
            parts.append(chunk)
        return _fetched(headers, b"".join(parts), self.started, self.clock())
