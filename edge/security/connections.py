"""Connection discipline in the HTTP protocol, where bytes arrive, as nginx applies it.

uvicorn's httptools protocol has no time limit on a request head, no size limit on it
(a 128 MiB header was buffered, with quadratic copying, before any answer) and no
limit on connections. `GuardedProtocol` adds, per process:

- a head timeout (`EDGE_HEADER_TIMEOUT_S`): a connection has that long from its start,
  or from the first byte of its next request, to send a whole request head; then it
  gets 408 and is closed (nginx's `client_header_timeout`). An idle connection that
  never sends a byte is closed the same way, and one between requests by uvicorn's
  keep-alive timeout (`EDGE_KEEPALIVE_TIMEOUT_S`).
- a head size limit (`EDGE_MAX_HEADER_KB`), counted as bytes arrive: past it the
  connection gets 431 and is closed, without reading or buffering the rest.
- a connection cap (`EDGE_MAX_CONNECTIONS`): a connection over it is closed at once,
  before any byte is read, while established ones carry on; and a cap per peer address
  (`EDGE_MAX_CONNECTIONS_PER_CLIENT`, as nginx's `limit_conn`), so one host's idle flood
  cannot take every slot (peers in `EDGE_TRUSTED_PROXIES` are not capped: they carry
  everyone's connections).

`edge/protocol.py` builds the hit path on top; both paths (hits answered in the
protocol and requests handed to the ASGI app) pass through these checks.
"""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

FD_RESERVE = 512  # descriptors kept for files, sockets to the origin, workers
DRAIN_IDLE_S = 1.0  # an idle connection at shutdown waits this long for a request in flight


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    header_timeout_s: float = 10.0
    max_header_bytes: int = 16 * 1024
    max_connections: int = 10_000
    per_client: int = 0  # 0: no cap per peer
    uncapped: Callable[[str], bool] = lambda peer: False  # peers exempt from `per_client`


@dataclass(slots=True)
class ConnectionStats:
    refused: int = 0  # over the connection cap
    refused_per_client: int = 0  # over the cap per peer
    head_timeouts: int = 0  # 408
    heads_too_large: int = 0  # 431


def _answer(status: bytes, text: bytes) -> bytes:
    return (
        b"HTTP/1.1 %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"x-content-type-options: nosniff\r\ncache-control: no-store\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (status, len(text), text)
    )


REQUEST_TIMEOUT = _answer(b"408 Request Timeout", b"request head not received in time\n")
HEAD_TOO_LARGE = _answer(b"431 Request Header Fields Too Large", b"request head too large\n")


