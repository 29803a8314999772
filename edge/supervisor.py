"""`EDGE_PROCESSES` above 1: one parent, N edge processes on one listening socket.

The parent binds the port once and starts each edge process (`python -m edge`, with the
socket's descriptor, its slot and the host directory in its environment); each runs the
whole edge, fast hit path included, on that one socket, so the kernel hands each new
connection to whichever process accepts first. The socket stays open in the parent for
its whole life, which is what makes a reload lose nothing: with SO_REUSEPORT each
process would own a socket, and the connections queued on the socket of a process that
stops are reset (Linux moves them only with `net.ipv4.tcp_migrate_req`).

- A process that dies is started again in its slot (at most once a second per slot).
- A parent that dies without stopping them (SIGKILL, the OOM killer) takes them along:
  each holds the read end of a pipe whose only write end is the parent's, and stops as
  on SIGTERM when it reads the end of it. Orphans would otherwise serve on, holding the
  port, and the next `python -m edge` could not bind it.
- SIGTERM / SIGINT: every process stops accepting and finishes what it has
  (`EDGE_SHUTDOWN_GRACE_S`), then the parent exits.
- SIGHUP: a new process is started for each slot, and the old one is told to stop once
  the new one answers on the host directory's socket (ready), one slot at a time: the
  socket never stops accepting, and no request in flight is cut. Settings are read
  again by the new processes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from cdn_common.serve import bind

log = logging.getLogger("edge.supervisor")

RESTART_EVERY_S = 1.0
READY_TIMEOUT_S = 60.0
LISTEN_FD, SLOT, HOST_DIR = "EDGE_LISTEN_FD", "EDGE_PROCESS_SLOT", "EDGE_HOST_DIR"
PARENT_FD = "EDGE_PARENT_FD"


def stop_with_parent() -> None:
    """In an edge process: SIGTERM itself (a graceful stop) once the parent is gone."""
    fd = os.environ.get(PARENT_FD)
    if fd is None:
        return

    def watch() -> None:
        while os.read(int(fd), 1):  # nothing is written: b"" is the parent's end closing
            pass
        log.warning("supervisor gone; stopping")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


@dataclass
class Slot:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    retiring: list[subprocess.Popen[bytes]] = field(default_factory=list)


class Supervisor:
    def __init__(
        self,
        host: str,
        port: int,
        processes: int,
        argv: list[str],
        grace_s: float,
        host_dir: Path | None = None,
    ) -> None:
        self.sock = bind(host, port)
        # the children's way to see this process die (the write end is never inherited)
        self.alive, self._alive_w = os.pipe()
        self.processes = processes
        self.argv = argv
        self.grace_s = grace_s
        self.made_dir = host_dir is None
        self.host_dir = host_dir or Path(tempfile.mkdtemp(prefix="edge-host-"))
        self.slots = [Slot(i) for i in range(processes)]
        self.stopping = False
        self.reload_asked = False
        self.restarts = 0

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def start(self, slot: Slot) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env.update(
            {
                LISTEN_FD: str(self.sock.fileno()),
                SLOT: str(slot.index),
                HOST_DIR: str(self.host_dir),
                "EDGE_PROCESSES": str(self.processes),
                PARENT_FD: str(self.alive),
            }
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "edge", *self.argv],
            env=env,
            pass_fds=(self.sock.fileno(), self.alive),
        )
        slot.started = time.monotonic()
        log.info("edge process started", extra={"fields": {"slot": slot.index, "pid": process.pid}})
        return process

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, self._reload)
        log.info(
            "listening",
            extra={
                "fields": {
                    "service": "edge",
                    "url": f"http://{self.sock.getsockname()[0]}:{self.port}",
                    "processes": self.processes,
                }
            },
        )
        for slot in self.slots:
            slot.process = self.start(slot)
        while not self.stopping:
            if self.reload_asked:
                self.reload_asked = False
                self._roll()
            self._mend()
            time.sleep(0.2)
        return self._drain()

    def _mend(self) -> None:
        """A dead process is started again in its slot."""
        for slot in self.slots:
            slot.retiring = [p for p in slot.retiring if p.poll() is None]
            process = slot.process
            if process is None or process.poll() is None:
                continue
            if time.monotonic() - slot.started < RESTART_EVERY_S:
                continue
            log.warning(
                "edge process died; starting another",
                extra={"fields": {"slot": slot.index, "code": process.returncode}},
            )
            self.restarts += 1
            slot.process = self.start(slot)

    def _roll(self) -> None:
        """SIGHUP: each slot's new process first, then the old one stops."""
        log.info("reloading", extra={"fields": {"processes": self.processes}})
        for slot in self.slots:
            old = slot.process
            new = self.start(slot)
            if not self._ready(new):
                log.warning("reload: new process not ready; keeping the old one")
                new.terminate()
                continue
            slot.process = new
            if old is not None and old.poll() is None:
                old.send_signal(signal.SIGTERM)
                slot.retiring.append(old)
            if self.stopping:
                return

    def _ready(self, process: subprocess.Popen[bytes]) -> bool:
        """The process answers on the host directory (its app has started)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline and not self.stopping:
            if process.poll() is not None:
                return False
            if any(self.host_dir.glob(f"edge-*-{process.pid}.sock")):
                return True
            time.sleep(0.05)
        return False

    def _drain(self) -> int:
        everyone = [s.process for s in self.slots if s.process is not None]
        everyone += [p for s in self.slots for p in s.retiring]
        for process in everyone:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s + 5
        for process in everyone:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
        self.sock.close()
        os.close(self.alive)
        os.close(self._alive_w)
        if self.made_dir:
            shutil.rmtree(self.host_dir, ignore_errors=True)
        log.info("stopped", extra={"fields": {"service": "edge"}})
        return 0

    def _stop(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _reload(self, signum: int, frame: object) -> None:
        self.reload_asked = True
