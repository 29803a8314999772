"""Small holes a hostile client found, each closed and checked over real sockets: the
origin's own endpoints through the identity route, non-ASCII digits, `q=0` in Accept,
error bodies a browser could sniff, and an origin whose reads need a key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.negotiate import accept_class
from origin.app import build_app as build_origin
from origin.settings import OriginSettings
from origin.stores import open_store
from tests.edge.countingorigin import Blob, CountingOrigin
from tests.edge.edges import edge_for
from tests.images import jpeg
from tests.servers import ServerThread


@pytest.fixture
def origin(blob_dir: Path) -> Iterator[ServerThread]:
    settings = OriginSettings(
        storage=f"file://{blob_dir}",
        api_keys="w:w-secret,r:r-secret:read",
        access_log=False,
        public_read=False,
    )
    with ServerThread(build_origin(settings, open_store(settings.storage))) as server:
        put = httpx.put(
            f"{server.url}/a.jpg",
            content=jpeg(64, 32),
            headers={"Authorization": "Bearer w-secret"},
        )
        assert put.status_code == 201
        yield server


@pytest.mark.parametrize("path", ["/_/_/metrics", "/_/_/healthz", "/_/_/_meta/a.jpg"])
def test_the_origins_own_endpoints_are_not_sources(origin: ServerThread, path: str) -> None:
    with edge_for(origin, origin_read_key="r-secret") as edge:
        answer = httpx.get(edge.url + path)
        assert answer.status_code == 404
        assert b"origin_http_requests" not in answer.content


def test_unsafe_methods_are_refused_unless_the_operator_allows_them(origin: ServerThread) -> None:
    with edge_for(origin, origin_read_key="r-secret") as edge:
        for method in ("PUT", "POST", "DELETE", "PATCH"):
            answer = httpx.request(method, f"{edge.url}/_/_/a.jpg", content=b"x")
            assert answer.status_code == 405, method


def test_an_origin_that_needs_a_read_key_is_read_with_it(origin: ServerThread) -> None:
    with edge_for(origin) as edge:  # no key: the origin refuses, the edge says so
        assert httpx.get(f"{edge.url}/_/w=20/a.jpg").status_code == 502
    with edge_for(origin, origin_read_key="r-secret", cache_dir="keyed") as edge:
        answer = httpx.get(f"{edge.url}/_/w=20/a.jpg")
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"


@pytest.mark.parametrize(
    ("accept", "klass"),
    [
        (b"image/avif,image/webp,*/*", "aw"),
        (b"image/avif;q=0,image/webp", "w"),
        (b"image/avif;q=0.0, image/webp;q=0", ""),
        (b"IMAGE/AVIF;Q=0.5", "a"),
        (b"image/avif; q=oops", "a"),
        (b"image/*;q=1", ""),
        (b"", ""),
    ],
)
def test_accept_weights_choose_the_format_class(accept: bytes, klass: str) -> None:
    assert accept_class(accept) == klass


@pytest.fixture
def counting() -> Iterator[tuple[CountingOrigin, ServerThread]]:
    app = CountingOrigin({"a.jpg": Blob(jpeg(100, 50))})
    with ServerThread(app) as server:
        yield app, server


def test_q_zero_avif_is_not_sent_avif(counting: Any) -> None:
    _, server = counting
    with edge_for(server) as edge:
        answer = httpx.get(
            f"{edge.url}/_/w=30,f=auto/a.jpg", headers={"Accept": "image/avif;q=0,image/webp"}
        )
        assert answer.headers["content-type"] == "image/webp"


@pytest.mark.parametrize("digits", ["\u00b2", "\u0663", "\uff11"])  # ², Arabic-Indic 3, fullwidth 1
def test_non_ascii_digits_are_a_400_or_ignored_never_a_500(counting: Any, digits: str) -> None:
    app, server = counting
    app.blobs["a.jpg"].cache_control = f"max-age={digits}, stale-while-revalidate={digits}"
    with edge_for(server) as edge:
        option = httpx.get(f"{edge.url}/_/w={digits}/a.jpg")
        assert option.status_code == 400
        fetched = httpx.get(f"{edge.url}/_/w=31/a.jpg")  # the origin's odd values: ignored
        assert fetched.status_code == 200


def test_error_bodies_are_plain_text_that_is_never_sniffed(counting: Any) -> None:
    _, server = counting
    with edge_for(server) as edge:
        for path in ("/_/w=0/a.jpg", "/_/w=30/missing.jpg", "/x"):
            answer = httpx.get(edge.url + path)
            assert answer.status_code >= 400, path
            assert answer.headers["content-type"].startswith("text/plain"), path
            assert answer.headers["x-content-type-options"] == "nosniff", path


def test_format_json_answers_are_cached_like_any_variant(counting: Any) -> None:
    app, server = counting
    with edge_for(server) as edge:
        first = httpx.get(f"{edge.url}/_/w=40,f=json/a.jpg")
        second = httpx.get(f"{edge.url}/_/w=40,f=json/a.jpg")
    assert first.headers["content-type"] == "application/json"
    assert second.headers["cache-status"] == "edge; hit; detail=memory"
    assert second.content == first.content and app.gets == 1
