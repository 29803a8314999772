"""The transform benchmark waits for the edge's warm-up backlog before it measures."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest

from loadtests.bench_transform import settle

BUSY = "edge_transform_queue_depth 5.0\nedge_transforms_in_flight 2.0\n"
RUNNING = "edge_transform_queue_depth 0.0\nedge_transforms_in_flight 1.0\n"
IDLE = "edge_transform_queue_depth 0.0\nedge_transforms_in_flight 0.0\n"


class Metrics(http.server.BaseHTTPRequestHandler):
    pages: ClassVar[list[str]] = []
    served = 0

    def do_GET(self) -> None:
        cls = type(self)
        body = cls.pages[min(cls.served, len(cls.pages) - 1)].encode()
        cls.served += 1
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def metrics() -> Iterator[tuple[str, type[Metrics]]]:
    handler = type("Handler", (Metrics,), {"pages": [], "served": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", handler
    server.shutdown()
    server.server_close()


def test_settle_returns_once_nothing_is_queued_or_running(
    metrics: tuple[str, type[Metrics]],
) -> None:
    base, handler = metrics
    handler.pages = [BUSY, BUSY, RUNNING, IDLE]
    settle(base)
    assert handler.served == 4


def test_settle_gives_up_on_an_edge_that_stays_busy(metrics: tuple[str, type[Metrics]]) -> None:
    base, handler = metrics
    handler.pages = [RUNNING]
    with pytest.raises(RuntimeError, match="still had transforms"):
        settle(base, timeout=0.3)


def test_settle_does_not_take_missing_gauges_for_idle(metrics: tuple[str, type[Metrics]]) -> None:
    base, handler = metrics
    handler.pages = ["edge_transforms_in_flight 0.0\n"]
    with pytest.raises(RuntimeError):
        settle(base, timeout=0.3)
