"""L3 against real redis-server and memcached processes, including killing them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.edge.countingorigin import Blob, CountingOrigin
from tests.edge.edges import PURGE, edge_for
from tests.images import jpeg
from tests.servers import ServerThread, ServiceProcess


@pytest.fixture(params=["redis", "memcached"])
def service(request: pytest.FixtureRequest) -> Iterator[ServiceProcess]:
    server = ServiceProcess(request.param).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def origin() -> Iterator[tuple[CountingOrigin, ServerThread]]:
    app = CountingOrigin({"a.jpg": Blob(jpeg(200, 100)), "p/b.jpg": Blob(jpeg(100, 50))})
    with ServerThread(app) as server:
        yield app, server


def node(server: ServerThread, service: ServiceProcess, tmp_path: Path, name: str) -> ServerThread:
    # its own disk tier: only L3 is shared between the two nodes
    return edge_for(
        server,
        shared_cache_url=service.url,
        cache_dir=str(tmp_path / name),
        shared_cache_timeout_ms=200,
    )


def wait_for(check: Any) -> None:
    for _ in range(100):
        if check():
            return
        time.sleep(0.02)


def test_a_second_node_is_served_from_the_shared_tier(
    origin: Any, service: ServiceProcess, tmp_path: Path
) -> None:
    app, server = origin
    with node(server, service, tmp_path, "one") as one:
        first = httpx.get(f"{one.url}/_/w=50/a.jpg")
        httpx.get(f"{one.url}/_/w=50/p/b.jpg")
        time.sleep(0.3)  # the shared write is in the background
    with node(server, service, tmp_path, "two") as two:
        second = httpx.get(f"{two.url}/_/w=50/a.jpg")
        assert second.headers["cache-status"] == "edge; hit; detail=shared"
        assert second.content == first.content
        assert httpx.get(f"{two.url}/_/w=50/a.jpg").headers["cache-status"].endswith("memory")
        assert app.gets == 2
        # a purge on one node reaches L3: another node does not get the old entry
        assert (
            httpx.post(f"{two.url}/_purge", json={"prefix": "p/"}, headers=PURGE).status_code == 200
        )
        time.sleep(0.3)
    with node(server, service, tmp_path, "three") as three:
        again = httpx.get(f"{three.url}/_/w=50/p/b.jpg")
        assert again.headers["cache-status"].startswith("edge; fwd=uri-miss")
        assert httpx.get(f"{three.url}/_/w=50/a.jpg").headers["cache-status"].endswith("shared")


def test_requests_carry_on_when_the_shared_tier_dies_and_use_it_again_later(
    origin: Any, service: ServiceProcess, tmp_path: Path
) -> None:
    _app, server = origin
    with node(server, service, tmp_path, "one") as one:
        assert httpx.get(f"{one.url}/_/w=51/a.jpg").status_code == 200
        service.stop()
        for width in range(52, 60):  # misses while L3 is dead: still answered
            response = httpx.get(f"{one.url}/_/w={width}/a.jpg", timeout=15)
            assert response.status_code == 200
        metrics = httpx.get(f"{one.url}/metrics").text
        assert "edge_shared_cache_available 0.0" in metrics
        service.start()  # same port
        from edge.cache import shared

        time.sleep(shared.BREAK_S + 0.2)
        httpx.get(f"{one.url}/_/w=70/a.jpg")
        time.sleep(0.3)
    with node(server, service, tmp_path, "two") as two:
        response = httpx.get(f"{two.url}/_/w=70/a.jpg")
        assert response.headers["cache-status"] == "edge; hit; detail=shared"
