"""Work a client can no longer use is not done: a transform past its deadline is stopped
(504 in time, its worker killed and replaced), and transforms queued for clients that
all left are dropped before they start. A real edge with worker processes, over
sockets."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.edge.countingorigin import Blob, CountingOrigin
from tests.edge.edges import edge_for, metric, transforms
from tests.images import jpeg, noisy_jpeg
from tests.servers import ServerThread

TICKS = os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="module")
def slow_source() -> bytes:
    return noisy_jpeg(4000, 4000)  # blur=120 on it takes 1.5-3 s of one core


@pytest.fixture
def origin(slow_source: bytes) -> Iterator[ServerThread]:
    blobs = {"big.jpg": Blob(slow_source), "small.jpg": Blob(jpeg(80, 60))}
    with ServerThread(CountingOrigin(blobs)) as server:
        yield server


def children_cpu_s() -> float:
    """CPU seconds of this process's live child processes (the transform workers)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():  # ppid
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / TICKS


def test_a_transform_past_its_deadline_is_stopped_with_504(origin: ServerThread) -> None:
    with edge_for(origin, deadline_s=0.8) as edge:
        assert httpx.get(f"{edge.url}/_/w=40/small.jpg").status_code == 200  # workers up
        started = time.monotonic()
        answer = httpx.get(f"{edge.url}/_/blur=120/big.jpg", timeout=30)
        took = time.monotonic() - started
        assert answer.status_code == 504
        assert took < 0.8 + 1
        before = children_cpu_s()
        time.sleep(1.5)
        assert children_cpu_s() - before < 1  # nothing still burning the cores
        assert metric(edge, "edge_transforms_stopped_total") == 1
        assert httpx.get(f"{edge.url}/_/w=41/small.jpg").status_code == 200  # a new worker


def test_queued_transforms_whose_clients_left_are_dropped(origin: ServerThread) -> None:
    with edge_for(origin, workers=1, deadline_s=60) as edge:
        assert httpx.get(f"{edge.url}/_/w=40/small.jpg").status_code == 200
        before = transforms(edge)
        kept = socket.create_connection(("127.0.0.1", edge.port), timeout=30)
        kept.sendall(b"GET /_/blur=100/big.jpg HTTP/1.1\r\nHost: edge\r\n\r\n")
        time.sleep(0.5)  # it holds the one worker
        for blur in range(101, 106):  # five more, each sent and abandoned at once
            with socket.create_connection(("127.0.0.1", edge.port)) as gone:
                gone.sendall(b"GET /_/blur=%d/big.jpg HTTP/1.1\r\nHost: edge\r\n\r\n" % blur)
                time.sleep(0.05)
        assert kept.recv(100).startswith(b"HTTP/1.1 200 ")
        kept.close()
        for _ in range(50):
            if metric(edge, "edge_transforms_abandoned_total") == 5:
                break
            time.sleep(0.1)
        assert metric(edge, "edge_transforms_abandoned_total") == 5
        assert transforms(edge) - before == 1
        # nothing of the dropped work is remembered: the next client gets the image
        again = httpx.get(f"{edge.url}/_/blur=101/big.jpg", timeout=30)
        assert again.status_code == 200 and again.headers["content-type"] == "image/jpeg"


def test_a_passthrough_header_is_never_read_by_libvips_in_the_edge_process(
    origin: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A GIF's frames are counted before it is passed through untouched: by a worker,
    so a file declaring millions of frames cannot stall the event loop's hits."""
    import edge.transform.render
    from tests.images import gif

    def not_here(*_: object) -> None:
        raise AssertionError("libvips read a header in the edge process")

    monkeypatch.setattr(edge.transform.render, "_vips_header", not_here)
    app = CountingOrigin({"a.gif": Blob(gif(8, 8, frames=3), content_type="image/gif")})
    with ServerThread(app) as server, edge_for(server, max_frames=2, cache_dir="p") as edge_:
        assert httpx.get(f"{edge_.url}/_/_/a.gif").status_code == 413  # 3 frames > 2
    with ServerThread(app) as server, edge_for(server, cache_dir="q") as edge_:
        answer = httpx.get(f"{edge_.url}/_/_/a.gif")
        assert answer.status_code == 200 and answer.content == app.blobs["a.gif"].body
