"""Running an ASGI app under uvicorn the same way for both services."""

from __future__ import annotations

import ctypes
import logging
import os
import socket

import uvicorn
from starlette.types import ASGIApp

log = logging.getLogger("serve")


M_ARENA_MAX = -8  # glibc mallopt parameter


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas before any worker thread starts.

    glibc gives threads their own arenas (up to 8 per core), and each keeps the high
    water mark of what its thread once decoded: measured on the edge, a flood of 5K
    JPEG transforms peaked at 835 MB RSS with the default and 404 MB with 2 arenas,
    at the same throughput (the fix libvips, sharp and imgproxy recommend). An
    operator's own MALLOC_ARENA_MAX wins.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_ARENA_MAX, arenas)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0 picks a free one), made before uvicorn starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def uvicorn_config(app: ASGIApp, **overrides: object) -> uvicorn.Config:
    """The server settings every benchmark and service shares: httptools + uvloop, no access
    log. An app with an `http_protocol` (the edge's, a subclass of uvicorn's httptools
    protocol that answers cache hits itself) is served with it."""
    options: dict[str, object] = {
        "loop": "uvloop",
        "http": getattr(app, "http_protocol", None) or "httptools",
        "lifespan": "on",
        "access_log": False,
        "log_config": None,
        "timeout_graceful_shutdown": 10,
        "server_header": False,
        # uvicorn's default trusts X-Forwarded-For from 127.0.0.1 and rewrites the
        # client address: the services name their client themselves (the edge from
        # EDGE_TRUSTED_PROXIES), so a header never chooses whose budget is spent
        "proxy_headers": False,
    }
    options.update(getattr(app, "uvicorn_options", None) or {})
    options.update(overrides)
    return uvicorn.Config(app, **options)  # type: ignore[arg-type]


def serve(
    app: ASGIApp,
    host: str,
    port: int,
    *,
    name: str,
    grace_s: float = 10,
    sock: socket.socket | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT: then stop accepting, give requests in flight `grace_s`
    to finish, and run the app's shutdown (flush writes, close pools). `sock`: a
    listening socket made elsewhere (a supervisor's, shared by its processes)."""
    sock = sock or bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    server = uvicorn.Server(uvicorn_config(app, timeout_graceful_shutdown=grace_s))
    log.info(
        "listening",
        extra={"fields": {"service": name, "url": f"http://{bound_host}:{bound_port}"}},
    )
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled: no traceback
        log.info("stopped", extra={"fields": {"service": name}})
        raise SystemExit(130) from None  # the shell's code for "ended by SIGINT"
