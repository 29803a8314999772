"""The result cache end to end: real sockets, a counting origin, real disk files."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.clock import ManualClock
from tests.edge.countingorigin import Blob, CountingOrigin
from tests.edge.edges import PURGE, edge_for, files_in, metric, transforms
from tests.images import jpeg, png
from tests.servers import ServerThread


@pytest.fixture
def origin() -> Iterator[tuple[CountingOrigin, ServerThread]]:
    app = CountingOrigin({"a.jpg": Blob(jpeg(200, 100)), "b.png": Blob(png(80, 40, alpha=True))})
    with ServerThread(app) as server:
        yield app, server


def test_a_hit_is_the_same_response_with_age_and_cache_status(origin: Any) -> None:
    app, server = origin
    with edge_for(server) as edge:
        first = httpx.get(f"{edge.url}/_/w=50/a.jpg")
        second = httpx.get(f"{edge.url}/_/w=50/a.jpg")
        respelled = httpx.get(f"{edge.url}/_/width=50,fit=scale-down/a.jpg")  # same canonical
        head = httpx.head(f"{edge.url}/_/w=50/a.jpg")
        conditional = httpx.get(
            f"{edge.url}/_/w=50/a.jpg", headers={"If-None-Match": first.headers["etag"]}
        )
    assert first.headers["cache-status"] == "edge; fwd=uri-miss; stored"
    assert second.headers["cache-status"] == "edge; hit; detail=memory"
    assert respelled.headers["cache-status"] == "edge; hit; detail=memory"
    assert second.content == first.content == respelled.content
    assert second.headers["etag"] == first.headers["etag"]
    assert int(second.headers["age"]) >= 0 and "age" in first.headers
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(first.content))
    assert conditional.status_code == 304 and conditional.content == b""
    assert app.gets == 1


def test_one_origin_get_and_one_transform_for_100_concurrent_requests(origin: Any) -> None:
    app, server = origin
    with edge_for(server) as edge:

        async def burst() -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=100)
            async with httpx.AsyncClient(limits=limits, timeout=30) as client:
                return await asyncio.gather(
                    *(client.get(f"{edge.url}/_/w=77,f=webp/a.jpg") for _ in range(100))
                )

        responses = asyncio.run(burst())
        assert {r.status_code for r in responses} == {200}
        assert len({r.content for r in responses}) == 1
        assert app.gets == 1
        assert transforms(edge) == 1
        statuses = {r.headers["cache-status"] for r in responses}
        assert "edge; fwd=uri-miss; stored" in statuses


def test_errors_are_shared_by_waiters_and_4xx_cached_briefly(origin: Any) -> None:
    app, server = origin
    with edge_for(server, negative_ttl_s=60) as edge:
        assert httpx.get(f"{edge.url}/_/w=10/missing.jpg").status_code == 404
        assert httpx.get(f"{edge.url}/_/w=10/missing.jpg").status_code == 404
        assert app.gets == 1
    app.fail_with = 500
    with edge_for(server) as edge:
        assert httpx.get(f"{edge.url}/_/w=10/a.jpg").status_code == 502
        assert httpx.get(f"{edge.url}/_/w=10/a.jpg").status_code == 502
        assert app.gets == 3, "5xx are never cached"


def test_format_auto_is_keyed_by_the_negotiated_format(origin: Any) -> None:
    _app, server = origin
    with edge_for(server) as edge:
        # 200 x 100 px, a photo: AVIF when accepted (tiny images and graphics get the
        # smaller of AVIF and WebP: tests/edge/transform/test_encode.py)
        url = f"{edge.url}/_/w=200,f=auto/a.jpg"
        avif = httpx.get(url, headers={"Accept": "image/avif,image/webp,*/*"})
        webp = httpx.get(url, headers={"Accept": "image/webp,*/*"})
        plain = httpx.get(url, headers={"Accept": "*/*"})
        webp_again = httpx.get(url, headers={"Accept": "text/html,image/webp;q=0.9"})
    assert [r.headers["content-type"] for r in (avif, webp, plain)] == [
        "image/avif",
        "image/webp",
        "image/jpeg",
    ]
    assert all(r.headers["vary"] == "Accept" for r in (avif, webp, plain))
    assert webp_again.headers["cache-status"] == "edge; hit; detail=memory"
    assert webp_again.content == webp.content


def test_the_disk_tier_survives_a_restart_and_drops_corrupt_files(
    origin: Any, edge_cache_dir: Path
) -> None:
    app, server = origin
    with edge_for(server) as edge:
        first = httpx.get(f"{edge.url}/_/w=60/a.jpg")
        other = httpx.get(f"{edge.url}/_/w=61/a.jpg")
    files = sorted(p for p in edge_cache_dir.rglob("*") if p.is_file())
    assert len(files) == 2
    with edge_for(server) as edge:
        again = httpx.get(f"{edge.url}/_/w=60/a.jpg")
        assert again.headers["cache-status"] == "edge; hit; detail=disk"
        assert again.content == first.content
        promoted = httpx.get(f"{edge.url}/_/w=60/a.jpg")
        assert promoted.headers["cache-status"] == "edge; hit; detail=memory"
    assert app.gets == 1  # the source was fetched once, before the restart
    # flip one byte of the other entry's body and cut nothing: the checksum notices
    victim = next(p for p in files if p.read_bytes().endswith(other.content))
    data = bytearray(victim.read_bytes())
    data[-10] ^= 0xFF
    victim.write_bytes(bytes(data))
    with edge_for(server) as edge:
        fixed = httpx.get(f"{edge.url}/_/w=61/a.jpg")
        assert fixed.headers["cache-status"].startswith("edge; fwd=uri-miss")
        assert fixed.content == other.content
        assert metric(edge, "edge_disk_cache_corrupt_total") == 1


def test_a_truncated_file_and_a_stray_temporary_are_dropped_on_start(
    origin: Any, edge_cache_dir: Path
) -> None:
    _, server = origin
    with edge_for(server) as edge:
        httpx.get(f"{edge.url}/_/w=62/a.jpg")
    (victim,) = [p for p in edge_cache_dir.rglob("*") if p.is_file()]
    victim.write_bytes(victim.read_bytes()[:-5])
    stray = victim.with_name(victim.name + ".123.abc.tmp")
    stray.write_bytes(b"half a write")
    with edge_for(server) as edge:
        for _ in range(100):
            if not stray.exists():
                break
            time.sleep(0.02)
        assert not stray.exists() and not victim.exists()
        response = httpx.get(f"{edge.url}/_/w=62/a.jpg")
        assert response.status_code == 200
        assert response.headers["cache-status"].startswith("edge; fwd=uri-miss")


def test_a_disk_only_node_serves_repeats_from_files_and_never_a_changed_one(
    origin: Any, edge_cache_dir: Path
) -> None:
    app, server = origin
    with edge_for(server, memory_cache_mb=0) as edge:
        url = f"{edge.url}/_/w=60/a.jpg"
        first = httpx.get(url)
        (file,) = files_in(edge_cache_dir, 1)
        for _ in range(3):  # the fast path: request path -> file, no parsing
            again = httpx.get(url)
            assert again.headers["cache-status"] == "edge; hit; detail=disk"
            assert again.content == first.content
            assert again.headers["etag"] == first.headers["etag"]
        head = httpx.head(url)
        assert head.headers["content-length"] == str(len(first.content)) and not head.content
        # flipped in place (same inode, so the descriptor held open sees it): not served
        with open(file, "r+b") as f:
            f.seek(-10, 2)
            byte = f.read(1)
            f.seek(-10, 2)
            f.write(bytes([byte[0] ^ 0xFF]))
        fixed = httpx.get(url)
        assert fixed.headers["cache-status"].startswith("edge; fwd=uri-miss")
        assert fixed.content == first.content
        assert metric(edge, "edge_disk_cache_corrupt_total") == 1
        files_in(edge_cache_dir, 1)
        assert httpx.get(url).headers["cache-status"] == "edge; hit; detail=disk"
        # a hard purge removes the file; the next fill writes a new one, served again
        assert httpx.post(f"{edge.url}/_purge", json={"url": "/_/w=60/a.jpg"}, headers=PURGE)
        assert httpx.get(url).headers["cache-status"].startswith("edge; fwd=uri-miss")
        files_in(edge_cache_dir, 1)
        assert httpx.get(url).headers["cache-status"] == "edge; hit; detail=disk"
    assert app.gets == 1  # the source stayed in the source cache throughout


@pytest.mark.parametrize("memory_cache_mb", [256, 0], ids=["memory", "disk-only"])
def test_access_lines_name_the_cache_status_the_client_got(
    origin: Any, edge_cache_dir: Path, memory_cache_mb: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """Hits answered before routing log the same `cache` value as the full app does."""
    _, server = origin
    capsys.readouterr()
    with edge_for(server, access_log=True, memory_cache_mb=memory_cache_mb) as edge:
        url = f"{edge.url}/_/w=70/a.jpg"
        seen = [httpx.get(url).headers["cache-status"]]
        files_in(edge_cache_dir, 1)  # the disk write is in the background
        seen += [httpx.get(url).headers["cache-status"] for _ in range(2)]
        seen.append(httpx.get(url, headers={"If-None-Match": '"x"'}).headers["cache-status"])
    tier = "memory" if memory_cache_mb else "disk"
    assert seen[1:] == [f"edge; hit; detail={tier}"] * 3
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    access = [line for line in lines if line["logger"] == "access" and "w=70" in line["path"]]
    assert [line["cache"] for line in access] == seen
    assert all(line["status"] == 200 and line["duration_ms"] >= 0 for line in access)


def test_the_disk_fast_path_keeps_negotiated_formats_apart(
    origin: Any, edge_cache_dir: Path
) -> None:
    _, server = origin
    with edge_for(server, memory_cache_mb=0) as edge:
        url = f"{edge.url}/_/w=60,f=auto/a.jpg"
        webp = {"Accept": "image/webp,*/*"}
        assert httpx.get(url, headers=webp).headers["content-type"] == "image/webp"
        assert httpx.get(url).headers["content-type"] == "image/jpeg"
        files_in(edge_cache_dir, 2)
        for _ in range(2):
            hit = httpx.get(url, headers=webp)
            assert hit.headers["cache-status"] == "edge; hit; detail=disk"
            assert hit.headers["content-type"] == "image/webp"
            assert hit.headers["vary"] == "Accept"
            plain = httpx.get(url)
            assert plain.headers["cache-status"] == "edge; hit; detail=disk"
            assert plain.headers["content-type"] == "image/jpeg"


def test_a_cache_file_removed_by_hand_stops_being_served(
    origin: Any, edge_cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("edge.cache.disk.OPEN_VALID_S", 0.2)
    _, server = origin
    with edge_for(server, memory_cache_mb=0) as edge:
        url = f"{edge.url}/_/w=61/a.jpg"
        httpx.get(url)
        (file,) = files_in(edge_cache_dir, 1)
        assert httpx.get(url).headers["cache-status"] == "edge; hit; detail=disk"
        file.unlink()  # the descriptor held open keeps the inode, for at most OPEN_VALID_S
        time.sleep(0.3)
        assert httpx.get(url).headers["cache-status"].startswith("edge; fwd=uri-miss")


def test_a_stale_entry_is_revalidated_and_a_304_keeps_every_variant(origin: Any) -> None:
    app, server = origin
    app.blobs["a.jpg"].cache_control = "max-age=1"
    clock = ManualClock(time.time())
    with edge_for(server, clock=clock, stale_while_revalidate_s=0) as edge:
        one = httpx.get(f"{edge.url}/_/w=30/a.jpg")
        two = httpx.get(f"{edge.url}/_/w=31/a.jpg")
        clock.advance(1.2)
        again = httpx.get(f"{edge.url}/_/w=30/a.jpg")
        assert again.headers["cache-status"] == "edge; fwd=stale; fwd-status=304"
        assert again.content == one.content
        sibling = httpx.get(f"{edge.url}/_/w=31/a.jpg")
        assert sibling.headers["cache-status"] == "edge; hit; detail=memory"
        assert sibling.content == two.content
        assert app.conditional == 1 and app.not_modified == 1
        assert transforms(edge) == 2
        # the source changes: the next revalidation brings the new bytes
        app.blobs["a.jpg"] = Blob(jpeg(100, 100), cache_control="max-age=1")
        clock.advance(1.2)
        changed = httpx.get(f"{edge.url}/_/w=30/a.jpg")
        assert changed.headers["cache-status"] == "edge; fwd=stale; fwd-status=200"
        assert changed.content != one.content
        sibling = httpx.get(f"{edge.url}/_/w=31/a.jpg")
        assert sibling.content != two.content


def test_stale_while_revalidate_answers_at_once_and_refreshes_in_the_background(
    origin: Any,
) -> None:
    app, server = origin
    app.blobs["a.jpg"].cache_control = "max-age=1, stale-while-revalidate=30"
    clock = ManualClock(time.time())
    with edge_for(server, clock=clock) as edge:
        httpx.get(f"{edge.url}/_/w=32/a.jpg")
        clock.advance(1.2)
        stale = httpx.get(f"{edge.url}/_/w=32/a.jpg")
        assert re.fullmatch(
            r"edge; hit; ttl=-\d+; detail=memory-stale-while-revalidate",
            stale.headers["cache-status"],
        )
        for _ in range(100):
            if app.not_modified == 1:
                break
            time.sleep(0.02)
        assert app.not_modified == 1
        assert httpx.get(f"{edge.url}/_/w=32/a.jpg").headers["cache-status"] == (
            "edge; hit; detail=memory"
        )


def test_stale_if_error_serves_stale_unless_must_revalidate(origin: Any) -> None:
    app, server = origin
    app.blobs["a.jpg"].cache_control = "max-age=1, stale-if-error=60"
    app.blobs["b.png"].cache_control = "max-age=1, must-revalidate"
    clock = ManualClock(time.time())
    with edge_for(server, clock=clock, stale_while_revalidate_s=0) as edge:
        good = httpx.get(f"{edge.url}/_/w=33/a.jpg")
        httpx.get(f"{edge.url}/_/w=33/b.png")
        clock.advance(1.2)
        app.fail_with = 503
        stale = httpx.get(f"{edge.url}/_/w=33/a.jpg")
        strict = httpx.get(f"{edge.url}/_/w=33/b.png")
    assert stale.status_code == 200 and stale.content == good.content
    assert re.fullmatch(
        r"edge; fwd=stale; fwd-status=502; ttl=-\d+; detail=stale-if-error",
        stale.headers["cache-status"],
    )
    assert strict.status_code == 502


def test_no_store_and_private_are_not_cached(origin: Any) -> None:
    app, server = origin
    app.blobs["a.jpg"].cache_control = "private, max-age=600"
    with edge_for(server) as edge:
        for _ in range(2):
            response = httpx.get(f"{edge.url}/_/w=34/a.jpg")
            assert response.headers["cache-status"].startswith("edge; fwd=uri-miss")
    assert app.gets == 2


def test_purge_by_source_url_and_prefix_hard_and_soft(origin: Any) -> None:
    app, server = origin
    app.blobs["dir/c.jpg"] = Blob(jpeg(90, 30))
    with edge_for(server, stale_while_revalidate_s=0) as edge:
        for path in ("/_/w=20/a.jpg", "/_/w=21/a.jpg", "/_/w=20/dir/c.jpg", "/_/w=20/b.png"):
            httpx.get(edge.url + path)

        def status(path: str) -> str:
            return httpx.get(edge.url + path).headers["cache-status"]

        def purge(**document: str) -> httpx.Response:
            return httpx.post(f"{edge.url}/_purge", json=document, headers=PURGE)

        assert purge(url="/_/width=20/a.jpg").json()["purged"] == 1
        assert status("/_/w=20/a.jpg").startswith("edge; fwd=uri-miss")
        assert status("/_/w=21/a.jpg") == "edge; hit; detail=memory"
        assert purge(prefix="dir/").json()["purged"] >= 1
        assert status("/_/w=20/dir/c.jpg").startswith("edge; fwd=uri-miss")
        assert status("/_/w=20/b.png") == "edge; hit; detail=memory"
        assert purge(source="b.png", mode="soft").json()["mode"] == "soft"
        assert status("/_/w=20/b.png") == "edge; fwd=stale; fwd-status=304"
        assert purge(source="a.jpg").status_code == 200
        assert status("/_/w=21/a.jpg").startswith("edge; fwd=uri-miss")
        assert purge(source="a.jpg", mode="bogus").status_code == 400
        assert purge(source="a.jpg", url="x").status_code == 400
        assert httpx.post(f"{edge.url}/_purge", json={"source": "a.jpg"}).status_code == 401
        for wrong in ("Bearer wrong-key", "Bearer purge-ke", "Basic cHVyZ2Uta2V5", "purge-key"):
            refused = httpx.post(
                f"{edge.url}/_purge", json={"source": "a.jpg"}, headers={"Authorization": wrong}
            )
            assert refused.status_code == 401, wrong


def test_writes_through_the_no_options_route_reach_the_origin_and_invalidate(
    blob_dir: Path,
) -> None:
    from origin.app import build_app as build_origin
    from origin.settings import OriginSettings
    from origin.stores import open_store

    settings = OriginSettings(storage=f"file://{blob_dir}", api_keys="w:w-secret", access_log=False)
    auth = {"Authorization": "Bearer w-secret"}
    with ServerThread(build_origin(settings, open_store(settings.storage))) as server:
        httpx.put(f"{server.url}/w.jpg", content=jpeg(40, 20), headers=auth)
        with edge_for(server) as edge:  # the default: reads only
            refused = httpx.put(f"{edge.url}/_/_/w.jpg", content=jpeg(10, 10), headers=auth)
            assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"
        with edge_for(server, passthrough_methods="GET,HEAD,PUT,DELETE") as edge:
            before = httpx.get(f"{edge.url}/_/_/w.jpg")
            assert before.headers["cache-control"] == settings.cache_control  # origin's own
            assert httpx.get(f"{edge.url}/_/_/w.jpg").headers["cache-status"].endswith("memory")
            refused = httpx.put(f"{edge.url}/_/_/w.jpg", content=jpeg(10, 10))
            assert refused.status_code == 401
            assert httpx.get(f"{edge.url}/_/_/w.jpg").content == before.content
            put = httpx.put(f"{edge.url}/_/_/w.jpg", content=jpeg(20, 40), headers=auth)
            assert put.status_code == 200
            after = httpx.get(f"{edge.url}/_/_/w.jpg")
            assert after.headers["cache-status"].startswith("edge; fwd=uri-miss")
            assert after.content == (blob_dir / "w.jpg").read_bytes()
            assert httpx.put(f"{edge.url}/_/w=5/w.jpg", content=b"x").status_code == 405


def test_a_child_edge_asks_its_parent_before_the_origin(origin: Any, tmp_path: Path) -> None:
    app, server = origin
    with (
        edge_for(server) as parent,
        edge_for(server, parent_url=parent.url, cache_dir=str(tmp_path / "1")) as child,
    ):
        first = httpx.get(f"{child.url}/_/w=35/a.jpg")
        assert first.status_code == 200
        assert app.gets == 1
        other = edge_for(server, parent_url=parent.url, cache_dir=str(tmp_path / "2"))
        with other:
            second = httpx.get(f"{other.url}/_/w=35/a.jpg")
        assert second.content == first.content
        assert app.gets == 1, "the second child was served by the parent's cache"
        assert "parent" in second.headers["server-timing"]
    with edge_for(
        server, parent_url="http://127.0.0.1:9", cache_dir=str(tmp_path / "3")
    ) as orphan:  # parent down
        response = httpx.get(f"{orphan.url}/_/w=36/a.jpg")
        assert response.status_code == 200
        assert app.gets == 2


def test_a_disk_tier_that_cannot_be_written_is_skipped_not_fatal(
    origin: Any, tmp_path: Path
) -> None:
    _app, server = origin
    blocked = tmp_path / "not-a-directory"
    blocked.write_bytes(b"a file where the cache directory should be")
    with edge_for(server, cache_dir=str(blocked)) as edge:
        for width in (40, 41, 40):
            assert httpx.get(f"{edge.url}/_/w={width}/a.jpg").status_code == 200
        for _ in range(50):
            if metric(edge, "edge_disk_cache_write_errors_total") >= 1:
                break
            time.sleep(0.02)
        assert metric(edge, "edge_disk_cache_write_errors_total") >= 1
        assert metric(edge, "edge_disk_cache_enabled") == 0
        assert httpx.get(f"{edge.url}/_/w=40/a.jpg").headers["cache-status"].endswith("memory")
        ready = httpx.get(f"{edge.url}/readyz")
        assert (ready.status_code, ready.text) == (503, "disk cache not writable\n")


def test_ready_when_the_origin_answers_and_the_disk_tier_is_writable(
    origin: Any, tmp_path: Path
) -> None:
    _app, server = origin
    with edge_for(server, cache_dir=str(tmp_path / "cache")) as edge:
        ready = httpx.get(f"{edge.url}/readyz")
    assert (ready.status_code, ready.text) == (200, "ready\n")
    # the probe file is gone; the shard directories are all there is
    assert all(p.is_dir() and len(p.name) == 2 for p in (tmp_path / "cache").iterdir())
