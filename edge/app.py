"""The edge's ASGI app: routes a request to health, metrics, purge or the image flow.

An image request goes: URL -> `ImageRequest` (`routes`) -> `Ask` with its cache key
(`request`, `negotiate`, `keys`) -> tiers, or one coalesced fill (`serve`: `upstream`
fetches, `produce` with `transform` renders) -> the answer (`respond`). Exact-URL hits
never get here: `fastpath` (and `protocol`, inside the HTTP server) answer them first.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator

from starlette.types import Receive, Scope, Send

from cdn_common.asgi import HTTPMetrics, send_response, serve_lifespan
from cdn_common.errors import GatewayTimeout, MethodNotAllowed
from edge import hints
from edge.host import Host, SiblingsUnreachable, merge_expositions
from edge.keys import fast_key
from edge.origin_client import Fetcher
from edge.proxy import Proxy
from edge.purge import Purge
from edge.request import make_ask
from edge.respond import answer_fields, child_edge_control, send_entry
from edge.routes import ImageRequest, OriginSource, raw_source, redact
from edge.security.gate import Gate
from edge.serve import Server
from edge.settings import EdgeSettings

UNSAFE_METHODS = frozenset({"PUT", "POST", "DELETE", "PATCH"})
# Server-Timing names -> access-log fields (milliseconds)
TIMING_FIELDS = {"origin": "upstream_ms", "parent": "upstream_ms", "transform": "transform_ms"}


def classify(path: str) -> str:
    if path in ("/healthz", "/readyz"):
        return "health"
    if path == "/_purge":
        return "purge"
    if path == "/metrics":
        return "metrics"
    return "image"


def timing_fields(timing: str) -> dict[str, float]:
    """`origin;dur=12.5, transform;dur=3.1` -> {"upstream_ms": 12.5, "transform_ms": 3.1}."""
    fields = {}
    for part in timing.split(","):
        name, _, rest = part.strip().partition(";")
        field = TIMING_FIELDS.get(name)
        if field is not None and rest.startswith("dur="):
            with contextlib.suppress(ValueError):
                fields[field] = float(rest[4:])
    return fields


class EdgeApp:
    def __init__(
        self,
        settings: EdgeSettings,
        server: Server,
        fetcher: Fetcher,
        metrics: HTTPMetrics,
        gate: Gate,
        proxy: Proxy,
        host: Host | None = None,
    ) -> None:
        self.host = host  # the host's other edge processes, when there are any
        self.settings = settings
        self.server = server
        self.cache = server.cache
        self.fetcher = fetcher
        self.metrics = metrics
        self.gate = gate
        self.proxy = proxy
        self.purge = Purge(settings, server, self.gate, host)
        self.clock = server.clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send, self._close, self._start)
            return
        path: str = scope["path"]
        if path == "/healthz":
            await send_response(send, 200, b"ok\n", b"text/plain")
        elif path == "/readyz":
            problem = await self._unready()
            await send_response(send, 503 if problem else 200, problem or b"ready\n", b"text/plain")
        elif path == "/metrics":
            await send_response(send, 200, await self._metrics(), b"text/plain; version=0.0.4")
        elif path == "/_purge":
            if scope["method"] != "POST":
                raise MethodNotAllowed(headers={"Allow": "POST"})
            await self.purge(scope, receive, send)
        elif scope["method"] == "OPTIONS":
            await self._preflight(scope, send)
        else:
            await self._image(scope, receive, send)

    def _cors(self, headers: dict[bytes, bytes]) -> list[tuple[bytes, bytes]]:
        """Per-request CORS fields for a list of origins (`*` is in the entry itself)."""
        allowed = self.settings.cors_origins
        if not allowed or allowed == ("*",):
            return []
        origin = headers.get(b"origin")
        fields = [(b"vary", b"Origin")]
        if origin is not None and origin.decode("latin-1") in allowed:
            fields += [(b"access-control-allow-origin", origin), (b"timing-allow-origin", origin)]
        return fields

    async def _preflight(self, scope: Scope, send: Send) -> None:
        """A CORS preflight for an image URL (Fetch standard): which origin, methods and
        request headers may be used, cached by the browser for a day."""
        headers = dict(scope["headers"])
        origin = headers.get(b"origin", b"")
        allowed = self.settings.cors_origins
        fields = [(b"allow", b"GET, HEAD, OPTIONS")]
        if "*" in allowed or origin.decode("latin-1") in allowed:
            fields += [
                (b"access-control-allow-origin", b"*" if "*" in allowed else origin),
                (b"access-control-allow-methods", b"GET, HEAD, OPTIONS"),
                (b"access-control-max-age", b"86400"),
            ]
            asked = headers.get(b"access-control-request-headers")
            if asked:
                fields.append((b"access-control-allow-headers", asked))
            if "*" not in allowed:
                fields.append((b"vary", b"Origin"))
        await send_response(send, 204, b"", b"text/plain", fields)

    async def _metrics(self) -> bytes:
        """This process's series, or with siblings the host's (summed)."""
        own = self.metrics.render()
        if self.host is None:
            return own
        theirs: list[str] = await self.host.ask_all("metrics", {}, strict=False)
        merged: str = merge_expositions([own.decode(), *theirs])
        return merged.encode()

    async def _unready(self) -> bytes:
        """Why this node should not get traffic yet, or b"" when it should: with sibling
        processes, when any of them would say so, or fewer of them answer than run."""
        problem = await self._own_problem()
        if problem or self.host is None:
            return problem.encode()
        try:
            theirs = await self.host.ask_all("ready", {})
        except SiblingsUnreachable as error:
            return f"edge process not answering ({error})\n".encode()
        problems: list[str] = [p for p in theirs if p]
        if problems:
            return problems[0].encode()
        if len(theirs) + 1 < self.host.processes:
            return f"{len(theirs) + 1} of {self.host.processes} edge processes up\n".encode()
        return b""

    async def _own_problem(self, _: object = None) -> str:
        if not await self.fetcher.origin_ready():
            return "origin unreachable\n"
        disk = self.cache.disk
        if disk is not None and not await disk.writable():
            return "disk cache not writable\n"
        return ""

    async def _own_metrics(self, _: object = None) -> str:
        return self.metrics.render().decode()

    async def _start(self) -> None:
        # everything loaded so far lives as long as the process: keep it out of the
        # collector's generations, so collections stay proportional to request garbage
        gc.collect()
        gc.freeze()
        await self.cache.start()
        if self.host is not None:
            self.host.on("purge", self.purge.from_sibling)
            self.host.on("metrics", self._own_metrics)
            self.host.on("ready", self._own_problem)
            await self.host.start()  # last: the supervisor takes the socket for "ready"

    async def _close(self) -> None:
        if self.host is not None:
            await self.host.stop()
        await self.cache.flush()
        await self.cache.close()
        await self.fetcher.close()
        self.server.pool.close()

    async def _image(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_bytes: bytes = scope.get("raw_path") or scope["path"].encode()
        scope["log"]["path"] = redact(raw_bytes.decode("utf-8", "replace").split("?", 1)[0])
        headers = dict(scope["headers"])
        path, request, hinted = self.gate.admit(raw_bytes, headers)
        method = scope["method"]
        source = request.source
        if request.spec.is_identity and isinstance(source, OriginSource):
            await self._identity(scope, receive, send, path, source, request)
            return
        if method not in ("GET", "HEAD"):
            raise MethodNotAllowed(headers={"Allow": "GET, HEAD"})
        await self._transformed(scope, receive, send, raw_bytes, request, hinted)

    async def _identity(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        path: str,
        source: OriginSource,
        request: ImageRequest,
    ) -> None:
        """`/_/_/{path}`: the origin through the RFC 9111 cache (`edge/proxy.py`)."""
        method = scope["method"]
        query = scope.get("query_string", b"").decode("latin-1")
        target = "/" + raw_source(path) + (f"?{query}" if query else "")
        if method in ("GET", "HEAD"):
            raw_bytes: bytes = scope.get("raw_path") or scope["path"].encode()

            async def render() -> None:
                await self._transformed(scope, receive, send, raw_bytes, request)

            async with _deadline(self.settings.deadline_s + 1):
                await self.proxy.get(scope, send, source.id, target, render)
            return
        allowed = self.settings.passthrough_methods  # the operator's choice
        if method not in allowed or method not in UNSAFE_METHODS:
            raise MethodNotAllowed(headers={"Allow": ", ".join(allowed)})
        await self.proxy.forward(scope, receive, send, target)

    async def _transformed(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        raw_bytes: bytes,
        request: ImageRequest,
        hinted: bool = False,
    ) -> None:
        headers = dict(scope["headers"])
        client = self.gate.client(scope.get("client"), headers.get(b"x-forwarded-for"))
        ask = make_ask(raw_bytes, headers, request, self.settings.deadline_s, client)
        ask.gone = lambda: _disconnected(receive)
        async with _deadline(self.settings.deadline_s + 1):
            entry, status, timing = await self.server.answer(ask, self.gate.budget)
        scope["log"]["cache"] = status
        scope["log"].update(timing_fields(timing))
        now = self.clock()
        if entry.status == 200 and not hinted:  # a hinted path's answer depends on headers
            self.cache.learn_route(entry, fast_key(ask.raw, ask.klass) if ask.auto else ask.raw)
        fields = answer_fields(entry, status.encode(), timing.encode(), now)
        fields += self._cors(headers)
        if hinted:
            fields.append((b"vary", hints.VARY))
        if ask.from_edge:
            fields.append(child_edge_control(entry, now))
        await send_entry(
            send,
            entry,
            fields,
            head=scope["method"] == "HEAD",
            if_none_match=headers.get(b"if-none-match"),
        )


@contextlib.asynccontextmanager
async def _deadline(seconds: float) -> AsyncIterator[None]:
    """The request's overall deadline: 504 past it, never a 500."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise GatewayTimeout("deadline exceeded") from None


async def _disconnected(receive: Receive) -> None:
    """Returns when the client has gone (a GET's request message comes first)."""
    while (await receive())["type"] != "http.disconnect":
        pass
