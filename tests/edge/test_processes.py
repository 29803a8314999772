"""A real multi-process edge (`EDGE_PROCESSES=2`: a supervisor and two edge processes on
one socket) against an origin over sockets: one fetch and one transform per key for the
host, purges that reach every process, a killed process replaced while the other serves,
SIGHUP without a failed request, and one /metrics for the host."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from edge.settings import EdgeSettings
from tests.edge.countingorigin import Blob, CountingOrigin
from tests.images import jpeg
from tests.servers import ServerThread
from tools.stack import free_port, wait_ready

PROCESSES = 2


@dataclass
class Node:
    url: str
    supervisor: subprocess.Popen[bytes]
    origin: CountingOrigin

    def children(self) -> set[int]:
        path = Path(f"/proc/{self.supervisor.pid}/task/{self.supervisor.pid}/children")
        return {int(pid) for pid in path.read_text().split()}

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=10).text


def fresh(url: str, **headers: str) -> httpx.Response:
    """One request on a connection of its own: each is accepted by either process."""
    with httpx.Client(timeout=30) as client:
        return client.get(url, headers={"Connection": "close", **headers})


def total(metrics: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", metrics, re.M))


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    origin = CountingOrigin({"a.jpg": Blob(jpeg(800, 600)), "b.jpg": Blob(jpeg(640, 480))})
    origin.delay = 0.3  # a window wide enough for every request to arrive during the fill
    with ServerThread(origin) as served:
        port = free_port()
        env = {
            **os.environ,
            "EDGE_PROCESSES": str(PROCESSES),
            "EDGE_PORT": str(port),
            "EDGE_ORIGIN_URL": served.url,
            "EDGE_CACHE_DIR": str(tmp_path / "cache"),
            "EDGE_PURGE_KEYS": "k",
            "EDGE_ACCESS_LOG": "false",
            "EDGE_WORKERS": "1",
            "EDGE_CLIENT_MISS_RATE": "0",
            "EDGE_SHUTDOWN_GRACE_S": "2",
        }
        supervisor = subprocess.Popen([sys.executable, "-m", "edge"], env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url)
            yield Node(url, supervisor, origin)
        finally:
            supervisor.send_signal(signal.SIGTERM)
            try:
                supervisor.wait(20)
            except subprocess.TimeoutExpired:
                supervisor.kill()


def test_one_fetch_and_one_transform_per_key_for_the_host(node: Node) -> None:
    url = f"{node.url}/_/w=120,f=webp/a.jpg"
    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(lambda _: fresh(url), range(48)))
    assert {a.status_code for a in answers} == {200}
    assert len({a.content for a in answers}) == 1
    assert node.origin.gets == 1, "one origin fetch for the whole host"
    assert total(node.metrics(), "edge_transform_duration_seconds_count") == 1
    # both processes took part: one made it, the other took it from the shared disk tier
    timings = " ".join(a.headers["server-timing"] for a in answers)
    assert "host;desc=sibling" in timings, "the other process waited on the host claim"


def test_a_purge_reaches_every_process(node: Node) -> None:
    url = f"{node.url}/_/w=100/b.jpg"
    first = fresh(url)
    for _ in range(20):  # into both processes' memory tiers
        assert fresh(url).headers["etag"] == first.headers["etag"]
    node.origin.blobs["b.jpg"] = Blob(jpeg(320, 240))
    purged = httpx.post(
        f"{node.url}/_purge", json={"source": "b.jpg"}, headers={"Authorization": "Bearer k"}
    )
    assert purged.status_code == 200, purged.text
    after = [fresh(url) for _ in range(20)]
    assert all(a.headers["etag"] != first.headers["etag"] for a in after), "old bytes served"


def test_a_killed_process_is_replaced_while_the_other_serves(node: Node) -> None:
    url = f"{node.url}/_/w=90/a.jpg"
    assert fresh(url).status_code == 200
    before = node.children()
    assert len(before) == PROCESSES
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    served = [fresh(url).status_code for _ in range(30)]
    assert served == [200] * 30
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = node.children()
        if len(now) == PROCESSES and victim not in now:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"no replacement for {victim}: {node.children()}")
    wait_ready(node.url)
    assert total(node.metrics(), "edge_http_requests_total") > 0


def test_a_killed_supervisor_takes_its_processes_along_and_frees_the_port(node: Node) -> None:
    assert fresh(f"{node.url}/_/w=70/a.jpg").status_code == 200
    children = node.children()
    assert len(children) == PROCESSES
    node.supervisor.kill()  # SIGKILL: no chance to stop them itself
    node.supervisor.wait(10)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(alive(pid) for pid in children):
        time.sleep(0.1)
    assert not [pid for pid in children if alive(pid)], "orphans still running"
    port = int(node.url.rsplit(":", 1)[1])
    with socket.create_server(("127.0.0.1", port)):  # a new edge could bind it
        pass


def alive(pid: int) -> bool:
    """Running, not a zombie (an orphan's zombie is reaped by init, or by pytest's PID 1)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_sighup_reloads_without_a_failed_request(node: Node) -> None:
    url = f"{node.url}/_/w=80/a.jpg"
    assert fresh(url).status_code == 200
    before = node.children()
    failures: list[str] = []
    done = threading.Event()
    count = [0]

    def load() -> None:
        with httpx.Client(timeout=30) as keep_alive:
            while not done.is_set():
                for client in (keep_alive, None):
                    try:
                        answer = keep_alive.get(url) if client else fresh(url)
                        count[0] += 1
                        if answer.status_code != 200:
                            failures.append(str(answer.status_code))
                    except httpx.HTTPError as error:
                        failures.append(repr(error))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    node.supervisor.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (node.children() and not node.children() & before):
        time.sleep(0.2)
    time.sleep(1.0)
    done.set()
    for thread in threads:
        thread.join(30)
    assert not node.children() & before, "every process was replaced"
    assert count[0] > 50
    assert failures == []


def test_metrics_are_the_hosts(node: Node) -> None:
    for width in range(60, 70):
        assert fresh(f"{node.url}/_/w={width}/a.jpg").status_code == 200
    metrics = node.metrics()
    images = sum(
        float(v)
        for v in re.findall(
            r'^edge_http_requests_total\{[^}]*route="image"[^}]*\} (\S+)$', metrics, re.M
        )
    )
    assert images == 10, "every process's requests, summed"
    assert total(metrics, "edge_transform_duration_seconds_count") == 10
    assert "process_resident_memory_bytes" in metrics


def test_each_process_takes_its_share_of_the_budgets_once(tmp_path: Path) -> None:
    host = EdgeSettings(
        processes=2,
        host_dir=str(tmp_path),
        memory_cache_mb=512,
        disk_cache_mb=1024,
        origin_url="http://127.0.0.1:1",
    )
    one = host.for_one_process()
    assert (one.memory_cache_mb, one.disk_cache_mb) == (256, 512)
    assert one.for_one_process() is one  # build_app and __main__ both ask
