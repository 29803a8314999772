"""L2: entries as files under EDGE_CACHE_DIR, surviving restarts.

Layout: `ab/<32 hex digits of blake2b(key)>`, in 256 shard directories made when the
index is rebuilt on start. nginx's `levels=1:2` (`ab/cd/...`, 65,536 directories made
as they are first needed) cost a fresh cache a `mkdir` on nearly every write: two inode
allocations per entry instead of one. On this project's machines (ext4 without a
journal, where each allocation skips recently freed inodes) that was 120-550 us of CPU
per 20 KB write against 55-100 us (1,500 writes into a fresh directory). 256
directories hold 20,000 files each at five million entries, which the hashed
directories of ext4 and XFS take in their stride. Files left in the old layout are
moved into place by the rebuild.

A file is written to a temporary name in its directory and renamed, so a reader sees a
whole file or none; its checksum catches what a crash or a bad disk leaves behind (dropped,
counted, never served). The index (name -> size and source, under S3-FIFO for
eviction) is rebuilt on start in a thread while requests go on: until it is complete
a lookup reads the file directly.

Eviction keeps both the byte budget and EDGE_DISK_MIN_FREE_MB of free space on the
file system. A write error (disk full, read-only, gone) turns the tier off for
`RETRY_S` seconds, logged and counted; lookups and requests carry on without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from edge.cache.batch import BatchWriter
from edge.cache.diskfiles import TMP_SUFFIX, file_name, file_path, scan, write_file
from edge.cache.entry import FRESH, FRESH_OFFSET, CorruptEntry, Entry
from edge.cache.policy import S3FIFO

log = logging.getLogger("edge.cache.disk")

RETRY_S = 30.0  # after a write error, how long the tier stays off before trying again
SYNC_READ_MAX = 256 * 1024  # larger files are read in a thread, off the event loop
FREE_CHECK_S = 1.0
# a file up to SYNC_WRITE_MAX is written on the event loop, as small files are read: one
# took 0.17 ms of the edge's CPU per transform that way, and 0.4-0.8 ms handed to a
# thread (the hand-off and the GIL traded back and forth on two busy cores). A write
# slower than SLOW_WRITE_S (a disk that has fallen behind: the kernel makes writers wait
# for its dirty pages) sends writes to the writer thread for SLOW_OFF_S.
SYNC_WRITE_MAX = 256 * 1024
SLOW_WRITE_S = 0.05
SLOW_OFF_S = 30.0
# hot files stay open, as nginx's open_file_cache: a hit is one pread, not open + fstat +
# read + close; a held descriptor is dropped when this process rewrites or removes the
# file, and checked again (reopened) after OPEN_VALID_S, so a file removed by hand stops
# being served within that time
OPEN_FILES = 256
OPEN_VALID_S = 10.0
PROBE_BYTES = 4096  # what /readyz writes to see that the tier can take a file
ROUTES = 65536  # request paths remembered for the fast path's L2 hits (about 200 bytes each)


@dataclass(slots=True)
class _Indexed:
    source: str
    key: str


_Job = tuple[str, str, str, bytes]  # file name, source, key, the file's bytes
_Done = tuple[str, str, str, int, OSError | None]  # file name, source, key, size, error


class DiskTier:
    name = "disk"
    # the one write seam (tests wrap it to see which thread wrote, or to fail writes)
    _write_file = staticmethod(write_file)

    def __init__(
        self, root: Path, budget: int, min_free: int = 0, part: tuple[int, int] | None = None
    ) -> None:
        """`part` (slot, count): one of `count` edge processes sharing the directory. Each
        indexes (and evicts) what it writes, and on start the shards it owns; a lookup
        its index does not know reads the file, and a held descriptor of a file another
        process has replaced or removed is not served."""
        self.part = part
        self.root = root
        self._root = str(root)
        self.min_free = min_free
        self.policy: S3FIFO[str, _Indexed] = S3FIFO(budget, on_evict=self._evicted)
        self.by_source: dict[str, set[str]] = {}
        self.indexed = False
        self.off_until = 0.0
        self.pending: set[asyncio.Task[None]] = set()
        self._writer = BatchWriter(self._write_batch, self._wrote)
        self._inline_off_until = 0.0
        self._free_checked = 0.0
        # counters for /metrics
        self.corrupt = 0
        self.write_errors = 0
        self.evictions = 0
        self.hits = 0
        # request path -> key, so the fast path finds a file without parsing the URL;
        # a route to a file that is gone or stale just falls through to the slow path
        self.routes: dict[bytes, tuple[str, str]] = {}  # -> (key, file name)
        self._open: dict[str, tuple[int, int, float]] = {}  # name -> (fd, size, opened at)

    def route(self, raw: bytes, key: str) -> None:
        routes = self.routes
        if raw not in routes:
            if len(routes) >= ROUTES:
                del routes[next(iter(routes))]  # first in, first out
            routes[raw] = (key, file_name(key))

    def path(self, name: str) -> Path:
        return self.root / name[:2] / name

    def _file(self, name: str) -> str:
        return file_path(self._root, name)

    @property
    def enabled(self) -> bool:
        return time.monotonic() >= self.off_until

    @property
    def size(self) -> int:
        return self.policy.size

    def __len__(self) -> int:
        return len(self.policy)

    # -- reads ------------------------------------------------------------------------

    async def get(self, key: str) -> Entry | None:
        name = file_name(key)
        known = self.policy.get(name)
        if known is None and self.indexed and self.part is None:
            return None
        data = self._load(name, SYNC_READ_MAX)  # page-cache reads of small files: inline
        if isinstance(data, int):
            data = await asyncio.to_thread(self._load, name, None)
        return self._decode(name, key, known, data)

    def get_now(self, key: str, name: str) -> Entry | None:
        """A hit on a file up to SYNC_READ_MAX, read without leaving the event loop (the
        fast path's L2 hits, by key and file name); None for a miss or a larger file
        (left to `get`)."""
        known = self.policy.get(name)
        if known is None and self.indexed and self.part is None:
            return None
        data = self._load(name, SYNC_READ_MAX)
        return None if isinstance(data, int) else self._decode(name, key, known, data)

    def _load(self, name: str, limit: int | None) -> bytes | int | None:
        """The file's bytes; its size instead when over `limit`; None when it is gone
        or unreadable. Files up to `limit` are read through the open-file cache (on the
        event loop only: the thread reads of larger files open their own descriptor)."""
        held = self._open.get(name) if limit is not None else None
        if held is not None:
            fd, size, opened = held
            if time.monotonic() - opened < OPEN_VALID_S and (
                self.part is None or os.fstat(fd).st_nlink  # replaced or removed: 0
            ):
                try:
                    # a file changed under a held descriptor fails the header's lengths
                    # or the checksum, like any other corruption
                    return os.pread(fd, size, 0)
                except OSError:
                    pass
            self._close(name)
        try:
            fd = os.open(self._file(name), os.O_RDONLY)
        except FileNotFoundError:
            self._unindex(name)
            return None
        except OSError as error:
            log.warning("disk cache read failed", extra={"fields": {"error": str(error)}})
            return None
        keep = False
        try:
            size = os.fstat(fd).st_size
            if limit is not None and size > limit:
                return size
            data = os.read(fd, size)
            if limit is not None:
                if len(self._open) >= OPEN_FILES:
                    self._close(next(iter(self._open)))  # first in, first out
                self._open[name] = (fd, size, time.monotonic())
                keep = True
            return data
        except OSError as error:
            log.warning("disk cache read failed", extra={"fields": {"error": str(error)}})
            return None
        finally:
            if not keep:
                os.close(fd)

    def _close(self, name: str) -> None:
        held = self._open.pop(name, None)
        if held is not None:
            with contextlib.suppress(OSError):
                os.close(held[0])

    def _decode(
        self, name: str, key: str, known: _Indexed | None, data: bytes | int | None
    ) -> Entry | None:
        if not isinstance(data, bytes):
            return None
        try:
            entry = Entry.from_bytes(data)
        except CorruptEntry as error:
            self.corrupt += 1
            log.warning(
                "corrupt disk cache entry dropped",
                extra={"fields": {"file": name, "reason": str(error)}},
            )
            self._remove(name)
            return None
        if entry.key != key:
            return None  # a 128-bit hash collision: treat as a miss
        if known is None and self.part is None:  # shared: its writer or owner indexes it
            self._index(name, entry.source, key, len(data))
        self.hits += 1
        return entry

    # -- writes -----------------------------------------------------------------------

    def put(self, entry: Entry) -> None:
        """Store `entry`; the response does not wait for a large write or a slow disk."""
        if not self.enabled:
            return
        data = entry.to_bytes()
        if len(data) > self.policy.capacity:
            return
        job = (file_name(entry.key), entry.source, entry.key, data)
        if self.min_free and time.monotonic() - self._free_checked >= FREE_CHECK_S:
            # a free-space check is due (at most once a second): it may evict first
            task = asyncio.get_running_loop().create_task(self._write_after_check(job))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)
        else:
            self._write(job)

    def _write(self, job: _Job) -> None:
        if len(job[3]) > SYNC_WRITE_MAX or time.monotonic() < self._inline_off_until:
            self._writer.put(job)
            return
        started = time.perf_counter()
        self._wrote(self._write_batch([job]))
        if time.perf_counter() - started > SLOW_WRITE_S:
            self._inline_off_until = time.monotonic() + SLOW_OFF_S
            log.warning(
                "slow disk cache write: writes go to a thread for a while",
                extra={"fields": {"for_s": SLOW_OFF_S}},
            )

    async def _write_after_check(self, job: _Job) -> None:
        try:
            await self._make_room(len(job[3]))
        except OSError as error:
            self._failed(error)
            return
        self._write(job)

    def _wrote(self, results: list[_Done]) -> None:
        """On the event loop: a batch of writes is on disk (or failed)."""
        for name, source, key, size, error in results:
            if error is not None:
                self._failed(error)
                continue
            self._close(name)  # a descriptor held for the file this one replaced
            self._index(name, source, key, size)

    def _write_batch(self, batch: list[_Job]) -> list[_Done]:
        """Each file, and how it went (one small file on the loop, else in the writer's
        thread)."""
        results: list[_Done] = []
        for name, source, key, data in batch:
            try:
                self._write_file(self._file(name), data)
            except OSError as error:
                results.append((name, source, key, 0, error))
            else:
                results.append((name, source, key, len(data), None))
        return results

    async def _make_room(self, size: int) -> None:
        now = time.monotonic()
        if not self.min_free or now - self._free_checked < FREE_CHECK_S:
            return
        self._free_checked = now
        stat = await asyncio.to_thread(os.statvfs, self.root if self.root.exists() else ".")
        free = stat.f_bavail * stat.f_frsize
        if free - size < self.min_free:
            short = self.min_free - free + size
            self.policy.shrink_by(short)  # evicts (and unlinks) the policy's victims
            if free - size + short < self.min_free or not len(self.policy):
                raise OSError(errno.ENOSPC, "below EDGE_DISK_MIN_FREE_MB")

    def _failed(self, error: OSError) -> None:
        self.write_errors += 1
        self.off_until = time.monotonic() + RETRY_S
        reason = {errno.ENOSPC: "disk full", errno.EROFS: "read-only"}.get(
            error.errno or 0, error.strerror or str(error)
        )
        log.warning(
            "disk cache off after a write error",
            extra={"fields": {"reason": reason, "retry_in_s": RETRY_S}},
        )

    def set_fresh_until(self, key: str, fresh_until: float) -> None:
        """Rewrite the freshness field in place (a 304 refresh, or a soft purge)."""
        path = self.path(file_name(key))
        try:
            fd = os.open(path, os.O_WRONLY)
        except OSError:
            return
        try:
            os.pwrite(fd, FRESH.pack(fresh_until), FRESH_OFFSET)
        except OSError as error:
            self._failed(error)
        finally:
            os.close(fd)

    async def writable(self) -> bool:
        """For /readyz: the tier is on and a file can be written in its directory."""
        if not self.enabled:
            return False
        try:
            await asyncio.to_thread(self._probe)
        except OSError:
            return False
        return True

    def _probe(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        probe = self.root / f".probe.{os.getpid()}{TMP_SUFFIX}"
        # written the way entries are, with some bytes: an empty file can still be
        # created on a full file system, and readiness then hung on whether the last
        # failed write was less than RETRY_S ago
        self._write_file(str(probe), bytes(PROBE_BYTES))
        probe.unlink()

    async def settled(self) -> None:
        """Wait until the writes started so far are on disk (or failed)."""
        if self.pending:
            await asyncio.gather(*self.pending, return_exceptions=True)
        await self._writer.drained()

    async def flush(self) -> None:
        """Wait for writes in progress (graceful shutdown)."""
        await self.settled()
        for name in list(self._open):
            self._close(name)

    # -- purge ------------------------------------------------------------------------

    def keys_of(self, source: str) -> list[str]:
        names = self.by_source.get(source, ())
        found = []
        for name in names:
            indexed = self.policy.peek(name)
            if indexed is not None:
                found.append(indexed.key)
        return found

    def sources_under(self, prefix: str) -> list[str]:
        return [source for source in self.by_source if source.startswith(prefix)]

    def delete(self, key: str) -> None:
        self._remove(file_name(key))

    # -- index ------------------------------------------------------------------------

    async def rebuild(self) -> None:
        """Index the files already on disk (in a thread), oldest first."""
        try:
            found, corrupt = await asyncio.to_thread(scan, self._root, self.part)
            self.corrupt += corrupt
        except OSError as error:
            log.warning("disk cache index rebuild failed", extra={"fields": {"error": str(error)}})
            found = []
        for name, source, key, size, _ in sorted(found, key=lambda row: row[4]):
            if self.policy.peek(name) is None:
                self._index(name, source, key, size)
        self.indexed = True

    def _index(self, name: str, source: str, key: str, size: int) -> None:
        if self.policy.put(name, _Indexed(source, key), size):
            self.by_source.setdefault(source, set()).add(name)

    def _unindex(self, name: str) -> None:
        indexed = self.policy.pop(name)
        if indexed is not None:
            self._drop_source(indexed.source, name)

    def _remove(self, name: str) -> None:
        self._unindex(name)
        self._close(name)
        with contextlib.suppress(OSError):
            self.path(name).unlink(missing_ok=True)

    def _evicted(self, name: str, indexed: _Indexed) -> None:
        self.evictions += 1
        self._drop_source(indexed.source, name)
        self._close(name)
        with contextlib.suppress(OSError):
            self.path(name).unlink(missing_ok=True)

    def _drop_source(self, source: str, name: str) -> None:
        names = self.by_source.get(source)
        if names is not None:
            names.discard(name)
            if not names:
                del self.by_source[source]
