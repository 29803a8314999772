"""A store in a dict, for tests and throw-away runs (`memory://`)."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncGenerator
from pathlib import Path

from cdn_common.http import ByteRange
from origin.stores.base import (
    CHUNK_SIZE,
    INLINE_LIMIT,
    BlobMeta,
    BlobRead,
    Choose,
    NewBlob,
    Precondition,
    Skip,
)


class MemoryStore:
    def __init__(self) -> None:
        self._blobs: dict[str, tuple[BlobMeta, bytes]] = {}
        self._staging = tempfile.TemporaryDirectory(prefix="imagecdn-memory-")
        self.staging_dir = Path(self._staging.name)
        self._lock = asyncio.Lock()

    async def read(self, key: str, choose: Choose) -> BlobRead | None:
        found = self._blobs.get(key)
        if found is None:
            return None
        meta, data = found
        selection = choose(meta)
        if isinstance(selection, Skip):
            return BlobRead(meta, selection, b"")
        if isinstance(selection, ByteRange):
            data = data[selection.start : selection.end + 1]
        return BlobRead(meta, selection, data if len(data) <= INLINE_LIMIT else _chunks(data))

    async def stat(self, key: str) -> BlobMeta | None:
        found = self._blobs.get(key)
        return found[0] if found else None

    async def put(self, key: str, blob: NewBlob, when: Precondition) -> tuple[BlobMeta, bool]:
        data = await asyncio.to_thread(blob.path.read_bytes)
        async with self._lock:
            current = self._blobs.get(key)
            when.check(current[0].etag if current else None)
            meta = blob.meta(key)
            self._blobs[key] = (meta, data)
        blob.path.unlink(missing_ok=True)
        return meta, current is not None

    async def delete(self, key: str, when: Precondition) -> bool:
        async with self._lock:
            current = self._blobs.get(key)
            when.check(current[0].etag if current else None)
            return self._blobs.pop(key, None) is not None

    async def check(self) -> None:
        return None

    async def close(self) -> None:
        self._staging.cleanup()


async def _chunks(data: bytes) -> AsyncGenerator[bytes, None]:
    for start in range(0, len(data), CHUNK_SIZE):
        yield data[start : start + CHUNK_SIZE]
