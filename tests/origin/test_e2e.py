"""The origin over real sockets: hostile paths, broken uploads, racing writers, failing stores."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import time
from pathlib import Path

import httpx
import pytest

from origin.app import build_app
from origin.stores import open_store
from tests.images import jpeg, noisy_jpeg
from tests.origin.conftest import ADMIN, make_app, make_settings
from tests.rawhttp import get, raw_request
from tests.servers import MotoServer, ServerThread

TRAVERSALS = [
    b"/../outside.txt",
    b"/%2e%2e/outside.txt",
    b"/%2E%2E/%2E%2E/outside.txt",
    b"/a/..%2f..%2foutside.txt",
    b"/..%5coutside.txt",
    b"//tmp/outside.txt",
    b"/a\\..\\..\\outside.txt",
    b"/a%00.jpg",
    b"/%0d%0aX-Injected:%201",
    b"/" + b"a" * 1100,
]


@pytest.fixture
def served(blob_dir: Path):  # type: ignore[no-untyped-def]
    with ServerThread(make_app(blob_dir)) as server:
        yield server


@pytest.mark.parametrize("target", TRAVERSALS)
def test_keys_that_try_to_escape_are_400_and_touch_nothing(
    served: ServerThread, blob_dir: Path, target: bytes
) -> None:
    outside = blob_dir.parent / "outside.txt"
    outside.write_text("secret")
    status, response = get(served.port, target)
    assert status == 400, response
    assert b"secret" not in response
    body = jpeg()
    status, _ = raw_request(
        served.port,
        b"PUT " + target + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        b"Authorization: Bearer admin-secret\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body,
    )
    assert status == 400
    assert outside.read_text() == "secret"
    assert sorted(p.name for p in blob_dir.parent.iterdir()) == ["blobs", "outside.txt"]


def test_client_that_disconnects_mid_upload_leaves_no_blob(
    served: ServerThread, blob_dir: Path
) -> None:
    body = noisy_jpeg(800, 600)
    with socket.create_connection(("127.0.0.1", served.port)) as sock:
        sock.sendall(
            b"PUT /half.jpg HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer admin-secret\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[: len(body) // 2]
        )
        time.sleep(0.2)
    deadline = time.monotonic() + 5
    while list((blob_dir / ".staging").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list((blob_dir / ".staging").iterdir()) == []
    assert not (blob_dir / "half.jpg").exists()
    assert httpx.get(f"{served.url}/half.jpg").status_code == 404


def test_concurrent_uploads_of_one_key_leave_one_whole_body(served: ServerThread) -> None:
    bodies = [noisy_jpeg(900, 700, seed=i) for i in range(4)]

    async def race() -> None:
        async with httpx.AsyncClient(base_url=served.url, headers=ADMIN, timeout=30) as client:
            responses = await asyncio.gather(
                *(client.put("/race.jpg", content=body) for body in bodies)
            )
            assert all(r.status_code in (200, 201) for r in responses)
            served_body = (await client.get("/race.jpg")).content
            meta = (await client.get("/_meta/race.jpg")).json()
        assert served_body in bodies
        winner = [r.json() for r in responses if r.json()["etag"] == meta["etag"]]
        assert winner and winner[0]["size"] == len(served_body)

    for _ in range(3):
        asyncio.run(race())


def test_large_blob_over_a_socket(served: ServerThread, blob_dir: Path) -> None:
    data = noisy_jpeg(1600, 1200)
    (blob_dir / "big.jpg").write_bytes(data)
    response = httpx.get(f"{served.url}/big.jpg")
    assert response.status_code == 200
    assert response.content == data
    ranged = httpx.get(f"{served.url}/big.jpg", headers={"Range": "bytes=1000000-1999999"})
    assert ranged.content == data[1000000:2000000]


def test_local_store_failure_is_503_and_recovers(blob_dir: Path) -> None:
    (blob_dir / "kept.jpg").write_bytes(jpeg())
    with ServerThread(make_app(blob_dir)) as server:
        aside = blob_dir.with_name("aside")
        blob_dir.rename(aside)
        blob_dir.write_text("not a directory")  # the store's root is gone
        try:
            response = httpx.get(f"{server.url}/kept.jpg")
            assert response.status_code == 503
            assert response.text == "storage root is missing\n"
            upload = httpx.put(f"{server.url}/new.jpg", content=jpeg(), headers=ADMIN)
            assert upload.status_code == 503
            assert httpx.get(f"{server.url}/readyz").status_code == 503
            assert httpx.get(f"{server.url}/healthz").status_code == 200
        finally:
            blob_dir.unlink()
            aside.rename(blob_dir)
        assert httpx.get(f"{server.url}/kept.jpg").status_code == 200
        assert httpx.get(f"{server.url}/readyz").status_code == 200
        upload = httpx.put(f"{server.url}/new.jpg", content=jpeg(), headers=ADMIN)
        assert upload.status_code == 201


@pytest.mark.usefixtures("s3_env")
def test_s3_store_down_is_503_and_recovers(s3_url: str) -> None:
    moto = MotoServer().start()
    try:
        moto.create_bucket("imagecdn-test")
        settings = make_settings(Path("/unused"), storage=s3_url, s3_endpoint=moto.endpoint)
        app = build_app(settings, open_store(settings.storage, s3_endpoint=moto.endpoint))
        with ServerThread(app) as server:
            assert (
                httpx.put(f"{server.url}/a.jpg", content=jpeg(), headers=ADMIN).status_code == 201
            )
            assert httpx.get(f"{server.url}/a.jpg").status_code == 200
            moto.stop()
            started = time.monotonic()
            response = httpx.get(f"{server.url}/a.jpg", timeout=30)
            assert response.status_code == 503
            assert response.text == "storage unavailable\n"
            assert time.monotonic() - started < 15, "a dead store must fail fast"
            assert httpx.get(f"{server.url}/readyz", timeout=30).status_code == 503
            assert httpx.get(f"{server.url}/healthz").status_code == 200
            moto.start()
            moto.create_bucket("imagecdn-test")
            assert httpx.get(f"{server.url}/readyz").status_code == 200
            assert (
                httpx.put(f"{server.url}/b.jpg", content=jpeg(), headers=ADMIN).status_code == 201
            )
            assert httpx.get(f"{server.url}/b.jpg").status_code == 200
    finally:
        moto.stop()


def test_staging_leftovers_are_never_served(served: ServerThread, blob_dir: Path) -> None:
    leftover = blob_dir / ".staging" / ".upload-deadbeef"
    leftover.write_bytes(jpeg())
    status, _ = get(served.port, b"/.staging/.upload-deadbeef")
    assert status == 400
    assert os.path.exists(leftover)
    shutil.rmtree(blob_dir / ".staging")  # removed under a running origin: it heals
    assert httpx.put(f"{served.url}/after.jpg", content=jpeg(), headers=ADMIN).status_code == 201
