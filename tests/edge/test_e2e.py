"""The edge over real sockets, in front of a real origin: answers, headers, every error status."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import pyvips

from edge.security.signing import signed_path
from tests import rawhttp
from tests.edge.conftest import Stack
from tests.edge.transform import crashers
from tests.images import gif, jpeg, noisy_jpeg, png, svg
from tests.servers import ServerThread, free_port


def image_of(response: httpx.Response) -> pyvips.Image:
    return pyvips.Image.new_from_buffer(response.content, "")


def test_resize_with_headers(stack: Stack) -> None:
    stack.put("photos/a.jpg", jpeg(400, 200))
    with stack.edge() as edge:
        response = httpx.get(f"{edge.url}/_/w=100/photos/a.jpg")
    assert response.status_code == 200
    assert (image_of(response).width, image_of(response).height) == (100, 50)
    h = response.headers
    assert h["content-type"] == "image/jpeg"
    assert h["content-length"] == str(len(response.content))
    assert h["etag"].startswith('"')
    assert "last-modified" in h
    assert h["cache-control"].startswith("public")
    assert h["server-timing"].startswith("origin;dur=") and "transform;dur=" in h["server-timing"]
    assert "vary" not in h


def test_format_auto_negotiates_and_varies(stack: Stack) -> None:
    stack.put("a.png", png(300, 200, alpha=True))  # a photo over 128 x 128 px: AVIF
    with stack.edge() as edge:
        url = f"{edge.url}/_/w=200,f=auto/a.png"
        avif = httpx.get(url, headers={"Accept": "image/avif,image/webp,*/*"})
        webp = httpx.get(url, headers={"Accept": "image/webp,*/*"})
        neither = httpx.get(url, headers={"Accept": "*/*"})
    assert avif.headers["content-type"] == "image/avif"
    assert webp.headers["content-type"] == "image/webp"
    assert neither.headers["content-type"] == "image/png"  # alpha: PNG, not JPEG
    assert avif.headers["vary"] == "Accept"


def test_conditional_request_gives_304(stack: Stack) -> None:
    stack.put("a.jpg", jpeg())
    with stack.edge(decoded_cache_mb=0) as edge:
        first = httpx.get(f"{edge.url}/_/w=10/a.jpg")
        again = httpx.get(
            f"{edge.url}/_/w=10/a.jpg", headers={"If-None-Match": first.headers["etag"]}
        )
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == first.headers["etag"]


def test_json_and_identity_and_svg(stack: Stack) -> None:
    original = jpeg(120, 80)
    stack.put("a.jpg", original)
    stack.put("v.svg", svg(100, 50))
    with stack.edge() as edge:
        described = httpx.get(f"{edge.url}/_/w=60,f=json/a.jpg").json()
        identity = httpx.get(f"{edge.url}/_/_/a.jpg")
        raster = httpx.get(f"{edge.url}/_/_/v.svg")
        cdn_cgi = httpx.get(f"{edge.url}/cdn-cgi/image/width=30/a.jpg")
    assert described["source"] == {
        "width": 120,
        "height": 80,
        "format": "jpeg",
        "pages": 1,
        "size": len(original),
    }
    assert described["result"]["width"] == 60 and described["result"]["height"] == 40
    assert identity.content == original
    origin_etag = httpx.get(f"{stack.origin.url}/a.jpg").headers["etag"]
    assert identity.headers["etag"] == origin_etag, "passthrough keeps the origin's strong tag"
    assert raster.headers["content-type"] == "image/png", "SVG is never served as SVG"
    assert image_of(cdn_cgi).width == 30


def test_animation_over_http(stack: Stack) -> None:
    stack.put("a.gif", gif(40, 30, frames=3))
    with stack.edge() as edge:
        response = httpx.get(f"{edge.url}/_/w=20/a.gif")
    image = pyvips.Image.new_from_buffer(response.content, "", n=-1)
    assert image.get("n-pages") == 3


def test_signed_urls_with_rotation(stack: Stack) -> None:
    stack.put("a.jpg", jpeg())
    with stack.edge(signing_keys="new-key,old-key") as edge:
        for key in ("new-key", "old-key"):
            assert httpx.get(edge.url + signed_path(key, "/w=10/a.jpg")).status_code == 200
        forged = signed_path("other-key", "/w=10/a.jpg")
        assert httpx.get(edge.url + forged).status_code == 403
        tampered = signed_path("new-key", "/w=10/a.jpg").replace("w=10", "w=11")
        assert httpx.get(edge.url + tampered).status_code == 403
        truncated = signed_path("new-key", "/w=10/a.jpg")[:20] + "/w=10/a.jpg"
        assert httpx.get(edge.url + truncated).status_code == 403
        # raw UTF-8 in the request line: refused by the HTTP parser before the edge
        assert rawhttp.get(edge.port, "/\u00e9t\u00e9/w=10/a.jpg".encode())[0] == 400
        unsigned = httpx.get(f"{edge.url}/_/w=10/a.jpg")
        assert unsigned.status_code == 403
        assert unsigned.text == "unsigned URLs are disabled on this edge\n"
        assert httpx.get(f"{edge.url}/cdn-cgi/image/w=10/a.jpg").status_code == 403


def test_sign_command_prints_a_path_the_edge_accepts(stack: Stack) -> None:
    stack.put("a.jpg", jpeg())
    result = subprocess.run(
        [sys.executable, "-m", "edge", "sign", "/w=12/a.jpg"],
        capture_output=True,
        text=True,
        env={"EDGE_SIGNING_KEYS": "k1,k0", "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=True,
    )
    path = result.stdout.strip()
    assert path.endswith("/w=12/a.jpg")
    with stack.edge(signing_keys="k1") as edge:
        assert image_of(httpx.get(edge.url + path)).width == 12


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/_/w=abc/a.jpg", 400, "invalid width: expected an integer 1-16384\n"),
        ("/_/zoom=2/a.jpg", 400, "unknown option 'zoom'\n"),
        ("/_/w=10/missing.jpg", 404, "source not found\n"),
        ("/_/w=10", 400, "expected /{signature}/{options}/{source}\n"),
        ("/_/w=10/https://example.com/a.jpg", 403, "source host 'example.com' is not allowed\n"),
        ("/_/w=99999/a.jpg", 400, "invalid width: expected an integer 1-16384\n"),
        ("/_/w=9000/a.jpg", 400, "invalid width: larger than 8192 (EDGE_MAX_OUT_PX)\n"),
    ],
)
def test_client_errors(stack: Stack, path: str, status: int, message: str) -> None:
    stack.put("a.jpg", jpeg())
    with stack.edge() as edge:
        response = httpx.get(edge.url + path)
    assert response.status_code == status
    assert response.text == message
    assert response.headers["cache-control"] == "no-store"


def test_traversal_through_the_source_path(stack: Stack) -> None:
    from tests.rawhttp import get

    with stack.edge() as edge:
        for target in (
            b"/_/w=10/../../etc/passwd",
            b"/_/w=10/a/%2e%2e/%2e%2e/etc/passwd",
            b"/_/w=10/a%5c..%5cb",
        ):
            status, response = get(edge.port, target)
            assert status == 400, response


def test_source_limits_and_bad_sources(stack: Stack) -> None:
    big = noisy_jpeg(1200, 900)
    stack.put("big.jpg", big)
    (stack.blob_dir / "text.jpg").write_bytes(b"not an image at all")
    stack.put("cut.jpg", jpeg(300, 200))
    data = (stack.blob_dir / "cut.jpg").read_bytes()
    (stack.blob_dir / "cut.jpg").write_bytes(data[: len(data) // 2])
    with stack.edge(max_src_mb=0.5, max_src_mp=0.5) as edge:
        too_big = httpx.get(f"{edge.url}/_/w=10/big.jpg")
        assert too_big.status_code == 413
        assert httpx.get(f"{edge.url}/_/w=10/text.jpg").status_code == 415
        assert httpx.get(f"{edge.url}/_/w=10/cut.jpg").status_code == 422
    stack.put("wide.png", png(1000, 600))
    with stack.edge(max_src_mp=0.5) as edge:
        too_many_px = httpx.get(f"{edge.url}/_/w=10/wide.png")
    assert too_many_px.status_code == 413
    assert too_many_px.text == "source is 1000x600, over the pixel limit\n"


def test_origin_down_is_502(stack: Stack) -> None:
    with stack.edge(origin_url=f"http://127.0.0.1:{free_port()}") as edge:
        response = httpx.get(f"{edge.url}/_/w=10/a.jpg")
        ready = httpx.get(f"{edge.url}/readyz")
    assert response.status_code == 502
    assert response.text == "origin unreachable\n"
    assert ready.status_code == 503


def test_slow_origin_is_504(stack: Stack) -> None:
    async def slow(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "http":
            await asyncio.sleep(3)

    with (
        ServerThread(slow) as origin,
        stack.edge(origin_url=origin.url, origin_read_timeout_s=0.3) as edge,
    ):
        response = httpx.get(f"{edge.url}/_/w=10/a.jpg", timeout=10)
    assert response.status_code == 504


def test_full_queue_is_503_with_retry_after(stack: Stack) -> None:
    stack.put("big.jpg", noisy_jpeg(2000, 1500))

    async def burst(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(
                *(client.get(f"{url}/_/w={100 + i},blur=3/big.jpg") for i in range(6))
            )

    with stack.edge(workers=1, queue=0) as edge:
        responses = asyncio.run(burst(edge.url))
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) >= 1
    assert 503 in statuses
    refused = next(r for r in responses if r.status_code == 503)
    assert refused.headers["retry-after"] == "1"
    assert set(statuses) <= {200, 503}


def test_other_methods_and_health(stack: Stack) -> None:
    with stack.edge() as edge:
        assert httpx.post(f"{edge.url}/_/w=10/a.jpg").status_code == 405
        assert httpx.get(f"{edge.url}/healthz").status_code == 200
        assert httpx.get(f"{edge.url}/readyz").status_code == 200
        httpx.get(f"{edge.url}/_/w=10/missing.jpg")
        metrics = httpx.get(f"{edge.url}/metrics").text
    assert (
        'edge_http_requests_total{cache="none",method="GET",route="image",status="404"} 1.0'
        in metrics
    )
    assert "edge_transform_queue_depth 0.0" in metrics


def test_transforms_in_worker_processes(stack: Stack) -> None:
    stack.put("a.jpg", jpeg(200, 100))
    stack.put("cut.jpg", jpeg(300, 200))
    data = (stack.blob_dir / "cut.jpg").read_bytes()
    (stack.blob_dir / "cut.jpg").write_bytes(data[: len(data) // 2])
    with stack.edge(transform_processes=True, workers=1) as edge:
        response = httpx.get(f"{edge.url}/_/w=50,f=webp/a.jpg", timeout=60)
        refused = httpx.get(f"{edge.url}/_/w=50/cut.jpg", timeout=60)
    assert response.status_code == 200
    assert image_of(response).width == 50
    assert refused.status_code == 422, "errors raised in the worker cross the process boundary"
    assert refused.text == "image is truncated or corrupt\n"


@pytest.fixture
def crash_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The edge renders with tests/edge/crashers.py: sources ending in CRASH kill their
    worker with a real SIGSEGV (the libvips crash is what is simulated); the file gets
    a line per such render, saying where it ran."""
    import edge.transform.runner

    log = tmp_path / "crashes.log"
    monkeypatch.setenv("CRASH_LOG", str(log))
    monkeypatch.setenv("CRASH_EDGE_PID", str(os.getpid()))
    monkeypatch.setattr(edge.transform.runner, "render", crashers.render)
    monkeypatch.setattr(edge.transform.runner, "prepare", crashers.prepare)
    return log


