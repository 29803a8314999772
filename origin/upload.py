"""Receiving an upload: stream the body to a staging file under a cap, sniff it, read its header.

The body is never held in memory: chunks are gathered to about 1 MiB and written
(and hashed) in a worker thread. The type is judged from the first bytes before the
rest is read, so a non-image is refused early. Whatever goes wrong, the staging
file is removed; only a fully received, checked file reaches the store.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from cdn_common.errors import HTTPError, PayloadTooLarge, UnsupportedMedia
from cdn_common.files import write_all
from origin.sniff import SNIFF_BYTES, read_header, sniff_type
from origin.stores.base import NewBlob, unavailable

FLUSH_BYTES = 1024 * 1024


class ClientGone(HTTPError):
    status = 499  # nginx's "client closed request"; nobody receives it
    message = "client closed the connection"


async def receive_upload(
    chunks: AsyncIterator[bytes],
    *,
    staging_dir: Path,
    max_bytes: int,
    declared_length: int | None,
    owner: str,
) -> NewBlob:
    if declared_length is not None and declared_length > max_bytes:
        raise PayloadTooLarge(f"upload larger than {max_bytes} bytes")
    path = staging_dir / f".upload-{uuid.uuid4().hex}"
    loop = asyncio.get_running_loop()
    try:
        fd = await loop.run_in_executor(None, _create, path)
    except OSError as exc:
        raise unavailable(exc) from None
    digest = hashlib.sha256()
    size = 0
    head = b""
    pending: list[bytes] = []
    pending_bytes = 0
    try:
        async for chunk in chunks:
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(f"upload larger than {max_bytes} bytes")
            if len(head) < SNIFF_BYTES:
                head += chunk[: SNIFF_BYTES - len(head)]
                if len(head) >= SNIFF_BYTES and sniff_type(head) is None:
                    raise UnsupportedMedia("not an image format this service accepts")
            pending.append(chunk)
            pending_bytes += len(chunk)
            if pending_bytes >= FLUSH_BYTES:
                await loop.run_in_executor(None, _write, fd, digest, pending)
                pending, pending_bytes = [], 0
        await loop.run_in_executor(None, _write, fd, digest, pending)
        await loop.run_in_executor(None, os.fsync, fd)
        info = await loop.run_in_executor(None, read_header, path, head)
    except BaseException as exc:
        os.close(fd)
        path.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise unavailable(exc) from None
        raise
    os.close(fd)
    return NewBlob(
        path=path,
        size=size,
        sha256=digest.hexdigest(),
        content_type=info.content_type,
        width=info.width,
        height=info.height,
        pages=info.pages,
        owner=owner,
        uploaded_at=time.time(),
    )


def _create(path: Path) -> int:
    """A new staging file; the staging directory is made again if something removed it."""
    path.parent.mkdir(exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)


def _write(fd: int, digest: hashlib._Hash, chunks: list[bytes]) -> None:
    for chunk in chunks:
        digest.update(chunk)
        write_all(fd, chunk)
