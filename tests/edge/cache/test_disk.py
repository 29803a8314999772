"""The disk tier's writes: small files on the event loop, large ones and a slow disk's in
the writer thread, and every one indexed and readable once `flush` returns."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from edge.cache import disk
from edge.cache.disk import DiskTier
from edge.cache.entry import Entry

pytestmark = pytest.mark.anyio


def entry(key: str, size: int) -> Entry:
    now = time.time()
    return Entry(
        key=key,
        source="s",
        status=200,
        body=bytes([len(key)]) * size,
        headers=[(b"content-type", b"image/jpeg")],
        etag=b'"x"',
        stored=now,
        fresh_until=now + 60,
    )


@pytest.fixture
def writers(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Which thread wrote each file, by file name (the tier's one write seam, wrapped)."""
    seen: dict[str, int] = {}
    original = DiskTier.__dict__["_write_file"]

    def recording(path: str, data: bytes) -> None:
        seen[Path(path).name] = threading.get_ident()
        original(path, data)

    monkeypatch.setattr(DiskTier, "_write_file", staticmethod(recording))
    return seen


async def test_small_files_are_written_on_the_loop_and_large_ones_in_a_thread(
    tmp_path: Path, writers: dict[str, int]
) -> None:
    tier = DiskTier(tmp_path, budget=64 << 20)
    small, large = entry("small", 1000), entry("large", disk.SYNC_WRITE_MAX + 1)
    tier.put(small)
    tier.put(large)
    await tier.flush()
    loop_thread = threading.get_ident()
    assert writers[disk.file_name("small")] == loop_thread
    assert writers[disk.file_name("large")] != loop_thread
    for written in (small, large):
        found = await tier.get(written.key)
        assert found is not None and bytes(found.body) == written.body
    assert len(tier) == 2


async def test_a_slow_write_sends_the_next_ones_to_the_thread_for_a_while(
    tmp_path: Path, writers: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    tier = DiskTier(tmp_path, budget=64 << 20)
    recording = DiskTier.__dict__["_write_file"]

    def slow(path: str, data: bytes) -> None:
        time.sleep(disk.SLOW_WRITE_S * 1.5)  # as a disk behind on its dirty pages
        recording(path, data)

    monkeypatch.setattr(DiskTier, "_write_file", staticmethod(slow))
    tier.put(entry("first", 1000))  # on the loop, and slow
    monkeypatch.setattr(DiskTier, "_write_file", recording)
    tier.put(entry("second", 1000))
    await tier.flush()
    loop_thread = threading.get_ident()
    assert writers[disk.file_name("first")] == loop_thread
    assert writers[disk.file_name("second")] != loop_thread
    assert await tier.get("second") is not None

    tier._inline_off_until = 0.0  # the back-off has run out
    tier.put(entry("third", 1000))
    await tier.flush()
    assert writers[disk.file_name("third")] == loop_thread


async def test_writes_queued_for_the_thread_keep_their_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the same key written twice while the writer is busy: the later entry wins
    tier = DiskTier(tmp_path, budget=64 << 20)
    monkeypatch.setattr(disk, "SYNC_WRITE_MAX", 0)  # every write to the thread
    older, newer = entry("k", 5000), entry("k", 7000)
    tier.put(older)
    tier.put(newer)
    await tier.flush()
    found = await tier.get("k")
    assert found is not None and len(found.body) == 7000
    assert tier.size == len(newer.to_bytes())


async def test_the_rebuild_makes_the_shards_and_moves_an_older_layouts_files(
    tmp_path: Path,
) -> None:
    first = DiskTier(tmp_path, budget=64 << 20)
    await first.rebuild()
    shards = sorted(p.name for p in tmp_path.iterdir())
    assert shards == [f"{i:02x}" for i in range(256)]  # made once, not on each first write
    first.put(entry("moved", 3000))
    first.put(entry("kept", 4000))
    await first.flush()
    name = disk.file_name("moved")
    placed = tmp_path / name[:2] / name
    assert placed.is_file() and first.path(name) == placed
    # nginx's levels=1:2, as this tier used to write them: ab/cd/<name>
    old = tmp_path / name[:2] / name[2:4] / name
    old.parent.mkdir()
    placed.rename(old)

    second = DiskTier(tmp_path, budget=64 << 20)
    await second.rebuild()
    assert placed.is_file() and not old.parent.exists()
    assert len(second) == 2 and second.corrupt == 0
    for key, size in (("moved", 3000), ("kept", 4000)):
        found = await second.get(key)
        assert found is not None and found.body == entry(key, size).body


async def test_a_file_written_since_the_start_wins_over_its_older_layouts_copy(
    tmp_path: Path,
) -> None:
    tier = DiskTier(tmp_path, budget=64 << 20)
    await tier.rebuild()
    tier.put(entry("k", 3000))
    await tier.flush()
    name = disk.file_name("k")
    old = tmp_path / name[:2] / name[2:4] / name
    old.parent.mkdir()
    old.write_bytes(entry("k", 1000).to_bytes())  # as an edge before the upgrade left it
    again = DiskTier(tmp_path, budget=64 << 20)
    await again.rebuild()
    assert not old.exists() and not old.parent.exists()
    found = await again.get("k")
    assert found is not None and len(found.body) == 3000
