"""The edge's disk tier filling up and turning read-only under load, then healing.

The tier sits on a real 3 MiB tmpfs (root here and in CI). Where mounting is not
permitted, the same checks run with the tier's one write seam (`DiskTier._write_file`)
failing with the same errno; the test says which it did.
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pyvips

from edge.cache.disk import DiskTier
from tests.edge.countingorigin import Blob, CountingOrigin
from tests.edge.edges import edge_for, files_in, metric
from tests.images import noisy_jpeg
from tests.servers import ServerThread, tmpfs


@pytest.fixture
def origin() -> Iterator[tuple[CountingOrigin, ServerThread]]:
    app = CountingOrigin({"big.jpg": Blob(noisy_jpeg(1200, 800))})
    with ServerThread(app) as server:
        yield app, server


# long enough that the tier cannot come back on while a test's failing requests run (at
# 0.3 s it did, on a slow CI machine: four 1200 px transforms took longer than that)
RETRY_S = 1.5


@pytest.fixture
def disk(edge_cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[bool]:
    monkeypatch.setattr("edge.cache.disk.RETRY_S", RETRY_S)
    with tmpfs(edge_cache_dir) as mounted:
        yield mounted


def inject(monkeypatch: pytest.MonkeyPatch, code: int | None) -> None:
    """Fallback only: every disk write fails with `code` (None: writes work again)."""
    original = DiskTier.__dict__["_write_file"]

    def failing(path: Path, data: bytes) -> None:
        raise OSError(code, errno.errorcode[code or 0])

    monkeypatch.setattr(DiskTier, "_write_file", staticmethod(failing) if code else original)


def width_of(response: httpx.Response) -> int:
    assert response.status_code == 200, response.text
    return int(pyvips.Image.new_from_buffer(response.content, "").width)


def test_a_full_disk_turns_the_tier_off_not_the_requests_and_it_comes_back(
    origin: Any, edge_cache_dir: Path, disk: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, server = origin
    # no free-space floor: with one, the edge first gives its own files back to the
    # host (the next test), and whether that ran before the hit below depended on how
    # long the failing requests took (its check runs at most once a second)
    with edge_for(server, memory_cache_mb=0, disk_min_free_mb=0) as edge:
        url = f"{edge.url}/_/w=%d,q=100/big.jpg"
        assert width_of(httpx.get(url % 500)) == 500
        files_in(edge_cache_dir, 1)
        if disk:  # fill what is left of the 3 MiB with a file the edge does not own
            filler = edge_cache_dir / "filler"
            with open(filler, "wb") as f, pytest.raises(OSError):
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
        else:
            inject(monkeypatch, errno.ENOSPC)
        for width in range(501, 509):  # every request still answered
            assert width_of(httpx.get(url % width)) == width
        assert metric(edge, "edge_disk_cache_write_errors_total") >= 1
        assert httpx.get(f"{edge.url}/readyz").status_code == 503
        hit = httpx.get(url % 500)  # what was on disk before is still served from it
        assert hit.headers["cache-status"] == "edge; hit; detail=disk"
        assert width_of(hit) == 500
        if disk:
            filler.unlink()
        else:
            inject(monkeypatch, None)
        time.sleep(RETRY_S + 0.1)
        assert width_of(httpx.get(url % 520)) == 520
        files_in(edge_cache_dir, 2)
        assert httpx.get(url % 520).headers["cache-status"] == "edge; hit; detail=disk"
        assert httpx.get(f"{edge.url}/readyz").status_code == 200
    assert not list(edge_cache_dir.rglob("*.tmp"))


def test_below_its_free_space_floor_the_edge_gives_its_oldest_files_back(
    origin: Any, edge_cache_dir: Path, disk: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not disk:
        pytest.skip("needs a file system of its own to fill (a tmpfs: root, as in CI)")
    monkeypatch.setattr("edge.cache.disk.FREE_CHECK_S", 0.0)  # check before every write
    _, server = origin
    floor = 1024 * 1024
    with edge_for(server, memory_cache_mb=0, disk_min_free_mb=floor / 2**20) as edge:
        url = f"{edge.url}/_/w=%d,q=100/big.jpg"
        for width in (500, 501, 502):  # about 185 KB each
            assert width_of(httpx.get(url % width)) == width
            files_in(edge_cache_dir, width - 499)
        # another tenant of the file system leaves a little more than the floor free:
        # the next entry would take it below, so the oldest one makes room for it
        stat = os.statvfs(edge_cache_dir)
        (edge_cache_dir / "filler").write_bytes(
            bytes(stat.f_bavail * stat.f_frsize - floor - 100 * 1024)
        )
        assert width_of(httpx.get(url % 503)) == 503
        for _ in range(200):
            if httpx.get(url % 503).headers["cache-status"].startswith("edge; hit"):
                break
            time.sleep(0.01)
        for width in (501, 502, 503):
            assert httpx.get(url % width).headers["cache-status"] == "edge; hit; detail=disk"
        assert httpx.get(url % 500).headers["cache-status"].startswith("edge; fwd=")
        assert metric(edge, "edge_disk_cache_write_errors_total") == 0
        stat = os.statvfs(edge_cache_dir)
        assert stat.f_bavail * stat.f_frsize >= floor


def test_a_read_only_disk_is_read_but_not_written_until_it_is_writable_again(
    origin: Any, edge_cache_dir: Path, disk: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, server = origin
    with edge_for(server, memory_cache_mb=0, disk_min_free_mb=0.25) as edge:
        url = f"{edge.url}/_/w=%d/big.jpg"
        assert width_of(httpx.get(url % 300)) == 300
        files_in(edge_cache_dir, 1)
        if disk:
            subprocess.run(["mount", "-o", "remount,ro", str(edge_cache_dir)], check=True)
        else:
            inject(monkeypatch, errno.EROFS)
        try:
            for width in range(301, 305):
                assert width_of(httpx.get(url % width)) == width
            assert metric(edge, "edge_disk_cache_write_errors_total") >= 1
            assert metric(edge, "edge_disk_cache_enabled") == 0
            hit = httpx.get(url % 300)
            assert hit.headers["cache-status"] == "edge; hit; detail=disk"
        finally:
            if disk:
                subprocess.run(["mount", "-o", "remount,rw", str(edge_cache_dir)], check=True)
            else:
                inject(monkeypatch, None)
        time.sleep(RETRY_S + 0.1)
        assert width_of(httpx.get(url % 310)) == 310
        files_in(edge_cache_dir, 2)
        assert metric(edge, "edge_disk_cache_enabled") == 1
