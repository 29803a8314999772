"""Both services as operators run them (`python -m ...`, a real process): SIGTERM with
requests in flight cuts none of them, the disk tier's writes are flushed, a bad
configuration stops the start with one line, and every request logs one JSON line."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pyvips

from tests.edge.countingorigin import Blob, CountingOrigin
from tests.images import jpeg
from tests.servers import PythonService, ServerThread

WIDTHS = range(40, 48)


async def _get_all(url: str) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=30) as client:
        return await asyncio.gather(*(client.get(f"{url}/_/w={w}/a.jpg") for w in WIDTHS))


def test_sigterm_finishes_requests_in_flight_and_flushes_the_disk_tier(tmp_path: Path) -> None:
    origin = CountingOrigin({"a.jpg": Blob(jpeg(400, 200))}, delay=1.5)
    cache = tmp_path / "cache"
    with ServerThread(origin) as server:
        edge = PythonService(
            "edge",
            {"EDGE_ORIGIN_URL": server.url, "EDGE_CACHE_DIR": str(cache)},
            log=tmp_path / "edge.log",
        ).start()

        async def scenario() -> tuple[list[httpx.Response], BaseException | None, int]:
            requests = asyncio.ensure_future(_get_all(edge.url))
            await asyncio.sleep(0.5)  # all eight wait for the slow origin
            stopping = asyncio.get_running_loop().run_in_executor(None, edge.terminate)
            await asyncio.sleep(0.3)
            refused: BaseException | None = None
            try:
                async with httpx.AsyncClient(timeout=2) as client:
                    await client.get(f"{edge.url}/healthz")
            except httpx.ConnectError as error:
                refused = error
            return await requests, refused, await stopping

        responses, refused, code = asyncio.run(scenario())

    assert [r.status_code for r in responses] == [200] * len(WIDTHS)
    for width, response in zip(WIDTHS, responses, strict=True):
        assert pyvips.Image.new_from_buffer(response.content, "").width == width
    assert refused is not None  # no new connections once SIGTERM arrived
    # uvicorn re-raises the SIGTERM it caught once shutdown is complete (exit by the
    # signal, as process managers expect)
    assert code == -signal.SIGTERM
    files = [p for p in cache.rglob("*") if p.is_file()]
    assert len(files) == len(WIDTHS)  # every entry written before exit
    assert not [p for p in files if p.name.endswith(".tmp")]

    lines = [line for line in edge.lines() if line.get("path", "").startswith("/-/")]
    assert sorted(str(line["path"]) for line in lines) == [f"/-/w={w}/a.jpg" for w in WIDTHS]
    for line in lines:
        assert line["method"] == "GET" and line["status"] == 200
        assert line["bytes"] == len(responses[0].content) or int(line["bytes"]) > 0
        assert float(line["duration_ms"]) >= 1000  # waited for the 1.5 s origin
        assert str(line["cache"]).startswith("edge; fwd=uri-miss")
        assert float(line["transform_ms"]) > 0
        assert "time" in line
    # the one request that fetched the source says how long the origin took
    assert max(float(line.get("upstream_ms", 0)) for line in lines) >= 1400


async def _slow_body(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        await asyncio.sleep(0.2)
        yield chunk


def test_sigterm_lets_an_upload_in_flight_commit(tmp_path: Path) -> None:
    blobs = tmp_path / "blobs"
    origin = PythonService(
        "origin",
        {"ORIGIN_STORAGE": f"file://{blobs}", "ORIGIN_API_KEYS": "w:w-secret"},
        log=tmp_path / "origin.log",
    ).start()
    body = jpeg(300, 200)
    chunks = [body[i : i + len(body) // 5 + 1] for i in range(0, len(body), len(body) // 5 + 1)]

    async def scenario() -> tuple[httpx.Response, int]:
        async with httpx.AsyncClient(timeout=30) as client:
            upload = asyncio.ensure_future(
                client.put(
                    f"{origin.url}/up/a.jpg",
                    content=_slow_body(chunks),
                    headers={"Authorization": "Bearer w-secret"},
                )
            )
            await asyncio.sleep(0.3)
            code = await asyncio.get_running_loop().run_in_executor(None, origin.terminate)
            return await upload, code

    response, code = asyncio.run(scenario())
    assert response.status_code == 201
    assert code == -signal.SIGTERM
    assert (blobs / "up" / "a.jpg").read_bytes() == body


@pytest.mark.parametrize("module", ["edge", "origin"])
def test_a_bad_configuration_stops_the_start_with_one_line(module: str, tmp_path: Path) -> None:
    service = PythonService(
        module, {f"{module.upper()}_SHUTDOWN_GRACE_S": "soon"}, log=tmp_path / "log"
    )
    started = time.monotonic()
    with pytest.raises(RuntimeError):
        service.start()
    assert time.monotonic() - started < 15
    output = (tmp_path / "log").read_text().strip().splitlines()
    assert output == [
        f"{module}: invalid configuration: {module.upper()}_SHUTDOWN_GRACE_S "
        "(shutdown_grace_s): Input should be a valid number, unable to parse string as a "
        "number, got 'soon'"
    ]


def test_ctrl_c_stops_a_service_without_a_traceback(tmp_path: Path) -> None:
    service = PythonService(
        "origin",
        {"ORIGIN_STORAGE": f"file://{tmp_path}", "ORIGIN_ACCESS_LOG": "false"},
        log=tmp_path / "origin.log",
    ).start()
    assert service.process is not None
    service.process.send_signal(signal.SIGINT)
    assert service.process.wait(timeout=20) == 130
    assert "Traceback" not in (tmp_path / "origin.log").read_text()


def test_an_idle_keep_alive_connection_is_answered_not_cut_at_shutdown(tmp_path: Path) -> None:
    # a client that sends its next request on a kept-alive connection just after SIGTERM
    # gets an answer with `Connection: close`, not a closed socket (which fails requests
    # of clients that do not retry: a reload's old process would cut them)
    origin = CountingOrigin({"a.jpg": Blob(jpeg(400, 200))})
    with ServerThread(origin) as server:
        edge = PythonService(
            "edge", {"EDGE_ORIGIN_URL": server.url}, log=tmp_path / "edge.log"
        ).start()
        host, port = edge.url.removeprefix("http://").split(":")
        request = f"GET /_/w=40/a.jpg HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            conn.sendall(request)
            first = _response(conn)
            conn.sendall(request)  # a hit now, from memory
            second_hit = _response(conn)
            stopping = threading.Thread(target=edge.terminate)
            stopping.start()
            time.sleep(0.3)  # SIGTERM is in: the edge is draining
            conn.sendall(request)
            last = _response(conn)
            stopping.join(30)
    assert first.startswith(b"HTTP/1.1 200") and second_hit.startswith(b"HTTP/1.1 200")
    assert last.startswith(b"HTTP/1.1 200"), last[:200]
    assert b"\r\nconnection: close\r\n" in last.lower()


def _response(conn: socket.socket) -> bytes:
    """One whole response (head and Content-Length body), or what came before EOF."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(
            line.split(b":", 1)[1]
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
    )
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body
