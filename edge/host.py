"""The edge processes of one host, and what they do together.

With `EDGE_PROCESSES` above 1 (`edge/supervisor.py` starts them), each process listens on
a Unix socket in the host directory (`EDGE_HOST_DIR`, made by the supervisor), named by
its slot and pid. A process that must act for the whole host asks every other socket
there, one JSON line each way:

- `purge`: a purge received by any process is applied by all before it is answered (a
  sibling that does not answer makes the purge fail with 503, to be retried: never a
  purge reported done that was not);
- `metrics`: `/metrics` of any process is the sum of all (`merge_expositions`);
- `ready`: `/readyz` of any process reflects them all.

`Claims` make one transform per key per host: before a miss fetches and transforms,
its process takes a lock (`flock`) on one of `CLAIM_SLOTS` files chosen by the key;
a process that finds it taken waits, and looks in the disk tier (shared by all) before
doing the work itself. The kernel drops the lock of a process that dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger("edge.host")

Handler = Callable[[dict[str, Any]], Awaitable[Any]]
ASK_TIMEOUT_S = 5.0
CLAIM_SLOTS = 4096
CLAIM_POLL_S = (0.002, 0.05)  # first and longest wait between tries
MAX_LINE = 16 * 1024 * 1024


class SiblingsUnreachable(Exception):
    """A sibling process did not answer (dead, or still starting)."""


class Host:
    """This process's place among the host's edge processes."""

    def __init__(self, directory: Path, slot: int, processes: int) -> None:
        self.directory = directory
        self.slot = slot
        self.processes = processes
        self.socket = directory / f"edge-{slot}-{os.getpid()}.sock"
        self.handlers: dict[str, Handler] = {}
        self._server: asyncio.AbstractServer | None = None
        self.claims = Claims(directory / "claims")

    def on(self, kind: str, handler: Handler) -> None:
        self.handlers[kind] = handler

    async def start(self) -> None:
        os.makedirs(self.claims.directory, exist_ok=True)  # and the host directory
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)
        self._server = await asyncio.start_unix_server(
            self._serve, path=str(self.socket), limit=MAX_LINE
        )

    async def stop(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)
        if self._server is not None:
            self._server.close()

    def siblings(self) -> list[Path]:
        """The other processes' sockets (a process being replaced may have two)."""
        return sorted(p for p in self.directory.glob("edge-*.sock") if p != self.socket)

    async def ask_all(
        self, kind: str, payload: dict[str, Any], *, strict: bool = True
    ) -> list[Any]:
        """Every sibling's answer; SiblingsUnreachable when one does not answer (or, not
        `strict`, the answers of those that did)."""
        paths = self.siblings()
        answers = await asyncio.gather(
            *(self._ask(path, kind, payload) for path in paths), return_exceptions=True
        )
        failed = [str(p.name) for p, a in zip(paths, answers, strict=True) if _failed(a)]
        if failed and strict:
            raise SiblingsUnreachable(", ".join(failed))
        return [a for a in answers if a is not _GONE and not _failed(a)]

    async def _ask(self, path: Path, kind: str, payload: dict[str, Any]) -> Any:
        try:
            async with asyncio.timeout(ASK_TIMEOUT_S):
                reader, writer = await asyncio.open_unix_connection(str(path), limit=MAX_LINE)
                try:
                    writer.write(json.dumps({"kind": kind, **payload}).encode() + b"\n")
                    await writer.drain()
                    line = await reader.readline()
                finally:
                    writer.close()
        except (OSError, TimeoutError) as error:
            dead = isinstance(error, OSError) and error.errno in (errno.ENOENT, errno.ECONNREFUSED)
            if dead and not _pid_alive(path):
                # a socket left by a process that died: not a sibling any more
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                return _GONE
            raise SiblingsUnreachable(path.name) from error
        if not line:
            raise SiblingsUnreachable(path.name)
        answer = json.loads(line)
        if "error" in answer:
            raise SiblingsUnreachable(f"{path.name}: {answer['error']}")
        return answer.get("result")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            request = json.loads(line)
            handler = self.handlers[request.pop("kind")]
            answer = {"result": await handler(request)}
        except Exception as error:  # answered, so the asker is not left waiting
            log.warning("host request failed", extra={"fields": {"error": repr(error)}})
            answer = {"error": repr(error)}
        try:
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        finally:
            writer.close()


_GONE = object()


def _failed(answer: Any) -> bool:
    return isinstance(answer, BaseException)


def _pid_alive(path: Path) -> bool:
    try:
        pid = int(path.stem.rsplit("-", 1)[1])
        os.kill(pid, 0)
    except (ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


class Claims:
    """Host-wide claims on keys: `flock` on one of CLAIM_SLOTS files."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.waited = 0  # claims found taken (another process was making the key)

    def _slot(self, key: str) -> str:
        digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
        return str(self.directory / f"{int.from_bytes(digest) % CLAIM_SLOTS:04d}")

    @contextlib.asynccontextmanager
    async def hold(self, key: str, done: Callable[[], Awaitable[bool]]) -> AsyncIterator[bool]:
        """Holds the key's claim; yields True when, while waiting for it, `done()` said
        another process has made the key (then there is nothing to do). The directory
        is made by `Host.start`, before any request."""
        fd = os.open(self._slot(key), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            pause, longest = CLAIM_POLL_S
            waited = False
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not waited:
                        waited = True
                        self.waited += 1
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, longest)
                    if await done():
                        yield True
                        return
            try:
                yield waited and await done()
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


# -- metrics ---------------------------------------------------------------------------

# gauges of a thing all processes share: every process reports the same value
HOST_WIDE = ("edge_disk_cache_enabled", "edge_shared_cache_available")
# ... and series whose sum means nothing: the oldest start
EARLIEST = ("process_start_time_seconds",)


def merge_expositions(texts: list[str]) -> str:
    """Prometheus text of several processes as one: samples with the same name and labels
    are added up (counters, histograms, and gauges such as bytes or in-flight), but for
    host-wide gauges (the smallest) and start times (the earliest)."""
    merged: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    meta: dict[str, tuple[str, str]] = {}  # in the order families first appear
    samples_of: dict[str, list[tuple[str, tuple[tuple[str, str], ...]]]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            if family.name not in meta:
                meta[family.name] = (family.type, family.documentation)
                samples_of[family.name] = []
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if key not in merged:
                    samples_of[family.name].append(key)
                    merged[key] = sample.value
                elif sample.name.startswith(HOST_WIDE) or sample.name.startswith(EARLIEST):
                    merged[key] = min(merged[key], sample.value)
                else:
                    merged[key] += sample.value
    lines: list[str] = []
    for name, (kind, documentation) in meta.items():
        exposed = f"{name}_total" if kind == "counter" else name
        lines.append(f"# HELP {exposed} {documentation}")
        lines.append(f"# TYPE {exposed} {kind}")
        for sample_name, labels in samples_of[name]:
            rendered = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            value = merged[(sample_name, labels)]
            lines.append(
                f"{sample_name}{{{rendered}}} {value!r}" if labels else f"{sample_name} {value!r}"
            )
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
