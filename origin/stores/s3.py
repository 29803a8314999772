"""Blobs in S3-compatible storage (`s3://bucket/prefix`) through obstore.

obstore (Rust's `object_store`, as used by Arrow, Polars and Delta) was chosen over
aiobotocore: one library that also speaks GCS and Azure, native async without
botocore's per-call overhead, streaming multipart uploads from a file, and atomic
conditional puts (create-only, update-if-etag) mapped onto each service's own API.

Metadata the origin records travels as object metadata (`x-amz-meta-*`), so a blob
and what describes it are written by one atomic PUT. Reads take a HEAD first (the
metadata `choose` needs) and then a GET pinned to that ETag, so a body never
belongs to a different version than its headers.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import obstore
from obstore.exceptions import AlreadyExistsError, BaseError, PreconditionError
from obstore.store import S3Store as _ObstoreS3

from cdn_common.errors import PreconditionFailed
from cdn_common.http import ByteRange, digits
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
)

if TYPE_CHECKING:
    from obstore import Attributes, ObjectMeta, PutMode

T = TypeVar("T")
PROBE_KEY = ".readyz-probe"


async def _guard(call: Awaitable[T]) -> T:
    """Foreign errors in, our errors out: the one place obstore's exceptions are mapped."""
    try:
        return await call
    except (AlreadyExistsError, PreconditionError):
        raise PreconditionFailed() from None
    except FileNotFoundError:
        raise
    except (BaseError, OSError, RuntimeError):
        raise StoreUnavailable() from None


class S3Store:
    def __init__(self, url: str, *, endpoint: str | None, staging_dir: Path) -> None:
        options: dict[str, Any] = {}
        if endpoint:
            options["endpoint"] = endpoint
        self._store = _ObstoreS3.from_url(
            url,
            client_options={
                "allow_http": bool(endpoint and endpoint.startswith("http://")),
                "connect_timeout": timedelta(seconds=2),
                "timeout": timedelta(seconds=30),
            },
            retry_config={
                "max_retries": 2,
                "retry_timeout": timedelta(seconds=5),
                "backoff": {
                    "init_backoff": timedelta(milliseconds=50),
                    "max_backoff": timedelta(seconds=1),
                    "base": 2,
                },
            },
            **options,
        )
        self.staging_dir = staging_dir
        self.staging_dir.mkdir(parents=True, exist_ok=True)

    async def _head(self, key: str) -> BlobMeta | None:
        try:
            result = await _guard(obstore.get_async(self._store, key, options={"head": True}))
        except FileNotFoundError:
            return None
        return _meta(key, result.meta, result.attributes)

    async def read(self, key: str, choose: Choose) -> BlobRead | None:
        meta = await self._head(key)
        if meta is None:
            return None
        selection = choose(meta)
        if isinstance(selection, Skip) or meta.size == 0:
            return BlobRead(meta, selection, b"")
        span = selection if isinstance(selection, ByteRange) else ByteRange(0, meta.size - 1)
        try:
            result = await _guard(
                obstore.get_async(
                    self._store,
                    key,
                    options={"range": (span.start, span.end + 1), "if_match": meta.etag},
                )
            )
        except (FileNotFoundError, PreconditionFailed):
            return await self.read(key, choose)  # replaced between HEAD and GET: start over
        if span.length <= INLINE_LIMIT:
            return BlobRead(meta, selection, bytes(await _guard(result.bytes_async())))
        return BlobRead(meta, selection, _stream(result.stream(min_chunk_size=CHUNK_SIZE)))

    async def stat(self, key: str) -> BlobMeta | None:
        return await self._head(key)

    async def put(self, key: str, blob: NewBlob, when: Precondition) -> tuple[BlobMeta, bool]:
        current = await self._head(key)
        when.check(current.etag if current else None)
        mode: PutMode = "overwrite"
        if when.if_none_match_any:
            mode = "create"
        elif current is not None and when.if_match is not None and when.if_match.strip() != "*":
            mode = {"e_tag": current.etag}  # the server re-checks it atomically
        attributes: Attributes = {
            "Content-Type": blob.content_type,
            "owner": blob.owner,
            "width": str(blob.width),
            "height": str(blob.height),
            "pages": str(blob.pages),
            "uploaded-at": repr(blob.uploaded_at),
            "sha256": blob.sha256,
        }
        result = await _guard(
            obstore.put_async(self._store, key, blob.path, attributes=attributes, mode=mode)
        )
        blob.path.unlink(missing_ok=True)
        return blob.meta(key, etag=result["e_tag"]), current is not None

    async def delete(self, key: str, when: Precondition) -> bool:
        current = await self._head(key)
        when.check(current.etag if current else None)
        if current is None:
            return False
        await _guard(obstore.delete_async(self._store, key))
        return True

    async def check(self) -> None:
        """Reachable, and the bucket there: a HEAD of a missing key in a missing bucket
        is a plain 404, so readiness lists (one key at most) instead."""
        listing = obstore.list(self._store, prefix=PROBE_KEY, chunk_size=1)
        try:
            await _guard(listing.collect_async())
        except FileNotFoundError:
            raise StoreUnavailable("bucket not found") from None

    async def close(self) -> None:
        return None


async def _stream(chunks: AsyncIterator[Any]) -> AsyncGenerator[bytes, None]:
    async for chunk in chunks:
        yield bytes(chunk)


def _int(value: str | None) -> int | None:
    return int(value) if value and digits(value) else None


def _meta(key: str, meta: ObjectMeta, attributes: Attributes) -> BlobMeta:
    uploaded = attributes.get("uploaded-at")
    return BlobMeta(
        key=key,
        size=meta["size"],
        etag=meta["e_tag"] or f'"{meta["size"]:x}-{meta["last_modified"].timestamp():.0f}"',
        modified=meta["last_modified"].timestamp(),
        content_type=attributes.get("Content-Type", "application/octet-stream"),
        width=_int(attributes.get("width")),
        height=_int(attributes.get("height")),
        pages=_int(attributes.get("pages")),
        owner=attributes.get("owner"),
        uploaded_at=float(uploaded) if uploaded else None,
    )
