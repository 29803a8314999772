"""Start the services as child processes on local directories, for `make run` and load tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx


@dataclass
class Service:
    name: str
    url: str
    process: subprocess.Popen[bytes]


@dataclass
class Stack:
    """Child processes started with environment settings; stopped together."""

    services: list[Service] = field(default_factory=list)

    def start(
        self, module: str, port: int, env: dict[str, str], log: Path | None = None
    ) -> Service:
        output = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", module],
            env={**os.environ, **env},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        service = Service(module, f"http://127.0.0.1:{port}", process)
        self.services.append(service)
        wait_ready(service.url, process=service.process, name=service.name)
        return service

    def start_origin(self, blobs: Path, port: int) -> Service:
        """An origin over the directory `blobs`, access log off."""
        return self.start(
            "origin",
            port,
            {
                "ORIGIN_STORAGE": f"file://{blobs}",
                "ORIGIN_PORT": str(port),
                "ORIGIN_ACCESS_LOG": "false",
            },
        )

    def start_pair(
        self,
        blobs: Path,
        *,
        cache: Path,
        origin_port: int,
        edge_port: int,
        edge_env: dict[str, str] | None = None,
        client_budgets: bool = False,
    ) -> tuple[Service, Service]:
        """An origin over the directory `blobs` and an edge caching in `cache`, access logs off.

        The edge's per-client miss budget is off unless `client_budgets`: a load generator
        on loopback is one address standing for many users.

        `cache` is explicit: a benchmark that left it at the default (./data/cache) would
        find the previous run's variants on disk and measure hits instead of transforms.
        """
        origin = self.start_origin(blobs, origin_port)
        edge = self.start(
            "edge",
            edge_port,
            {
                "EDGE_PORT": str(edge_port),
                "EDGE_ORIGIN_URL": origin.url,
                "EDGE_CACHE_DIR": str(cache),
                "EDGE_ACCESS_LOG": "false",
                **({} if client_budgets else {"EDGE_CLIENT_MISS_RATE": "0"}),
                **(edge_env or {}),
            },
        )
        return origin, edge

    def stop(self) -> None:
        for service in reversed(self.services):
            service.process.terminate()
        for service in self.services:
            try:
                service.process.wait(15)
            except subprocess.TimeoutExpired:
                service.process.kill()
        self.services.clear()


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, timeout: float = 15) -> None:
    """Wait until something accepts connections on the loopback port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def wait_ready(
    url: str,
    timeout: float = 60,
    process: subprocess.Popen[bytes] | None = None,
    name: str = "server",
) -> None:
    """Polls `url`/readyz until it answers 200; fails early if `process` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{name} not ready after {timeout} s")
