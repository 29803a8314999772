"""Blob stores: pick one from the `ORIGIN_STORAGE` URL."""

from __future__ import annotations

import tempfile
from pathlib import Path

from origin.stores.base import BlobStore


def open_store(
    url: str, *, s3_endpoint: str | None = None, memory_cache_bytes: int = 0
) -> BlobStore:
    """The store a storage URL names: file://DIR, s3://bucket/prefix or memory://."""
    if url.startswith("file://"):
        from origin.stores.local import LocalStore

        root = Path(url.removeprefix("file://") or ".")
        return LocalStore(root, memory_cache_bytes=memory_cache_bytes)
    if url.startswith("s3://"):
        from origin.stores.s3 import S3Store

        staging = Path(tempfile.gettempdir()) / "imagecdn-origin-staging"
        return S3Store(url, endpoint=s3_endpoint, staging_dir=staging)
    if url.startswith("memory://"):
        from origin.stores.memory import MemoryStore

        return MemoryStore()
    raise ValueError(f"unknown storage URL {url!r}")
