"""Hits answered inside uvicorn's HTTP protocol (edge/protocol.py), over real sockets:
the same response as the ASGI path, pipelining and keep-alive intact, and everything
the protocol must not answer left to the full app."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any, BinaryIO

import httpx
import pytest

from tests.edge.countingorigin import Blob, CountingOrigin
from tests.edge.edges import edge_for, metric
from tests.images import jpeg
from tests.servers import ServerThread

PATH = "/_/w=40/a.jpg"
PER_REQUEST = {"date", "age", "server-timing"}


@pytest.fixture
def origin() -> Iterator[tuple[CountingOrigin, ServerThread]]:
    app = CountingOrigin({"a.jpg": Blob(jpeg(120, 80))})
    with ServerThread(app) as server:
        yield app, server


def protocol_hits(edge: ServerThread) -> float:
    return metric(edge, "edge_protocol_hits_total")


def read_response(stream: BinaryIO, head: bool = False) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response off a socket's buffered reader (Content-Length framed)."""
    status_line = stream.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    headers: dict[str, str] = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        assert name.lower() not in headers, f"{name} sent twice"
        headers[name.lower()] = value.strip()
    body = b"" if head else stream.read(int(headers["content-length"]))
    return int(status_line.split()[1]), headers, body


def request(path: str, method: str = "GET", extra: str = "") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: edge\r\n{extra}\r\n".encode()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_protocol_hit_is_the_response_the_app_gives(origin: Any, loop: str) -> None:
    _, server = origin
    answers = {}
    for on in (True, False):
        settings = {"protocol_hits": on, "cache_dir": f"cache-{on}"}
        with edge_for(server, loop, **settings) as edge, httpx.Client() as client:
            assert client.get(edge.url + PATH).headers["cache-status"].endswith("stored")
            hit = client.get(edge.url + PATH)
            head = client.head(edge.url + PATH)
            # on the same connection: a HEAD that sent its body would garble this one
            assert client.get(edge.url + PATH).content == hit.content
            answers[on] = (hit, head)
            assert protocol_hits(edge) == (3 if on else 0)
            assert metric(edge, 'edge_cache_results_total{result="memory"}') == 3
    (hit, head), (asgi_hit, asgi_head) = answers[True], answers[False]
    assert hit.status_code == head.status_code == 200
    assert hit.headers["cache-status"] == "edge; hit; detail=memory"
    assert hit.content == asgi_hit.content and head.content == b""
    for ours, theirs in ((hit, asgi_hit), (head, asgi_head)):
        assert sorted(ours.headers) == sorted(theirs.headers)
        for name, value in theirs.headers.items():
            if name not in PER_REQUEST:
                assert ours.headers[name] == value, name
    assert head.headers["content-length"] == str(len(hit.content))
    assert hit.headers["date"].endswith(" GMT") and int(hit.headers["age"]) >= 0
    assert hit.headers["server-timing"] == "cache;desc=memory"  # no dur on fast hits


def test_every_path_answers_a_hit_with_the_same_header_names(origin: Any) -> None:
    """The protocol path, the ASGI fast path and the full app (a conditional request
    that does not match goes there) all build a hit's head with `edge/respond.py`."""
    _, server = origin
    names = {}
    with edge_for(server) as edge, httpx.Client() as client:
        client.get(edge.url + PATH)
        names["protocol"] = sorted(client.get(edge.url + PATH).headers)
        full = client.get(edge.url + PATH, headers={"If-None-Match": '"other"'})
        assert full.headers["cache-status"] == "edge; hit; detail=memory"
        assert full.headers["server-timing"].startswith("cache;desc=memory;dur=")
        names["full app"] = sorted(full.headers)
    with edge_for(server, protocol_hits=False, cache_dir="asgi") as edge:
        httpx.get(edge.url + PATH)
        names["asgi fast path"] = sorted(httpx.get(edge.url + PATH).headers)
    assert names["protocol"] == names["full app"] == names["asgi fast path"]
    assert {"age", "cache-status", "server-timing", "etag"} <= set(names["protocol"])


