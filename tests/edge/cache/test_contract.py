"""One contract, every tier: memory, disk, Redis and memcached (real servers) run the
same tests, as aiocache's acceptance suite and cachetools' CacheTestMixin do. A tier
that passes here can sit anywhere in `TieredCache`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from edge.cache.disk import DiskTier
from edge.cache.entry import Entry
from edge.cache.memory import MemoryTier
from edge.cache.shared import SharedTier
from edge.cache.tiers import Tier
from edge.clock import ManualClock
from tests.servers import ServiceProcess

pytestmark = pytest.mark.anyio

NOW = 1_700_000_000.0
BACKENDS = ["memory", "disk", "redis", "memcached"]


@pytest.fixture(scope="module")
def services() -> Iterator[dict[str, ServiceProcess]]:
    started = {kind: ServiceProcess(kind).start() for kind in ("redis", "memcached")}
    try:
        yield started
    finally:
        for service in started.values():
            service.stop()


@pytest.fixture(params=BACKENDS)
async def tier(
    request: pytest.FixtureRequest, tmp_path: Path, services: dict[str, ServiceProcess]
) -> AsyncIterator[Tier]:
    made: Tier
    if request.param == "memory":
        made = MemoryTier(64 << 20)
    elif request.param == "disk":
        made = DiskTier(tmp_path / "cache", 64 << 20)
    else:
        made = SharedTier(
            services[request.param].url,
            timeout=2.0,
            marker_ttl=3600,
            wall=ManualClock(NOW),
        )
    yield made
    await made.flush()
    if isinstance(made, SharedTier):
        await made.close()


def entry(key: str, body: bytes = b"\x00\xffbody", **fields: object) -> Entry:
    values: dict[str, object] = {
        "key": key,
        "source": "photos/a.jpg",
        "status": 200,
        "body": body,
        "headers": [(b"content-type", b"image/webp"), (b"vary", b"Accept"), (b"x-odd", b"\xe9")],
        "etag": b'W/"v1"',
        "stored": NOW,
        "fresh_until": NOW + 600,
        "swr": 30.0,
        "sie": 120.0,
        "must_revalidate": False,
        "source_etag": '"src"',
        "source_modified": "Tue, 14 Nov 2023 22:13:20 GMT",
    }
    values.update(fields)
    return Entry(**values)  # type: ignore[arg-type]


def same(found: Entry | None, stored: Entry) -> None:
    """`found` is `stored` as the tier gave it back: every field the cache judges by."""
    assert found is not None
    for field in (
        "key",
        "source",
        "status",
        "headers",
        "etag",
        "stored",
        "fresh_until",
        "swr",
        "sie",
        "must_revalidate",
        "source_etag",
        "source_modified",
    ):
        assert getattr(found, field) == getattr(stored, field), field
    assert bytes(found.body) == bytes(stored.body)


async def test_a_stored_entry_comes_back_whole(tier: Tier) -> None:
    stored = entry("photos/a.jpg\x00w=40\x00aw")
    tier.put(stored)
    await tier.flush()
    same(await tier.get(stored.key), stored)


async def test_an_unknown_key_is_a_miss(tier: Tier) -> None:
    assert await tier.get("never stored") is None


async def test_every_byte_value_and_a_large_body_survive(tier: Tier) -> None:
    stored = entry("big", body=bytes(range(256)) * 2048)  # 512 KiB
    tier.put(stored)
    await tier.flush()
    same(await tier.get("big"), stored)


async def test_a_second_put_replaces_the_first(tier: Tier) -> None:
    tier.put(entry("k", body=b"old"))
    await tier.flush()
    newer = entry("k", body=b"new", etag=b'"v2"', must_revalidate=True, stored=NOW + 5)
    tier.put(newer)
    await tier.flush()
    same(await tier.get("k"), newer)


async def test_delete_removes_only_its_key(tier: Tier) -> None:
    kept, dropped = entry("kept"), entry("dropped")
    tier.put(kept)
    tier.put(dropped)
    await tier.flush()
    tier.delete("dropped")
    await tier.flush()
    assert await tier.get("dropped") is None
    same(await tier.get("kept"), kept)


async def test_keys_that_differ_only_in_their_format_class_are_apart(tier: Tier) -> None:
    avif = entry("a.jpg\x00f=auto\x00a", body=b"avif")
    plain = entry("a.jpg\x00f=auto\x00", body=b"jpeg")
    tier.put(avif)
    tier.put(plain)
    await tier.flush()
    same(await tier.get(avif.key), avif)
    same(await tier.get(plain.key), plain)


async def test_an_error_entry_round_trips_with_its_status(tier: Tier) -> None:
    error = entry("missing", body=b"source not found\n", status=404, headers=[], etag=b"")
    tier.put(error)
    await tier.flush()
    same(await tier.get("missing"), error)