def test_a_source_that_crashes_a_worker_costs_one_worker_not_one_per_variant(
    stack: Stack, crash_log: Path
) -> None:
    stack.put("poison.jpg", jpeg(200, 100) + crashers.CRASH)
    stack.put("fine.jpg", jpeg(200, 100))
    with stack.edge(transform_processes=True, workers=2) as edge_server:
        url = f"{edge_server.url}/_/w={{}}/poison.jpg"
        first = httpx.get(url.format(50), timeout=60)
        # new variants of it, one hot enough for a pre-shrunk copy (made in this process)
        later = [httpx.get(url.format(w), timeout=60) for w in (60, 70, 80)]
        fine = httpx.get(f"{edge_server.url}/_/w=50/fine.jpg", timeout=60)
        metrics = httpx.get(f"{edge_server.url}/metrics").text
    assert 'edge_worker_deaths_total{cause="crashed"} 1.0' in metrics
    assert "process_resident_memory_bytes" in metrics
    assert first.status_code == 422 and first.text == "image crashed the decoder\n"
    assert [r.status_code for r in later] == [422] * 3
    assert crash_log.read_text() == "worker\n", (
        "one worker died; the edge's process never decoded it"
    )
    assert fine.status_code == 200 and image_of(fine).width == 50


def test_headers_libvips_reads_are_read_in_a_worker(stack: Stack, crash_log: Path) -> None:
    # GIF, WebP, AVIF, SVG...: libvips parses the header (JPEG and PNG are read in Python)
    stack.put("poison.gif", gif(40, 30, frames=2) + crashers.CRASH)
    with stack.edge(transform_processes=True, workers=1) as edge_server:
        first = httpx.get(f"{edge_server.url}/_/w=20/poison.gif", timeout=60)
        again = httpx.get(f"{edge_server.url}/_/w=21/poison.gif", timeout=60)
    assert (first.status_code, again.status_code) == (422, 422)
    assert crash_log.read_text() == "worker\n"


