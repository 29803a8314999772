"""Real servers for tests: an ASGI app under uvicorn in a thread, and an S3 API (moto) process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import uvicorn
from starlette.types import ASGIApp

from cdn_common.serve import bind, uvicorn_config
from tools.stack import free_port


class ServerThread:
    """uvicorn serving `app` on a free loopback port, in a thread of the test process."""

    def __init__(self, app: ASGIApp, port: int = 0, loop: str = "asyncio") -> None:
        self.sock = bind("127.0.0.1", port)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn_config(app, loop=loop, timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]})

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


def wait_for_port(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.closing(socket.socket()) as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


class ChildServer:
    """A server in a child process, killed on `stop`."""

    process: subprocess.Popen[bytes] | None = None

    def _await(self, up: Callable[[], None]) -> None:
        """Wait with `up` for the started process to serve; a start that fails or is
        interrupted (Ctrl-C, SIGTERM) stops the process instead of leaving it behind."""
        try:
            up()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


class MotoServer(ChildServer):
    """A real S3 API endpoint over HTTP (moto's server mode) in a child process."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> MotoServer:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._await(lambda: wait_for_port(self.port))
        return self

    def create_bucket(self, name: str) -> None:
        httpx.put(f"{self.endpoint}/{name}").raise_for_status()


@contextlib.contextmanager
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer().start()
    try:
        yield server
    finally:
        server.stop()


class ServiceProcess(ChildServer):
    """A real redis-server or memcached on a free loopback port, in a child process."""

    def __init__(self, kind: str, port: int | None = None) -> None:
        self.kind = kind
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "redis" if self.kind == "redis" else "memcached"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self) -> ServiceProcess:
        if self.kind == "redis":
            command = [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ]
        else:
            command = [
                "memcached",
                "-p",
                str(self.port),
                "-l",
                "127.0.0.1",
                "-U",
                "0",
                "-u",
                "root",
            ]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._await(lambda: wait_for_port(self.port))
        return self


class PythonService(ChildServer):
    """`python -m edge|origin [--config FILE]` as operators run it, on a free port, its
    stdout (the JSON log) kept in a file."""

    def __init__(
        self,
        module: str,
        env: dict[str, str],
        log: Path,
        config: Path | None = None,
    ) -> None:
        self.module = module
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        prefix = module.upper()
        self.env = {
            **os.environ,
            f"{prefix}_HOST": "127.0.0.1",
            f"{prefix}_PORT": str(self.port),
            **env,
        }
        self.args = [sys.executable, "-m", module] + (["--config", str(config)] if config else [])
        self.log = log

    def start(self, timeout: float = 30) -> PythonService:
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                self.args, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        process = self.process
        self._await(lambda: self._wait_healthy(process, timeout))
        return self

    def _wait_healthy(self, process: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{self.module} exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"{self.module} did not start: {self.log.read_text()[-2000:]}")

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, then the exit code once the process is gone."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self.process = None
        return code

    def lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "3m") -> Iterator[bool]:
    """A small tmpfs mounted at `path` for the block: True when mounting was permitted
    (root, as here and in CI), False when the caller must inject its faults instead."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            capture_output=True,
        ).returncode
        == 0
    )
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=False)