def allowed_connections(wanted: int) -> int:
    """Raise this process's descriptor limit as far as the hard limit allows, and the
    connection cap that then leaves `FD_RESERVE` descriptors for everything else."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, wanted + FD_RESERVE)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return max(1, min(wanted, soft - FD_RESERVE))


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above (set on a subclass made by
    `guarded_protocol`: uvicorn makes its protocols itself, with no arguments of ours)."""

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    stats: ClassVar[ConnectionStats]
    per_peer: ClassVar[dict[str, int]]  # open connections by peer address
    _peer: str | None = None
    _head_timer: asyncio.TimerHandle | None = None
    _head_deadline = 0.0
    _head_bytes = 0
    _awaiting_head = False
    _draining = False  # shutting down: no request after the one in hand

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            self.stats.refused += 1
            self._cut(transport)
            return
        if self.limits.per_client:
            address = transport.get_extra_info("peername")
            peer = str(address[0]) if address else ""
            if not self.limits.uncapped(peer):
                count = self.per_peer.get(peer, 0)
                if count >= self.limits.per_client:
                    self.stats.refused_per_client += 1
                    self._cut(transport)
                    return
                self.per_peer[peer] = count + 1
                self._peer = peer
        super().connection_made(transport)
        self._await_head()

    def _cut(self, transport: asyncio.Transport) -> None:
        self.transport = transport  # what connection_lost closes
        transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        if self._peer is not None:
            left = self.per_peer[self._peer] - 1
            if left:
                self.per_peer[self._peer] = left
            else:
                del self.per_peer[self._peer]
            self._peer = None
        super().connection_lost(exc)

    def _await_head(self) -> None:
        """A request head is due by `header_timeout_s` from now. One timer per
        connection checks the deadline when it fires (and re-arms for what is left), so
        a keep-alive request costs a clock read, not a timer made and cancelled."""
        self._awaiting_head = True
        self._head_bytes = 0
        self._head_deadline = self.loop.time() + self.limits.header_timeout_s
        if self._head_timer is None:
            self._head_timer = self.loop.call_at(self._head_deadline, self._head_check)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _refuse(self, answer: bytes) -> None:
        """Answer and close; a response still being written for an earlier request
        on this connection is not interleaved with: the connection is just cut."""
        self._stop_head_timer()
        self._awaiting_head = False
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(answer)
            self.transport.close()
        else:
            self.transport.abort()

    def _head_check(self) -> None:
        self._head_timer = None
        if not self._awaiting_head:
            return  # answering, or idle between requests (uvicorn's keep-alive timeout)
        if self.loop.time() < self._head_deadline:
            self._head_timer = self.loop.call_at(self._head_deadline, self._head_check)
            return
        self.stats.head_timeouts += 1
        self._refuse(REQUEST_TIMEOUT)

    def data_received(self, data: bytes) -> None:
        if self._awaiting_head:
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self._head_over(data)
                return
        super().data_received(data)

    def _head_over(self, data: bytes) -> None:
        """`data` takes the head past its limit: feed only what fits while waiting; the
        head must end within it, or the answer is 431."""
        room = len(data) - (self._head_bytes - self.limits.max_header_bytes)
        self._head_bytes = self.limits.max_header_bytes
        super().data_received(data[:room])
        if self.transport.is_closing():
            return
        if self._awaiting_head:
            self.stats.heads_too_large += 1
            self._refuse(HEAD_TOO_LARGE)
            return
        self.data_received(data[room:])

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # a keep-alive or pipelined request: its head is timed too (inline: every request)
        self._awaiting_head = True
        self._head_bytes = 0
        self._head_deadline = self.loop.time() + self.limits.header_timeout_s
        if self._head_timer is None:
            self._head_timer = self.loop.call_at(self._head_deadline, self._head_check)

    def head_complete(self) -> None:
        """The request head is in: its time and size limits no longer apply (the timer,
        if it fires meanwhile, finds nothing awaited)."""
        self._awaiting_head = False

    def on_headers_complete(self) -> None:
        self.head_complete()
        super().on_headers_complete()
        if self._draining and self.cycle is not None:
            self.cycle.keep_alive = False  # answered with `Connection: close`, then closed

    def shutdown(self) -> None:
        """Graceful shutdown (SIGTERM, a reload's old process). A connection busy with a
        request closes after answering it, as uvicorn does. An idle one is not closed at
        once, as uvicorn does: a client may have sent its next request already, and a
        close crossing it fails that request ("server disconnected"; RFC 9112 9.3.1
        lets clients retry, httpx and many others do not). It is kept DRAIN_IDLE_S for
        such a request, which is answered with `Connection: close`, then closed."""
        self._draining = True
        if self.cycle is None or self.cycle.response_complete:
            self.loop.call_later(DRAIN_IDLE_S, self._close_if_idle)
        else:
            self.cycle.keep_alive = False

    def _close_if_idle(self) -> None:
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()


def guarded_protocol(limits: ConnectionLimits, stats: ConnectionStats) -> type[GuardedProtocol]:
    fields = {"limits": limits, "stats": stats, "per_peer": {}}
    return type("GuardedProtocol", (GuardedProtocol,), fields)
