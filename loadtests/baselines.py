"""Baseline servers for benchmarks: the same bytes from memory, under the same uvicorn settings.

python -m loadtests.baselines starlette|raw FILE PORT [PROCESSES]

With PROCESSES above 1, the socket is bound once and that many processes serve it (as
uvicorn's `--workers` and the edge's supervisor do).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from cdn_common.serve import bind, uvicorn_config


def starlette_app(body: bytes, content_type: str) -> ASGIApp:
    async def endpoint(request: Request) -> Response:
        return Response(body, media_type=content_type)

    return Starlette(routes=[Route("/{path:path}", endpoint)])


def raw_app(body: bytes, content_type: str) -> ASGIApp:
    return headers_app(
        body,
        [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())],
    )


def headers_app(body: bytes, headers: list[tuple[bytes, bytes]]) -> ASGIApp:
    """The minimal raw-ASGI app: the same two prebuilt messages for every request."""
    start = {"type": "http.response.start", "status": 200, "headers": headers}
    message = {"type": "http.response.body", "body": body}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await send(start)
            await send(message)

    return app


def main() -> None:
    import uvicorn

    kind, file, port = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    processes = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    make = {"starlette": starlette_app, "raw": raw_app}[kind]
    app = make(file.read_bytes(), "image/jpeg")
    sock = bind("127.0.0.1", port)
    children = []
    for _ in range(processes - 1):
        pid = os.fork()
        if pid == 0:
            break
        children.append(pid)
    try:
        uvicorn.Server(uvicorn_config(app, lifespan="off")).run(sockets=[sock])
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


if __name__ == "__main__":
    main()
