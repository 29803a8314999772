"""The Python a cache hit costs, under uvicorn's own HTTP protocol but without sockets.

    python -m loadtests.hitpath [--requests 20000] [--rounds 6]

Requests are fed to uvicorn's `HttpToolsProtocol` (the parser and ASGI cycle the
servers run) over a transport that drops what it is given, so what is timed is the
per-request work of the process alone: no kernel, no load generator on the other core.
That is steadier than requests/s on a shared machine and splits the hit path's cost
from the server's: the raw-ASGI baseline, the same raw app sending the edge's response
headers, an edge L1 hit and an edge L2 hit (L1 off), both answered in the edge's
protocol subclass, and an L1 hit through ASGI (EDGE_PROTOCOL_HITS=false), each the best
of `rounds` runs of process CPU time. (Under load each figure roughly doubles: syscalls,
wake-ups and caches shared with the load generator.)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from cdn_common.serve import uvicorn_config
from loadtests.baselines import headers_app, raw_app
from loadtests.bench_cache import PATH, small_jpeg
from tools.stack import Stack

REQUEST = b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % PATH.encode()


class NullTransport:
    """Takes writes and counts the responses started; the peer is always ready."""

    def __init__(self) -> None:
        self.responses = 0

    def write(self, data: bytes) -> None:
        self.responses += data.startswith(b"HTTP/1.1 ")

    def writelines(self, parts: tuple[bytes, ...]) -> None:
        self.write(parts[0])

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"sockname": ("127.0.0.1", 80), "peername": ("127.0.0.1", 5555)}.get(name, default)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def per_request_us(app: ASGIApp, requests: int) -> float:
    """CPU microseconds per request of `app` behind the protocol it is served with."""
    config = uvicorn_config(app, lifespan="off")
    config.load()
    kind: type[HttpToolsProtocol] = config.http_protocol_class  # type: ignore[assignment]
    protocol = kind(config, ServerState(), {}, asyncio.get_running_loop())
    transport = NullTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    for _ in range(200):  # warm up
        protocol.data_received(REQUEST)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    before = transport.responses
    started = time.process_time()
    for _ in range(requests):
        protocol.data_received(REQUEST)
        await asyncio.sleep(0)  # the request's task runs
        await asyncio.sleep(0)
    elapsed = time.process_time() - started
    if transport.responses - before != requests:
        raise RuntimeError(f"{transport.responses - before} responses to {requests} requests")
    return elapsed / requests * 1e6


class Edge:
    """An edge app run through its lifespan, its access log going to /dev/null."""

    def __init__(
        self, origin_url: str, cache_dir: Path, memory_mb: int, protocol_hits: bool = True
    ) -> None:
        from cdn_common.logs import AccessLog
        from edge.compose import build_app
        from edge.settings import EdgeSettings

        settings = EdgeSettings(
            origin_url=origin_url,
            memory_cache_mb=memory_mb,
            cache_dir=str(cache_dir),
            protocol_hits=protocol_hits,
        )
        self.app = build_app(settings)
        self._devnull = open("/dev/null", "wb")  # noqa: SIM115 - closed in stop()
        self.app.access_log = self.app.app.access_log = AccessLog(self._devnull)
        self._lifespan: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> list[tuple[bytes, bytes]]:
        """Started, with PATH in its cache; the response headers of a hit."""
        replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        async def answer(message: dict[str, Any]) -> None:
            await replies.put(message)

        self._task = asyncio.create_task(
            self.app({"type": "lifespan"}, self._lifespan.get, answer)  # type: ignore[arg-type]
        )
        await self._lifespan.put({"type": "lifespan.startup"})
        await replies.get()
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "GET",
            "path": PATH,
            "raw_path": PATH.encode(),
            "headers": [(b"host", b"127.0.0.1")],
            "query_string": b"",
            "client": ("127.0.0.1", 5555),
        }
        for _ in range(3):  # miss; then (after the disk write) the hit that learns the route
            sent.clear()
            await self.app(dict(scope), receive, send)  # type: ignore[arg-type]
            await asyncio.sleep(0.3)
        headers: list[tuple[bytes, bytes]] = sent[0]["headers"]
        return headers

    async def stop(self) -> None:
        await self._lifespan.put({"type": "lifespan.shutdown"})
        if self._task is not None:
            await self._task
        self._devnull.close()


async def measure(origin_url: str, root: Path, body: bytes, requests: int, rounds: int) -> None:
    l1 = Edge(origin_url, root / "l1", 256)
    l2 = Edge(origin_url, root / "l2", 0)
    asgi = Edge(origin_url, root / "asgi", 256, protocol_hits=False)
    headers = await l1.start()
    await l2.start()
    await asgi.start()
    apps: dict[str, ASGIApp] = {
        "raw ASGI": raw_app(body, "image/jpeg"),
        f"raw ASGI, the edge's {len(headers)} headers": headers_app(body, headers),
        "edge L1 hit": l1.app,
        "edge L2 hit": l2.app,
        "edge L1 hit, through ASGI": asgi.app,
    }
    gc.collect()
    gc.freeze()  # as the edge does after start-up
    best = dict.fromkeys(apps, float("inf"))
    for _ in range(rounds):  # alternated, so drift hits all
        for name, app in apps.items():
            best[name] = min(best[name], await per_request_us(app, requests))
    await l1.stop()
    await l2.stop()
    await asgi.stop()
    base = best["raw ASGI"]
    print("| server | CPU us per request | over raw ASGI |")
    print("|---|---|---|")
    for name, us in best.items():
        print(f"| {name} | {us:.1f} | {us - base:+.1f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        small_jpeg(root / "blobs" / "bench" / "photo.jpg")
        body = (root / "blobs" / "bench" / "photo.jpg").read_bytes()
        stack = Stack()
        try:
            origin = stack.start_origin(root / "blobs", 18391)
            uvloop.run(measure(origin.url, root, body, args.requests, args.rounds))
        finally:
            stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
