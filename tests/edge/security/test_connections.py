"""Hostile connections against a real edge over real sockets: idle, slowloris, a huge
head, more connections than allowed, idle keep-alive. Each is cut off within its limit
while hits on other connections go on being answered."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.edge.countingorigin import Blob, CountingOrigin
from tests.edge.edges import edge_for, metric
from tests.images import jpeg
from tests.servers import ServerThread

PATH = "/_/w=40/a.jpg"
REQUEST = f"GET {PATH} HTTP/1.1\r\nHost: edge\r\n\r\n".encode()


@pytest.fixture
def origin() -> Iterator[ServerThread]:
    with ServerThread(CountingOrigin({"a.jpg": Blob(jpeg(120, 80))})) as server:
        yield server


def connect(edge: ServerThread) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", edge.port), timeout=5)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything until the edge closes the connection."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def a_hit_is_answered(edge: ServerThread) -> None:
    started = time.monotonic()
    answer = httpx.get(edge.url + PATH)
    assert answer.status_code == 200 and answer.headers["cache-status"].endswith("memory")
    assert time.monotonic() - started < 1


@pytest.mark.parametrize("protocol_hits", [True, False])
def test_an_idle_connection_gets_408_and_is_closed(origin: Any, protocol_hits: bool) -> None:
    with edge_for(origin, header_timeout_s=0.5, protocol_hits=protocol_hits) as edge:
        httpx.get(edge.url + PATH)
        with connect(edge) as idle:
            started = time.monotonic()
            answer = read_all(idle)
            assert answer.startswith(b"HTTP/1.1 408 ")
            assert 0.4 < time.monotonic() - started < 2
        a_hit_is_answered(edge)
        assert metric(edge, 'edge_connections_closed_total{reason="header_timeout"}') == 1


def test_a_slowloris_head_is_cut_off_while_hits_flow(origin: Any) -> None:
    with edge_for(origin, header_timeout_s=1) as edge:
        httpx.get(edge.url + PATH)
        with connect(edge) as slow:
            slow.sendall(b"GET " + PATH.encode() + b" HTTP/1.1\r\n")
            started = time.monotonic()
            closed = False
            for i in range(40):  # a header byte every 0.1 s: never a whole head
                try:
                    slow.sendall(b"X-Slow-%d: y\r\n" % i)
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                    break
                a_hit_is_answered(edge)
                time.sleep(0.1)
            answer = b"" if closed else read_all(slow)
            assert closed or answer.startswith(b"HTTP/1.1 408 ")
            assert time.monotonic() - started < 2.5


def test_a_keep_alive_request_gets_its_own_head_timer(origin: Any) -> None:
    with edge_for(origin, header_timeout_s=0.5, keepalive_timeout_s=30) as edge:
        httpx.get(edge.url + PATH)
        with connect(edge) as sock:
            sock.sendall(REQUEST)
            first = sock.recv(65536)
            assert first.startswith(b"HTTP/1.1 200 ")
            time.sleep(0.7)  # idle between requests is the keep-alive's business
            sock.sendall(b"GET " + PATH.encode())  # the next head starts, and stalls
            started = time.monotonic()
            assert read_all(sock).startswith(b"HTTP/1.1 408 ")
            assert time.monotonic() - started < 1.5


@pytest.mark.parametrize("protocol_hits", [True, False])
def test_a_huge_head_gets_431_without_being_read(origin: Any, protocol_hits: bool) -> None:
    with edge_for(origin, max_header_kb=16, protocol_hits=protocol_hits) as edge:
        httpx.get(edge.url + PATH)
        with connect(edge) as sock:
            sock.sendall(b"GET " + PATH.encode() + b" HTTP/1.1\r\nX-Big: ")
            sent = 0
            try:
                for _ in range(64 * 1024):  # up to 64 MiB, a KiB at a time
                    sock.sendall(b"a" * 1024)
                    sent += 1024
            except (BrokenPipeError, ConnectionResetError):
                pass
            answer = read_all(sock)
            assert sent < 8 * 1024 * 1024  # cut off long before the end
            assert answer == b"" or answer.startswith(b"HTTP/1.1 431 ")
        a_hit_is_answered(edge)
        assert metric(edge, 'edge_connections_closed_total{reason="header_too_large"}') == 1


def test_a_head_just_under_the_limit_is_served(origin: Any) -> None:
    with edge_for(origin, max_header_kb=16) as edge:
        answer = httpx.get(edge.url + PATH, headers={"X-Pad": "p" * 15_000})
        assert answer.status_code == 200


def test_connections_over_the_cap_are_closed_and_the_others_keep_working(origin: Any) -> None:
    with edge_for(origin, max_connections=4) as edge:
        httpx.get(edge.url + PATH)  # its connection is closed by the time we go on
        time.sleep(0.1)
        held = [connect(edge) for _ in range(4)]
        try:
            extra = connect(edge)
            extra.sendall(REQUEST)
            assert read_all(extra) == b""  # closed without an answer
            extra.close()
            held[0].sendall(REQUEST)
            assert held[0].recv(65536).startswith(b"HTTP/1.1 200 ")
        finally:
            for sock in held:
                sock.close()
        time.sleep(0.1)
        a_hit_is_answered(edge)  # room again
        assert metric(edge, 'edge_connections_closed_total{reason="max_connections"}') >= 1


def test_an_idle_keep_alive_connection_is_closed(origin: Any) -> None:
    with edge_for(origin, keepalive_timeout_s=0.3) as edge:
        httpx.get(edge.url + PATH)
        with connect(edge) as sock:
            sock.sendall(REQUEST)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
            started = time.monotonic()
            assert read_all(sock) == b""
            assert time.monotonic() - started < 1.5


def test_an_idle_flood_from_one_host_takes_only_its_share(origin: Any) -> None:
    """One host opening connections and sending nothing (here 127.0.0.2) gets at most
    its per-client cap; hits from another host (127.0.0.1) are answered throughout."""
    with edge_for(origin, max_connections_per_client=20, header_timeout_s=30) as edge:
        httpx.get(edge.url + PATH)
        flood = []
        try:
            for _ in range(60):
                sock = socket.socket()
                sock.bind(("127.0.0.2", 0))
                sock.settimeout(5)
                sock.connect(("127.0.0.1", edge.port))
                flood.append(sock)
            time.sleep(0.2)
            a_hit_is_answered(edge)
            refused = metric(edge, 'edge_connections_closed_total{reason="per_client"}')
            assert refused == 40
            flood[0].sendall(REQUEST)  # the admitted ones still work
            assert flood[0].recv(65536).startswith(b"HTTP/1.1 200 ")
        finally:
            for sock in flood:
                sock.close()
