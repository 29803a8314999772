"""Only the directory store: hot-blob memory, hand-placed files, sidecars that go stale."""

from __future__ import annotations

import errno
import hashlib
import os
import threading
import time
import uuid
from pathlib import Path

import pytest

from cdn_common.errors import Conflict
from origin.stores import local
from origin.stores.base import WHOLE, BlobRead, NewBlob, Precondition
from origin.stores.local import LocalStore
from tests.images import jpeg, png

pytestmark = pytest.mark.anyio


def staged(store: LocalStore, data: bytes) -> NewBlob:
    path = store.staging_dir / f".t-{uuid.uuid4().hex}"
    path.write_bytes(data)
    return NewBlob(
        path,
        len(data),
        hashlib.sha256(data).hexdigest(),
        "image/jpeg",
        64,
        48,
        1,
        "k1",
        time.time(),
    )


async def whole(store: LocalStore, key: str) -> BlobRead:
    read = await store.read(key, lambda meta: WHOLE)
    assert read is not None
    return read


async def test_hot_blob_is_served_from_memory_until_the_file_changes(blob_dir: Path) -> None:
    store = LocalStore(blob_dir, memory_cache_bytes=10 * 1024 * 1024)
    path = blob_dir / "hot.jpg"
    path.write_bytes(jpeg(quality=50))
    first = await whole(store, "hot.jpg")
    again = await whole(store, "hot.jpg")
    assert again.body is first.body, "the second read comes from memory"
    newer = jpeg(quality=90)
    path.write_bytes(newer)  # same inode, new size and mtime
    changed = await whole(store, "hot.jpg")
    assert changed.body == newer
    assert changed.meta.etag != first.meta.etag
    os.unlink(path)
    assert await store.read("hot.jpg", lambda meta: WHOLE) is None


async def test_hot_cache_respects_its_byte_budget(blob_dir: Path) -> None:
    data = jpeg(200, 150)
    store = LocalStore(blob_dir, memory_cache_bytes=len(data) * 2 + 1024)
    for i in range(5):
        (blob_dir / f"{i}.jpg").write_bytes(data)
        await whole(store, f"{i}.jpg")
    assert store._hot.currsize <= store._hot.maxsize
    assert len(store._hot) == 2


async def test_hand_replaced_upload_does_not_keep_the_old_metadata(blob_dir: Path) -> None:
    store = LocalStore(blob_dir)
    meta, _ = await store.put("a.jpg", staged(store, jpeg()), Precondition())
    assert (await whole(store, "a.jpg")).meta.owner == "k1"
    replacement = blob_dir / "incoming.png"
    replacement.write_bytes(png())
    os.replace(replacement, blob_dir / "a.jpg")
    read = await whole(store, "a.jpg")
    assert read.meta.owner is None
    assert read.meta.content_type == "image/png"
    assert read.meta.etag != meta.etag


async def test_a_key_below_an_existing_blob_is_a_conflict(blob_dir: Path) -> None:
    store = LocalStore(blob_dir)
    await store.put("a", staged(store, jpeg()), Precondition())
    with pytest.raises(Conflict):
        await store.put("a/b.jpg", staged(store, jpeg()), Precondition())
    await store.put("d/e.jpg", staged(store, jpeg()), Precondition())
    with pytest.raises(Conflict):
        await store.put("d", staged(store, jpeg()), Precondition())


@pytest.fixture
def readers(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The thread that read each blob's bytes, in order."""
    seen: list[int] = []
    original = local._pread_all

    def recording(fd: int, length: int = 64, offset: int = 0) -> bytes:
        seen.append(threading.get_ident())
        return original(fd, length, offset)

    monkeypatch.setattr(local, "_pread_all", recording)
    return seen


@pytest.mark.parametrize("cached", [True, False], ids=["page-cached", "on-disk"])
async def test_a_read_runs_on_the_event_loop_only_when_it_cannot_wait_for_the_disk(
    blob_dir: Path, readers: list[int], monkeypatch: pytest.MonkeyPatch, cached: bool
) -> None:
    store = LocalStore(blob_dir)  # no hot-blob memory: every read goes to the file
    data = jpeg(300, 200)
    (blob_dir / "a.jpg").write_bytes(data)
    monkeypatch.setattr(local, "_in_page_cache", lambda fd, size: cached)
    first, second = await whole(store, "a.jpg"), await whole(store, "a.jpg")
    assert first.body == second.body == data
    loop_thread = threading.get_ident()
    assert readers and all((thread == loop_thread) == cached for thread in readers)


async def test_an_uploaded_blob_whose_sidecar_is_not_cached_is_read_in_a_thread(
    blob_dir: Path, readers: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(blob_dir)
    data = jpeg(64, 48)
    await store.put("up.jpg", staged(store, data), Precondition())
    fresh = LocalStore(blob_dir)  # its metadata cache is empty: the sidecar is read
    sidecar = str(fresh._meta_path("up.jpg"))
    monkeypatch.setattr(
        local, "_in_page_cache", lambda fd, size: os.readlink(f"/proc/self/fd/{fd}") != sidecar
    )
    read = await whole(fresh, "up.jpg")
    assert read.body == data and read.meta.owner == "k1"
    assert readers[-1] != threading.get_ident()


def test_page_cache_residency_is_told_by_rwf_nowait(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(os.urandom(1 << 20))
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            os.preadv(fd, [bytearray(1)], 0, os.RWF_NOWAIT)
        except OSError as error:  # a file system that cannot tell (tmpfs): never "cached"
            assert error.errno == errno.EOPNOTSUPP
            assert not local._in_page_cache(fd, 1 << 20)
            return
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # out of the page cache
        assert not local._in_page_cache(fd, 1 << 20)
        os.pread(fd, 1 << 20, 0)
        assert local._in_page_cache(fd, 1 << 20)
    finally:
        os.close(fd)


async def test_a_sidecar_is_whole_when_the_kernel_takes_a_few_bytes_per_write(
    blob_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # short writes cannot be made to happen on a real file system on demand, so `os.write`
    # is wrapped to take at most 7 bytes a call, as it may after a signal or near ENOSPC
    real_write = os.write
    monkeypatch.setattr(local.os, "write", lambda fd, data: real_write(fd, bytes(data[:7])))
    store = LocalStore(blob_dir)
    meta, _ = await store.put("a.jpg", staged(store, jpeg()), Precondition())
    monkeypatch.undo()
    fresh = LocalStore(blob_dir)  # reads the sidecar from disk, not from memory
    read = await whole(fresh, "a.jpg")
    assert (read.meta.owner, read.meta.etag) == ("k1", meta.etag)
