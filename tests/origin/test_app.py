"""Origin routes through the ASGI interface: headers, conditionals, ranges, auth, uploads."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from cdn_common.http import http_date
from origin.settings import OriginSettings
from tests.images import gif, jpeg, png, webp
from tests.origin.conftest import ADMIN, READER, USERS, make_app

pytestmark = pytest.mark.anyio


async def upload(
    client: httpx.AsyncClient, key: str, data: bytes, **headers: str
) -> httpx.Response:
    return await client.put(f"/{key}", content=data, headers={**ADMIN, **headers})


async def test_get_serves_bytes_with_cache_headers(client: httpx.AsyncClient) -> None:
    data = jpeg()
    assert (await upload(client, "a/photo.jpg", data)).status_code == 201
    response = await client.get("/a/photo.jpg")
    assert response.status_code == 200
    assert response.content == data
    h = response.headers
    assert h["content-type"] == "image/jpeg"
    assert h["content-length"] == str(len(data))
    assert h["etag"].startswith('"') and h["etag"].endswith('"')
    assert h["cache-control"] == OriginSettings().cache_control
    assert "stale-while-revalidate=" in h["cache-control"]  # edges serve stale by its word
    assert h["accept-ranges"] == "bytes"
    assert h["x-content-type-options"] == "nosniff"
    assert "last-modified" in h


async def test_head_has_headers_and_no_body(client: httpx.AsyncClient) -> None:
    data = png()
    await upload(client, "p.png", data)
    response = await client.head("/p.png")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == str(len(data))
    assert response.headers["content-type"] == "image/png"


async def test_missing_blob_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/missing.jpg")
    assert response.status_code == 404
    assert response.text == "no such blob\n"


async def test_ranges(client: httpx.AsyncClient) -> None:
    data = jpeg()
    await upload(client, "r.jpg", data)
    response = await client.get("/r.jpg", headers={"Range": "bytes=5-14"})
    assert response.status_code == 206
    assert response.content == data[5:15]
    assert response.headers["content-range"] == f"bytes 5-14/{len(data)}"
    assert response.headers["content-length"] == "10"
    tail = await client.get("/r.jpg", headers={"Range": "bytes=-4"})
    assert tail.content == data[-4:]
    beyond = await client.get("/r.jpg", headers={"Range": f"bytes={len(data)}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{len(data)}"


async def test_if_range_with_an_old_etag_gives_the_whole_blob(client: httpx.AsyncClient) -> None:
    data = jpeg()
    etag = (await upload(client, "r.jpg", data)).headers["etag"]
    fresh = await client.get("/r.jpg", headers={"Range": "bytes=0-3", "If-Range": etag})
    assert fresh.status_code == 206
    stale = await client.get("/r.jpg", headers={"Range": "bytes=0-3", "If-Range": '"old"'})
    assert stale.status_code == 200
    assert stale.content == data


async def test_conditional_get(client: httpx.AsyncClient) -> None:
    await upload(client, "c.jpg", jpeg())
    first = await client.get("/c.jpg")
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    by_etag = await client.get("/c.jpg", headers={"If-None-Match": etag})
    assert by_etag.status_code == 304
    assert by_etag.content == b""
    assert by_etag.headers["etag"] == etag
    by_date = await client.get("/c.jpg", headers={"If-Modified-Since": modified})
    assert by_date.status_code == 304
    changed = await client.get("/c.jpg", headers={"If-None-Match": '"other"'})
    assert changed.status_code == 200
    old = await client.get("/c.jpg", headers={"If-Modified-Since": http_date(0)})
    assert old.status_code == 200


async def test_upload_returns_metadata_and_records_owner(client: httpx.AsyncClient) -> None:
    response = await client.put("/users/7/anim.gif", content=gif(32, 24, frames=3), headers=USERS)
    assert response.status_code == 201
    document = response.json()
    assert document["type"] == "image/gif"
    assert (document["width"], document["height"], document["pages"]) == (32, 24, 3)
    assert document["owner"] == "users"
    assert response.headers["etag"] == document["etag"]
    meta = (await client.get("/_meta/users/7/anim.gif")).json()
    assert meta["owner"] == "users"
    assert meta["size"] == len(gif(32, 24, frames=3))
    assert meta["uploaded_at"].endswith("Z")
    again = await client.put("/users/7/anim.gif", content=webp(), headers=USERS)
    assert again.status_code == 200
    assert (await client.get("/users/7/anim.gif")).headers["content-type"] == "image/webp"


async def test_meta_reads_dimensions_of_files_put_in_by_hand(blob_dir: Path) -> None:
    (blob_dir / "dropped.png").write_bytes(png(40, 30))
    transport = httpx.ASGITransport(app=make_app(blob_dir))
    async with httpx.AsyncClient(transport=transport, base_url="http://o") as client:
        response = await client.get("/_meta/dropped.png")
        served = await client.get("/dropped.png")
    assert response.status_code == 200
    assert (response.json()["width"], response.json()["height"]) == (40, 30)
    assert response.json()["owner"] is None
    assert served.headers["content-type"] == "image/png"


@pytest.mark.parametrize(
    ("headers", "key", "status"),
    [
        ({}, "a.jpg", 401),
        ({"Authorization": "Bearer wrong"}, "a.jpg", 401),
        ({"Authorization": "Basic YTpi"}, "a.jpg", 401),
        (READER, "a.jpg", 403),
        (USERS, "other/a.jpg", 403),
        (USERS, "users/a.jpg", 201),
    ],
)
async def test_upload_auth(
    client: httpx.AsyncClient, headers: dict[str, str], key: str, status: int
) -> None:
    response = await client.put(f"/{key}", content=jpeg(), headers=headers)
    assert response.status_code == status, response.text
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    if status != 201:
        assert (await client.get(f"/{key}")).status_code == 404


@pytest.mark.parametrize(
    "body",
    [b"", b"hello world", b"<html><body>hi</body></html>", b"%PDF-1.4\n" + b"x" * 5000],
)
async def test_non_images_are_415(client: httpx.AsyncClient, body: bytes) -> None:
    response = await upload(client, "x.jpg", body)
    assert response.status_code == 415
    assert (await client.get("/x.jpg")).status_code == 404


async def test_too_large_by_content_length_is_refused_before_reading(
    client: httpx.AsyncClient,
) -> None:
    received = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal received
        for _ in range(64):
            received += 1
            yield b"\0" * 65536

    response = await client.put(
        "/big.jpg", content=body(), headers={**ADMIN, "Content-Length": str(64 * 65536)}
    )
    assert response.status_code == 413
    assert received <= 1


async def test_too_large_streamed_body_is_413_and_leaves_nothing(
    client: httpx.AsyncClient, blob_dir: Path
) -> None:
    head = jpeg()

    async def body() -> AsyncIterator[bytes]:
        yield head
        for _ in range(64):
            yield b"\0" * 65536

    response = await client.put("/big.jpg", content=body(), headers=ADMIN)
    assert response.status_code == 413
    assert list((blob_dir / ".staging").iterdir()) == []
    assert not (blob_dir / "big.jpg").exists()


async def test_uploads_stream_to_disk_without_holding_the_body(blob_dir: Path) -> None:
    transport = httpx.ASGITransport(app=make_app(blob_dir, max_upload_mb=64))
    size = 40 * 1024 * 1024
    head = jpeg()

    async def body() -> AsyncIterator[bytes]:
        yield head
        chunk = b"\0" * 65536
        for _ in range(size // 65536):
            yield chunk

    async with httpx.AsyncClient(transport=transport, base_url="http://o") as client:
        tracemalloc.start()
        try:
            response = await client.put("/huge.jpg", content=body(), headers=ADMIN)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert response.status_code == 201, response.text
    assert response.json()["size"] == len(head) + size
    assert peak < 8 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB while receiving 40 MB"


async def test_write_preconditions(client: httpx.AsyncClient) -> None:
    first = await upload(client, "p.jpg", jpeg(), **{"If-None-Match": "*"})
    assert first.status_code == 201
    again = await upload(client, "p.jpg", jpeg(quality=20), **{"If-None-Match": "*"})
    assert again.status_code == 412
    wrong = await upload(client, "p.jpg", jpeg(quality=20), **{"If-Match": '"nope"'})
    assert wrong.status_code == 412
    right = await upload(client, "p.jpg", jpeg(quality=20), **{"If-Match": first.headers["etag"]})
    assert right.status_code == 200
    assert (await upload(client, "p.jpg", jpeg(), **{"If-None-Match": '"x"'})).status_code == 400


async def test_conflicting_key_is_409_and_leaves_no_staging_file(
    client: httpx.AsyncClient, blob_dir: Path
) -> None:
    await upload(client, "a", jpeg())
    response = await upload(client, "a/b.jpg", jpeg())
    assert response.status_code == 409
    assert list((blob_dir / ".staging").iterdir()) == []


async def test_delete(client: httpx.AsyncClient) -> None:
    await upload(client, "d.jpg", jpeg())
    assert (await client.delete("/d.jpg")).status_code == 401
    assert (await client.delete("/d.jpg", headers=READER)).status_code == 403
    assert (await client.delete("/d.jpg", headers=ADMIN)).status_code == 204
    assert (await client.get("/d.jpg")).status_code == 404
    assert (await client.delete("/d.jpg", headers=ADMIN)).status_code == 404


async def test_private_reads_need_a_read_key(blob_dir: Path) -> None:
    transport = httpx.ASGITransport(app=make_app(blob_dir, public_read=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://o") as client:
        await upload(client, "s.jpg", jpeg())
        assert (await client.get("/s.jpg")).status_code == 401
        assert (await client.get("/_meta/s.jpg")).status_code == 401
        assert (await client.get("/s.jpg", headers=READER)).status_code == 200


async def test_other_methods_are_405(client: httpx.AsyncClient) -> None:
    response = await client.post("/a.jpg", content=b"x")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD, PUT, DELETE"


async def test_health_ready_and_metrics(client: httpx.AsyncClient) -> None:
    await upload(client, "m.jpg", jpeg())
    await client.get("/m.jpg")
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/readyz")).status_code == 200
    metrics = (await client.get("/metrics")).text
    assert (
        'origin_http_requests_total{cache="none",method="GET",route="blob",status="200"} 1.0'
        in metrics
    )
    assert 'origin_uploads_total{owner="admin"} 1.0' in metrics
    assert "origin_http_request_duration_seconds_bucket" in metrics


async def test_one_json_log_line_per_request(
    blob_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = make_app(blob_dir)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://o") as c:
        capsys.readouterr()
        await c.get("/nothing-here.jpg")
    assert app.access_log is not None
    app.access_log.flush()
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    access = [line for line in lines if line["logger"] == "access"]
    assert len(access) == 1
    assert access[0]["status"] == 404
    assert access[0]["method"] == "GET"
    assert access[0]["path"] == "/nothing-here.jpg"
    assert access[0]["bytes"] == len("no such blob\n")
    assert access[0]["duration_ms"] >= 0
    assert access[0]["time"].endswith("Z")