def test_a_hot_source_is_decoded_in_the_edge_only_after_a_worker_rendered_it(
    stack: Stack, crash_log: Path
) -> None:
    # two requests at once for a new source: the second is "hot" before the first is
    # done, but no worker has survived the source yet, so it too goes to a worker
    stack.put("poison.jpg", noisy_jpeg(1200, 800) + crashers.CRASH)
    with stack.edge(transform_processes=True, workers=2) as edge_server:

        async def both() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=60) as client:
                return list(
                    await asyncio.gather(
                        *(client.get(f"{edge_server.url}/_/w={w}/poison.jpg") for w in (90, 91))
                    )
                )

        responses = asyncio.run(both())
    assert [r.status_code for r in responses] == [422, 422]
    assert "edge process" not in crash_log.read_text()


@pytest.mark.parametrize("processes", [False, True], ids=["threads", "processes"])
def test_new_variants_of_a_hot_source_skip_the_fetch_and_the_decode(
    stack: Stack, processes: bool
) -> None:
    # with worker processes too: jobs that use or make a decoded copy run in this process
    data = noisy_jpeg(2000, 1250)
    stack.put("hot.jpg", data)
    with stack.edge(transform_processes=processes) as edge:
        direct = httpx.get(f"{edge.url}/_/w=300/hot.jpg")  # first sight: from the bytes
        made = httpx.get(f"{edge.url}/_/w=301/hot.jpg")  # second: makes the copy
        widths = [httpx.get(f"{edge.url}/_/w={w},f=webp/hot.jpg") for w in (120, 640, 1000)]
        huge = httpx.get(f"{edge.url}/_/w=1900/hot.jpg")  # larger than the copy: from bytes
        metrics = httpx.get(f"{edge.url}/metrics").text
    sizes = [image_of(r).width for r in (direct, made, *widths, huge)]
    assert sizes == [300, 301, 120, 640, 1000, 1900]
    assert widths[0].headers["server-timing"].startswith("source-cache")
    assert "edge_source_cache_hits_total 5.0" in metrics  # kept from the first request on
    assert "edge_decoded_copies_made_total 1.0" in metrics
    assert "edge_decoded_copies_used_total 3.0" in metrics
    a = image_of(direct)
    b = image_of(made).thumbnail_image(300, height=a.height, size="force")
    assert abs(a.avg() - b.avg()) < 2, "a variant from the copy looks like one from the source"


