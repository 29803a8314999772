"""Blobs as plain files under one directory (`file://`), the default store.

Layout under the root: `<key>` holds the bytes (so a directory of images dropped in
by hand is served as it is); `.meta/<key>.json` holds what an upload recorded (etag,
type, dimensions, owner), tied to the blob's inode, size and mtime so a sidecar that
does not describe the current file is ignored; `.staging/` receives uploads on the
same filesystem, so a commit is a rename; `.locks/` serialises commits per key across
threads and processes. Keys never start a segment with `.`, so none of these is reachable.

Hot blobs are served from memory: bodies up to 1 MiB stay in a byte-bounded LRU
(`ORIGIN_MEMORY_CACHE_MB`), and a read of one is a `stat` on the event loop (a few
microseconds; the entry is used only if inode, size and mtime are unchanged) and no
copy. Other reads of files up to 1 MiB run on the event loop too when they would not
wait for the disk: preadv2's RWF_NOWAIT shows the file's (and its sidecar's) pages are
in the page cache. Everything else (writes, larger files, pages on disk) runs in the
thread pool. Measured on the 2-core machines here: a thread-pool hop costs 100-150 us
and reading 350 KB into fresh memory about as much again (page faults), which held the
origin to 0.3 of a bare Starlette app serving the same bytes from memory. Under the
transform benchmark's load (a new 350 KB source per request), reading on the loop took
the origin's CPU per request from 0.85-1.12 ms to 0.73-0.85 (three alternated runs).
"""

from __future__ import annotations

import asyncio
import enum
import fcntl
import hashlib
import json
import os
import stat
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, TypeVar, overload

from cachetools import LRUCache

from cdn_common.errors import Conflict
from cdn_common.files import write_all
from cdn_common.http import ByteRange
from origin.sniff import SNIFF_BYTES, read_header, sniff_type
from origin.stores.base import (
    CHUNK_SIZE,
    INLINE_LIMIT,
    BlobMeta,
    BlobRead,
    Choose,
    NewBlob,
    Precondition,
    Skip,
    StoreUnavailable,
    unavailable,
)

T = TypeVar("T")
# reads whose bytes are in the page cache are served on the event loop (a thread-pool
# hop cost the origin more CPU than the read: see the module's docstring); preadv2's
# RWF_NOWAIT tells, on Linux
NOWAIT = hasattr(os, "RWF_NOWAIT") and hasattr(os, "preadv")


class Later(enum.Enum):
    LATER = "later"


LATER = Later.LATER  # `_read` on the event loop: this one needs the thread
META_CACHE_ENTRIES = 50_000
LOCK_SHARDS = 256