def test_the_uvicorn_internals_the_hit_protocol_leans_on_are_still_there() -> None:
    """A canary: `HitProtocol` subclasses uvicorn's httptools protocol and uses attributes
    that are not uvicorn's public API. A uvicorn release that renames or drops one must
    fail here, loudly, rather than send broken responses."""
    import inspect

    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

    from edge.protocol import INTERNALS

    source = inspect.getsource(HttpToolsProtocol)
    for name in INTERNALS:
        assert f"self.{name} " in source or f"self.{name}:" in source, name
    for method in ("on_headers_complete", "on_response_complete", "connection_lost"):
        assert callable(getattr(HttpToolsProtocol, method, None)), method
    cycle = inspect.getsource(RequestResponseCycle)
    for name in ("response_complete", "disconnected", "keep_alive", "message_event"):
        assert f"self.{name} " in cycle or f"self.{name}:" in cycle, name
    assert "default_headers" in inspect.getsource(inspect.getmodule(HttpToolsProtocol))


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_pipelined_requests_keep_their_order_around_misses(origin: Any, loop: str) -> None:
    app, server = origin
    with edge_for(server, loop) as edge:
        body = httpx.get(edge.url + PATH).content
        with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as sock:
            stream = sock.makefile("rb")
            # a hit, a miss that needs a transform, a hit queued behind it, a HEAD hit
            sock.sendall(
                request(PATH) + request("/_/w=30/a.jpg") + request(PATH) + request(PATH, "HEAD")
            )
            answers = [read_response(stream) for _ in range(3)]
            answers.append(read_response(stream, head=True))
            assert [a[0] for a in answers] == [200, 200, 200, 200]
            statuses = [a[1]["cache-status"] for a in answers]
            assert statuses[0] == statuses[2] == statuses[3] == "edge; hit; detail=memory"
            assert statuses[1] == "edge; fwd=uri-miss; stored"
            assert answers[0][2] == answers[2][2] == body
            assert answers[1][2] != body and answers[1][1]["content-type"] == "image/jpeg"
            assert answers[3][2] == b"" and answers[3][1]["content-length"] == str(len(body))
            # the connection stays usable
            sock.sendall(request(PATH))
            assert read_response(stream)[2] == body
        # the first and the last; the two read while the miss was rendering queued behind it
        assert protocol_hits(edge) == 2
    assert app.gets == 1  # the miss used the cached source


def test_what_the_protocol_leaves_to_the_app(origin: Any) -> None:
    _, server = origin
    with edge_for(server) as edge:
        first = httpx.get(edge.url + PATH)
        before = protocol_hits(edge)
        with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as sock:
            stream = sock.makefile("rb")
            # a query string: a hit, through the ASGI fast path
            sock.sendall(request(PATH + "?v=1"))
            status, headers, body = read_response(stream)
            assert (status, headers["cache-status"], body) == (
                200,
                "edge; hit; detail=memory",
                first.content,
            )
            # a conditional request: 304 from the full app
            sock.sendall(request(PATH, extra=f"If-None-Match: {first.headers['etag']}\r\n"))
            status, headers, body = read_response(stream, head=True)
            assert status == 304
            # Connection: close is honoured: the app answers and the server closes
            sock.sendall(request(PATH, extra="Connection: close\r\n"))
            status, headers, body = read_response(stream)
            assert (status, headers.get("connection"), body) == (200, "close", first.content)
            assert stream.read() == b""
        with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as sock:
            sock.sendall(b"GET " + PATH.encode() + b" HTTP/1.0\r\n\r\n")
            reply = sock.makefile("rb").read()
            assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(first.content)
        assert protocol_hits(edge) == before


def test_disk_hits_take_the_protocol_path(origin: Any, tmp_path: Any) -> None:
    _, server = origin
    with edge_for(server, memory_cache_mb=0, cache_dir=str(tmp_path)) as edge:
        first = httpx.get(edge.url + PATH)
        deadline = time.monotonic() + 10
        # the disk write is in the background: the slow path answers until it lands
        while (hit := httpx.get(edge.url + PATH)).headers["cache-status"] != (
            "edge; hit; detail=disk"
        ):
            assert time.monotonic() < deadline, hit.headers["cache-status"]
            time.sleep(0.05)
        assert hit.content == first.content
        assert protocol_hits(edge) >= 1
        assert metric(edge, 'edge_cache_results_total{result="disk"}') >= protocol_hits(edge)