def test_purge_drops_the_source(stack: Stack) -> None:
    stack.put("p.jpg", jpeg(200, 100, quality=30))
    auth = {"Authorization": "Bearer purge-secret"}
    with stack.edge(purge_keys="purge-secret") as edge:
        before = httpx.get(f"{edge.url}/_/w=50/p.jpg")
        httpx.get(f"{edge.url}/_/w=51/p.jpg")  # asked for twice: now kept
        stack.put("p.jpg", png(120, 60))
        stale = httpx.get(f"{edge.url}/_/w=50/p.jpg")
        assert image_of(stale).height == image_of(before).height, "within max-age: cached"
        url = f"{edge.url}/_purge"
        assert httpx.post(url, json={"source": "p.jpg"}).status_code == 401
        odd = [(b"authorization", b"Bearer \xe9t\xe9")]  # not ASCII: a 401, never a 500
        assert httpx.post(url, json={"source": "p.jpg"}, headers=odd).status_code == 401
        assert httpx.post(url, json={"x": 1}, headers=auth).status_code == 400
        lower = {"Authorization": "bearer purge-secret"}  # the scheme is case-insensitive
        purged = httpx.post(url, json={"source": "p.jpg"}, headers=lower)
        assert purged.status_code == 200 and purged.json()["purged"] >= 1
        fresh = httpx.get(f"{edge.url}/_/w=50/p.jpg")
    assert image_of(fresh).height == 25, "the new 120x60 source"
    assert fresh.headers["content-type"] == "image/png"