class LocalStore:
    def __init__(self, root: Path, *, memory_cache_bytes: int = 0) -> None:
        self.root = root.resolve()
        self.staging_dir = self.root / ".staging"
        self._meta_root = self.root / ".meta"
        self._lock_root = self.root / ".locks"
        for directory in (self.root, self.staging_dir, self._meta_root, self._lock_root):
            directory.mkdir(parents=True, exist_ok=True)
        self._prefix = str(self.root) + os.sep
        self._meta_cache: dict[str, tuple[tuple[int, int, int], BlobMeta]] = {}
        self._meta_lock = threading.Lock()
        self._hot: LRUCache[str, tuple[tuple[int, int, int], BlobMeta, bytes]] = LRUCache(
            maxsize=memory_cache_bytes, getsizeof=lambda entry: len(entry[2]) + 256
        )
        self._hot_lock = threading.Lock()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
        except OSError as exc:
            raise unavailable(exc) from None

    def _path(self, key: str) -> str:
        path = os.path.normpath(os.path.join(self.root, key))
        if not path.startswith(self._prefix):  # keys are validated; this is the second wall
            raise StoreUnavailable("key escapes the store")
        return path

    def _meta_path(self, key: str) -> str:
        return os.path.join(self._meta_root, key + ".json")

    # -- reads ---------------------------------------------------------------------------

    async def read(self, key: str, choose: Choose) -> BlobRead | None:
        hot = self._read_hot(key, choose)
        if hot is not None:
            return hot
        if not NOWAIT:
            return await self._run(self._read, key, choose)
        try:
            opened = self._open(key)  # on the loop, as the hot path's stat
            if opened is None:
                return None
            now = self._read_open(key, choose, *opened, on_loop=True)
        except OSError as exc:
            raise unavailable(exc) from None
        if now is not LATER:
            return now
        return await self._run(self._read_open, key, choose, *opened)  # the same descriptor

    def _read_hot(self, key: str, choose: Choose) -> BlobRead | None:
        """From the hot-blob cache, after a stat proves the file unchanged; else None."""
        with self._hot_lock:
            entry = self._hot.get(key)
        if entry is None:
            return None
        try:
            st = os.stat(self._path(key))
        except OSError:
            return None  # the slow path tells a miss from a failure
        signature, meta, data = entry
        if signature != _signature(st):
            return None
        selection = choose(meta)
        if isinstance(selection, ByteRange):
            return BlobRead(meta, selection, data[selection.start : selection.end + 1])
        return BlobRead(meta, selection, b"" if isinstance(selection, Skip) else data)

    def _read(self, key: str, choose: Choose) -> BlobRead | None:
        opened = self._open(key)
        return None if opened is None else self._read_open(key, choose, *opened)

    @overload
    def _read_open(self, key: str, choose: Choose, fd: int, st: os.stat_result) -> BlobRead: ...
    @overload
    def _read_open(
        self, key: str, choose: Choose, fd: int, st: os.stat_result, *, on_loop: bool
    ) -> BlobRead | Later: ...
    def _read_open(
        self, key: str, choose: Choose, fd: int, st: os.stat_result, *, on_loop: bool = False
    ) -> BlobRead | Later:
        """The blob behind `fd`, which this closes or hands to the body's stream. `on_loop`:
        LATER instead of waiting for the disk (a file over INLINE_LIMIT, or its bytes or
        its sidecar's not in the page cache), with `fd` left open for the thread."""
        try:
            if on_loop and not (st.st_size <= INLINE_LIMIT and _in_page_cache(fd, st.st_size)):
                return LATER
            meta = self._meta(key, st, fd, nowait=on_loop)
            if meta is LATER:
                return LATER
            selection = choose(meta)
            if isinstance(selection, Skip):
                os.close(fd)
                return BlobRead(meta, selection, b"")
            span = selection if isinstance(selection, ByteRange) else ByteRange(0, meta.size - 1)
            if span.length <= INLINE_LIMIT:
                data = _pread_all(fd, span.length, span.start) if meta.size else b""
                os.close(fd)
                if span.length == meta.size and self._hot.maxsize:
                    with self._hot_lock:
                        self._hot[key] = (_signature(st), meta, data)
                return BlobRead(meta, selection, data)
            return BlobRead(meta, selection, self._stream(fd, span.start, span.length))
        except BaseException:
            os.close(fd)
            raise

    def _open(self, key: str) -> tuple[int, os.stat_result] | None:
        """An open descriptor and its stat for the blob's regular file; None if there is none."""
        try:
            fd = os.open(self._path(key), os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            if not os.path.isdir(self.root):
                raise StoreUnavailable("storage root is missing") from None
            return None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return None
        return fd, st

    async def _stream(self, fd: int, offset: int, length: int) -> AsyncGenerator[bytes, None]:
        loop = asyncio.get_running_loop()
        try:
            while length > 0:
                chunk = await loop.run_in_executor(
                    None, os.pread, fd, min(CHUNK_SIZE, length), offset
                )
                if not chunk:
                    break
                offset += len(chunk)
                length -= len(chunk)
                yield chunk
        finally:
            os.close(fd)

    async def stat(self, key: str) -> BlobMeta | None:
        return await self._run(self._stat_with_header, key)

    def _stat_with_header(self, key: str) -> BlobMeta | None:
        opened = self._open(key)
        if opened is None:
            return None
        fd, st = opened
        try:
            meta = self._meta(key, st, fd)
            head = _pread_all(fd) if meta.width is None else b""
        finally:
            os.close(fd)
        if meta.width is None:
            # A file dropped in by hand: read its header now (never the pixels).
            with suppress(Exception):
                info = read_header(Path(self._path(key)), head)
                meta = replace(meta, width=info.width, height=info.height, pages=info.pages)
        return meta

    @overload
    def _meta(self, key: str, st: os.stat_result, fd: int) -> BlobMeta: ...
    @overload
    def _meta(self, key: str, st: os.stat_result, fd: int, *, nowait: bool) -> BlobMeta | Later: ...
    def _meta(
        self, key: str, st: os.stat_result, fd: int, *, nowait: bool = False
    ) -> BlobMeta | Later:
        signature = _signature(st)
        cached = self._meta_cache.get(key)
        if cached is not None and cached[0] == signature:
            return cached[1]
        sidecar = self._sidecar(key, signature, nowait=nowait)
        if sidecar is LATER:
            return LATER
        meta = sidecar or self._derived(key, st, fd)
        with self._meta_lock:
            if len(self._meta_cache) >= META_CACHE_ENTRIES:
                self._meta_cache.pop(next(iter(self._meta_cache)))
            self._meta_cache[key] = (signature, meta)
        return meta

    def _sidecar(
        self, key: str, signature: tuple[int, int, int], *, nowait: bool = False
    ) -> BlobMeta | Later | None:
        try:
            fd = os.open(self._meta_path(key), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            size = os.fstat(fd).st_size
            if nowait and not _in_page_cache(fd, size):
                return LATER
            record = json.loads(_pread_all(fd, size))
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)
        if tuple(record.pop("signature", ())) != signature:
            return None
        return BlobMeta(key=key, **record)

    def _derived(self, key: str, st: os.stat_result, fd: int) -> BlobMeta:
        head = os.pread(fd, SNIFF_BYTES, 0)
        return BlobMeta(
            key=key,
            size=st.st_size,
            etag=f'"{st.st_size:x}-{st.st_mtime_ns:x}"',
            modified=st.st_mtime,
            content_type=sniff_type(head) or "application/octet-stream",
        )

    def _current_etag(self, key: str) -> str | None:
        opened = self._open(key)
        if opened is None:
            return None
        fd, st = opened
        try:
            return self._meta(key, st, fd).etag
        finally:
            os.close(fd)

    # -- writes --------------------------------------------------------------------------

    @contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        shard = hashlib.blake2b(key.encode(), digest_size=2).digest()[0]
        fd = os.open(self._lock_root / f"{shard:02x}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    async def put(self, key: str, blob: NewBlob, when: Precondition) -> tuple[BlobMeta, bool]:
        return await self._run(self._put, key, blob, when)

    def _put(self, key: str, blob: NewBlob, when: Precondition) -> tuple[BlobMeta, bool]:
        path, meta_path = self._path(key), self._meta_path(key)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.makedirs(os.path.dirname(meta_path), exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise Conflict("a blob already uses part of this key as its name") from None
        st = os.stat(blob.path)
        meta = blob.meta(key, modified=st.st_mtime)
        record: dict[str, Any] = asdict(meta)
        del record["key"]
        record["signature"] = list(_signature(st))
        meta_tmp = blob.path.with_suffix(".json")
        _write_synced(meta_tmp, json.dumps(record).encode())
        try:
            with self._locked(key):
                current = self._current_etag(key)
                when.check(current)
                if os.path.isdir(path):
                    raise Conflict("a directory of blobs already has this name")
                os.replace(blob.path, path)
                os.replace(meta_tmp, meta_path)
                _sync_dir(os.path.dirname(path))
                _sync_dir(os.path.dirname(meta_path))
        finally:
            meta_tmp.unlink(missing_ok=True)
        return meta, current is not None

    async def delete(self, key: str, when: Precondition) -> bool:
        return await self._run(self._delete, key, when)

    def _delete(self, key: str, when: Precondition) -> bool:
        path, meta_path = self._path(key), self._meta_path(key)
        with self._locked(key):
            current = self._current_etag(key)
            when.check(current)
            if current is None:
                return False
            os.unlink(path)
            with suppress(FileNotFoundError):
                os.unlink(meta_path)
        self._prune(os.path.dirname(path), self.root)
        self._prune(os.path.dirname(meta_path), self._meta_root)
        return True

    @staticmethod
    def _prune(directory: str, stop: Path) -> None:
        """Remove directories a delete left empty, up to (not including) `stop`."""
        while directory != str(stop) and directory.startswith(str(stop)):
            try:
                os.rmdir(directory)
            except OSError:
                return
            directory = os.path.dirname(directory)

    async def check(self) -> None:
        await self._run(self._check)

    def _check(self) -> None:
        if not os.path.isdir(self.root):
            raise StoreUnavailable("storage root is missing")
        self.staging_dir.mkdir(exist_ok=True)
        probe = self.staging_dir / f".probe-{threading.get_ident()}"
        _write_synced(probe, b"ok")
        probe.unlink()

    async def close(self) -> None:
        return None


def _signature(st: os.stat_result) -> tuple[int, int, int]:
    """What ties cached metadata or bytes to one version of a file: inode, size, mtime."""
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _in_page_cache(fd: int, size: int) -> bool:
    """Whether a file's first and last pages are in the page cache (reading them would
    not wait for the disk). Pages of a file read whole come and go together; a miss in
    between costs one blocking read of at most INLINE_LIMIT on the event loop."""
    probe = bytearray(1)
    try:
        for offset in {0, size - 1} if size else ():
            os.preadv(fd, [probe], offset, os.RWF_NOWAIT)
    except OSError:  # EAGAIN: not cached; EOPNOTSUPP: a file system that cannot tell
        return False
    return True


def _pread_all(fd: int, length: int = SNIFF_BYTES, offset: int = 0) -> bytes:
    data = os.pread(fd, length, offset)
    while len(data) < length:
        more = os.pread(fd, length - len(data), offset + len(data))
        if not more:
            break
        data += more
    return data


def _write_synced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
