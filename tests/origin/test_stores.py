"""One contract, every blob store: memory, a local directory, and S3 over a real HTTP endpoint."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cdn_common.errors import PreconditionFailed
from cdn_common.http import ByteRange
from origin.stores import open_store
from origin.stores.base import (
    INLINE_LIMIT,
    SKIP,
    WHOLE,
    BlobMeta,
    BlobRead,
    BlobStore,
    NewBlob,
    Precondition,
    Selection,
    StoreUnavailable,
)
from tests.images import jpeg, noisy_jpeg
from tests.servers import MotoServer

pytestmark = pytest.mark.anyio
NONE = Precondition()


@pytest.fixture(params=["memory", "local", "s3"])
async def store(
    request: pytest.FixtureRequest, blob_dir: Path, s3_url: str
) -> AsyncIterator[BlobStore]:
    if request.param == "memory":
        made = open_store("memory://")
    elif request.param == "local":
        made = open_store(f"file://{blob_dir}")
    else:
        moto: MotoServer = request.getfixturevalue("moto")
        request.getfixturevalue("s3_env")
        made = open_store(s3_url, s3_endpoint=moto.endpoint)
    yield made
    await made.close()


def staged(store: BlobStore, data: bytes, owner: str = "k1") -> NewBlob:
    path = store.staging_dir / f".test-{uuid.uuid4().hex}"
    path.write_bytes(data)
    return NewBlob(
        path=path,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        content_type="image/jpeg",
        width=64,
        height=48,
        pages=1,
        owner=owner,
        uploaded_at=time.time(),
    )


async def body_of(read: BlobRead) -> bytes:
    if isinstance(read.body, bytes):
        return read.body
    return b"".join([chunk async for chunk in read.body])


def always(selection: Selection):  # type: ignore[no-untyped-def]
    return lambda meta: selection


async def test_put_then_read_gives_bytes_and_metadata(store: BlobStore) -> None:
    data = jpeg()
    blob = staged(store, data)
    meta, replaced = await store.put("photos/a.jpg", blob, NONE)
    assert not replaced
    assert not blob.path.exists(), "the staging file is consumed by the commit"
    read = await store.read("photos/a.jpg", always(WHOLE))
    assert read is not None
    assert await body_of(read) == data
    assert read.meta.size == len(data)
    assert read.meta.etag == meta.etag
    assert read.meta.content_type == "image/jpeg"
    stat = await store.stat("photos/a.jpg")
    assert stat is not None
    assert (stat.width, stat.height, stat.owner) == (64, 48, "k1")
    assert stat.uploaded_at is not None


async def test_missing_key_is_none(store: BlobStore) -> None:
    assert await store.read("nope.jpg", always(WHOLE)) is None
    assert await store.stat("nope.jpg") is None
    assert await store.delete("nope.jpg", NONE) is False


async def test_choose_sees_metadata_before_the_body(store: BlobStore) -> None:
    data = jpeg()
    await store.put("k.jpg", staged(store, data), NONE)
    seen: list[BlobMeta] = []

    def choose(meta: BlobMeta) -> Selection:
        seen.append(meta)
        return SKIP

    read = await store.read("k.jpg", choose)
    assert read is not None and read.body == b""
    assert seen[0].size == len(data)


async def test_range_read(store: BlobStore) -> None:
    data = jpeg()
    await store.put("k.jpg", staged(store, data), NONE)
    read = await store.read("k.jpg", always(ByteRange(10, 19)))
    assert read is not None
    assert await body_of(read) == data[10:20]


async def test_overwrite_reports_replacement_and_changes_etag(store: BlobStore) -> None:
    first, _ = await store.put("k.jpg", staged(store, jpeg(quality=50)), NONE)
    second, replaced = await store.put("k.jpg", staged(store, jpeg(quality=90)), NONE)
    assert replaced
    assert first.etag != second.etag
    read = await store.read("k.jpg", always(WHOLE))
    assert read is not None and read.meta.etag == second.etag


async def test_if_none_match_star_refuses_an_existing_key(store: BlobStore) -> None:
    create_only = Precondition(if_none_match_any=True)
    await store.put("k.jpg", staged(store, jpeg()), create_only)
    with pytest.raises(PreconditionFailed):
        await store.put("k.jpg", staged(store, jpeg(quality=30)), create_only)


async def test_if_match_needs_the_current_etag(store: BlobStore) -> None:
    meta, _ = await store.put("k.jpg", staged(store, jpeg()), NONE)
    with pytest.raises(PreconditionFailed):
        await store.put("k.jpg", staged(store, jpeg(quality=30)), Precondition(if_match='"x"'))
    with pytest.raises(PreconditionFailed):
        await store.put("new.jpg", staged(store, jpeg()), Precondition(if_match=meta.etag))
    _, replaced = await store.put(
        "k.jpg", staged(store, jpeg(quality=30)), Precondition(if_match=meta.etag)
    )
    assert replaced


async def test_delete(store: BlobStore) -> None:
    meta, _ = await store.put("a/b/c.jpg", staged(store, jpeg()), NONE)
    with pytest.raises(PreconditionFailed):
        await store.delete("a/b/c.jpg", Precondition(if_match='"other"'))
    assert await store.delete("a/b/c.jpg", Precondition(if_match=meta.etag)) is True
    assert await store.read("a/b/c.jpg", always(WHOLE)) is None
    assert await store.delete("a/b/c.jpg", NONE) is False


async def test_large_blob_streams_in_chunks(store: BlobStore) -> None:
    data = noisy_jpeg(1400, 1000)
    assert len(data) > INLINE_LIMIT
    await store.put("big.jpg", staged(store, data), NONE)
    read = await store.read("big.jpg", always(WHOLE))
    assert read is not None
    assert not isinstance(read.body, bytes), "large bodies are streamed, not loaded whole"
    assert await body_of(read) == data


async def test_check_passes_on_a_working_store(store: BlobStore) -> None:
    await store.check()


async def test_check_fails_when_the_bucket_is_missing(moto: MotoServer, s3_env: None) -> None:
    """A reachable endpoint is not enough: readiness must see the bucket (a HEAD of a
    missing key in a missing bucket is just a 404)."""
    made = open_store("s3://no-such-bucket/p", s3_endpoint=moto.endpoint)
    with pytest.raises(StoreUnavailable):
        await made.check()
    await made.close()
