"""A full disk and a read-only disk under a running origin: 503 with a short message, then recovery.

The store sits on a real 3 MiB tmpfs (we run as root here and in CI). Where mounting
is not permitted, the same checks run against a store whose file system calls fail with
the same errno, injected at the one seam the store has for it (`_run`); the test says so.
"""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from origin.app import build_app
from origin.stores.local import LocalStore
from tests.images import noisy_jpeg
from tests.origin.conftest import ADMIN, make_settings
from tests.servers import ServerThread, tmpfs


class InjectedFaults(LocalStore):
    """Fallback only: the next file-system call fails with `fail_with`."""

    fail_with: int | None = None

    async def _run(self, fn: Any, *args: Any) -> Any:
        if self.fail_with is not None:
            code, self.fail_with = self.fail_with, None
            return await super()._run(_raise(code))
        return await super()._run(fn, *args)


def _raise(code: int) -> Any:
    def fail(*args: Any) -> None:
        raise OSError(code, errno.errorcode[code])

    return fail


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[tuple[Path, bool]]:
    root = tmp_path / "disk"
    with tmpfs(root) as mounted:
        yield root, mounted


def test_full_disk_is_503_and_heals(disk: tuple[Path, bool]) -> None:
    root, mounted = disk
    store = LocalStore(root) if mounted else InjectedFaults(root)
    image = noisy_jpeg(1000, 800)
    assert 500_000 < len(image) < 1_500_000
    with ServerThread(build_app(make_settings(root), store)) as origin:
        assert httpx.put(f"{origin.url}/a.jpg", content=image, headers=ADMIN).status_code == 201
        if not mounted:
            store.fail_with = errno.ENOSPC  # type: ignore[attr-defined]
        for n in range(12):  # fill the 3 MiB disk
            full = httpx.put(f"{origin.url}/fill-{n}.jpg", content=image, headers=ADMIN)
            if full.status_code != 201:
                break
        assert full.status_code == 503
        assert full.text == "storage full\n"
        assert list((root / ".staging").iterdir()) == []
        assert httpx.get(f"{origin.url}/a.jpg").content == image, "what was stored is intact"
        assert httpx.get(f"{origin.url}/healthz").status_code == 200
        assert httpx.delete(f"{origin.url}/a.jpg", headers=ADMIN).status_code == 204
        again = httpx.put(f"{origin.url}/c.jpg", content=image, headers=ADMIN)
        assert again.status_code == 201
        assert httpx.get(f"{origin.url}/c.jpg").content == image


def test_read_only_disk_is_503_and_heals(disk: tuple[Path, bool]) -> None:
    root, mounted = disk
    store = LocalStore(root) if mounted else InjectedFaults(root)
    image = noisy_jpeg(300, 200)
    with ServerThread(build_app(make_settings(root), store)) as origin:
        assert httpx.put(f"{origin.url}/a.jpg", content=image, headers=ADMIN).status_code == 201
        if mounted:
            subprocess.run(["mount", "-o", "remount,ro", str(root)], check=True)
        else:
            store.fail_with = errno.EROFS  # type: ignore[attr-defined]
        try:
            refused = httpx.put(f"{origin.url}/b.jpg", content=image, headers=ADMIN)
            assert refused.status_code == 503
            assert refused.text == "storage is read-only\n"
            assert httpx.get(f"{origin.url}/a.jpg").content == image, "reads go on"
        finally:
            if mounted:
                subprocess.run(["mount", "-o", "remount,rw", str(root)], check=True)
        assert httpx.put(f"{origin.url}/b.jpg", content=image, headers=ADMIN).status_code == 201
