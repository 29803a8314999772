"""The blob store interface every backend implements, and the types it speaks.

A store knows keys, bytes and metadata, not HTTP. Reads take a `choose` callback
that sees the metadata before any body byte is read and says what to send (all of
it, one range, or nothing), so a 304 or a range costs no wasted I/O.
"""

from __future__ import annotations

import errno
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from cdn_common.errors import PreconditionFailed, Unavailable
from cdn_common.http import ByteRange, etag_matches_strong

# Bodies up to this size are read in one call and sent as one message; larger ones stream.
INLINE_LIMIT = 1024 * 1024
CHUNK_SIZE = 1024 * 1024


class StoreUnavailable(Unavailable):
    message = "storage unavailable"


_OS_MESSAGES = {
    errno.ENOSPC: "storage full",
    errno.EDQUOT: "storage quota exceeded",
    errno.EROFS: "storage is read-only",
    errno.EACCES: "storage permission denied",
    errno.EPERM: "storage permission denied",
}


def unavailable(exc: OSError) -> StoreUnavailable:
    """A local file-system failure as the short 503 a client sees."""
    return StoreUnavailable(_OS_MESSAGES.get(exc.errno or 0, "storage unavailable"))


@dataclass(frozen=True, slots=True)
class BlobMeta:
    key: str
    size: int
    etag: str  # quoted, strong
    modified: float  # POSIX seconds
    content_type: str
    width: int | None = None
    height: int | None = None
    pages: int | None = None
    owner: str | None = None
    uploaded_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "size": self.size,
            "type": self.content_type,
            "width": self.width,
            "height": self.height,
            "pages": self.pages,
            "etag": self.etag,
            "uploaded_at": _iso(self.uploaded_at),
            "modified": _iso(self.modified),
            "owner": self.owner,
        }


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class NewBlob:
    """An upload, spooled to a local file and checked, ready to commit."""

    path: Path
    size: int
    sha256: str
    content_type: str
    width: int
    height: int
    pages: int
    owner: str
    uploaded_at: float

    def meta(self, key: str, *, etag: str | None = None, modified: float | None = None) -> BlobMeta:
        """What the store will say about this blob once committed under `key`."""
        return BlobMeta(
            key=key,
            size=self.size,
            etag=etag or f'"{self.sha256[:32]}"',
            modified=self.uploaded_at if modified is None else modified,
            content_type=self.content_type,
            width=self.width,
            height=self.height,
            pages=self.pages,
            owner=self.owner,
            uploaded_at=self.uploaded_at,
        )


@dataclass(frozen=True, slots=True)
class Precondition:
    if_match: str | None = None  # If-Match header value
    if_none_match_any: bool = False  # If-None-Match: *

    def check(self, current_etag: str | None) -> None:
        if self.if_none_match_any and current_etag is not None:
            raise PreconditionFailed("blob exists (If-None-Match: *)")
        if self.if_match is not None and (
            current_etag is None or not etag_matches_strong(self.if_match, current_etag)
        ):
            raise PreconditionFailed("etag does not match (If-Match)")


class Skip:
    """`choose` answer: send no body (a 304, or a HEAD)."""


class Whole:
    """`choose` answer: send the whole body."""


SKIP = Skip()
WHOLE = Whole()
Selection = Skip | Whole | ByteRange
Choose = Callable[[BlobMeta], Selection]
Body = bytes | AsyncGenerator[bytes, None]


@dataclass(frozen=True, slots=True)
class BlobRead:
    meta: BlobMeta
    selection: Selection
    body: Body  # b"" for SKIP; an iterator must be closed (aclose) by the caller


class BlobStore(Protocol):
    """Async blob storage. Every method raises StoreUnavailable when the backend fails."""

    staging_dir: Path  # where uploads are spooled before `put` (same filesystem where it matters)

    async def read(self, key: str, choose: Choose) -> BlobRead | None:
        """Metadata, what `choose` selected, and that body; None when the key is absent."""
        ...

    async def stat(self, key: str) -> BlobMeta | None:
        """Metadata (with width/height where the store can tell), or None."""
        ...

    async def put(self, key: str, blob: NewBlob, when: Precondition) -> tuple[BlobMeta, bool]:
        """Commit atomically; returns the new metadata and whether an older blob was replaced."""
        ...

    async def delete(self, key: str, when: Precondition) -> bool:
        """Remove; False when there was nothing to remove."""
        ...

    async def check(self) -> None:
        """Raise StoreUnavailable unless the backend answers."""
        ...

    async def close(self) -> None: ...