def test_origin_overwrite_reaches_the_edge_through_the_webhook(blob_dir: Path) -> None:
    from edge.compose import build_app as build_edge
    from edge.settings import EdgeSettings
    from origin.app import build_app as build_origin
    from origin.settings import OriginSettings
    from origin.stores import open_store

    edge_port = free_port()
    origin_port = free_port()
    edge_settings = EdgeSettings(
        origin_url=f"http://127.0.0.1:{origin_port}", purge_keys="k", access_log=False
    )
    origin_settings = OriginSettings(
        storage=f"file://{blob_dir}",
        api_keys="w:w-secret",
        purge_webhooks=f"http://127.0.0.1:{edge_port}/_purge",
        purge_key="k",
        access_log=False,
    )
    origin_app = build_origin(origin_settings, open_store(origin_settings.storage))
    with (
        ServerThread(build_edge(edge_settings), port=edge_port) as edge,
        ServerThread(origin_app, port=origin_port) as origin,
    ):
        auth = {"Authorization": "Bearer w-secret"}
        httpx.put(f"{origin.url}/o.jpg", content=jpeg(200, 100), headers=auth)
        assert image_of(httpx.get(f"{edge.url}/_/w=40/o.jpg")).height == 20
        httpx.put(f"{origin.url}/o.jpg", content=jpeg(200, 200), headers=auth)
        for _ in range(100):  # the webhook is asynchronous
            if image_of(httpx.get(f"{edge.url}/_/w=40/o.jpg")).height == 40:
                break
            time.sleep(0.05)
        assert image_of(httpx.get(f"{edge.url}/_/w=40/o.jpg")).height == 40


def test_a_source_without_etag_is_never_described_from_memory() -> None:
    """No ETag: the header probe and the decoded copy must come from the bytes at hand."""
    images = [jpeg(200, 100), jpeg(200, 100), jpeg(100, 200), jpeg(100, 200)]

    async def changing(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        body = images.pop(0) if len(images) > 1 else images[0]
        headers = [
            (b"content-type", b"image/jpeg"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    from edge.compose import build_app as build_edge
    from edge.settings import EdgeSettings

    with ServerThread(changing) as origin:
        settings = EdgeSettings(origin_url=origin.url, access_log=False)
        with ServerThread(build_edge(settings)) as edge:
            sizes = [image_of(httpx.get(f"{edge.url}/_/w=50/x.jpg")).height for _ in range(4)]
    assert sizes == [25, 25, 100, 100]
