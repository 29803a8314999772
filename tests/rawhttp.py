"""Exact bytes over a socket, for requests an HTTP client would normalise (`..`, `%2e`)."""

from __future__ import annotations

import socket


def raw_request(port: int, request: bytes, timeout: float = 10) -> tuple[int, bytes]:
    """Send `request` as is; return the status code and the raw response."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        response = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            response += chunk
    status = int(response.split(b" ", 2)[1])
    return status, response


def get(
    port: int, target: bytes, method: bytes = b"GET", headers: bytes = b""
) -> tuple[int, bytes]:
    return raw_request(
        port,
        method
        + b" "
        + target
        + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        + headers
        + b"\r\n",
    )
