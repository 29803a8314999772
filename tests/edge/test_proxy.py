"""The identity route as an RFC 9111 shared cache, rule by rule, against a scripted origin
over real sockets; time moves on an injected clock, never by sleeping."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from cdn_common.http import http_date
from edge.clock import ManualClock
from tests.edge.edges import edge_for
from tests.images import jpeg, png
from tests.servers import ServerThread

IMAGE = jpeg(40, 30)
Answer = tuple[int, list[tuple[str, str]], bytes]


@dataclass
class Scripted:
    """An origin whose answer a test sets; it records what it was asked."""

    clock: ManualClock
    respond: Callable[[dict[str, Any]], Answer] = lambda request: (200, [], IMAGE)
    seen: list[dict[str, Any]] = field(default_factory=list)
    # its Date is its own (on its clock): uvicorn's is off
    uvicorn_options: dict[str, object] = field(default_factory=lambda: {"date_header": False})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = {
            "method": scope["method"],
            "path": scope["path"],
            "query": scope["query_string"].decode(),
            "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
            "body": body,
        }
        self.seen.append(request)
        status, headers, content = self.respond(request)
        sent = [(k.lower().encode(), v.encode()) for k, v in headers]
        if not any(k == b"content-type" for k, _ in sent):
            sent.append((b"content-type", b"image/jpeg"))
        if not any(k == b"date" for k, _ in sent):
            sent.append((b"date", http_date(self.clock()).encode()))
        await send({"type": "http.response.start", "status": status, "headers": sent})
        await send({"type": "http.response.body", "body": content})


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(time.time())


@pytest.fixture
def origin(clock: ManualClock) -> Iterator[tuple[Scripted, ServerThread]]:
    app = Scripted(clock)
    with ServerThread(app) as server:
        yield app, server


def answer(*headers: tuple[str, str], status: int = 200, body: bytes = IMAGE) -> Any:
    return lambda request: (status, list(headers), body)


def test_query_headers_and_status_pass_through(origin: Any, clock: ManualClock) -> None:
    app, server = origin
    app.respond = answer(("Cache-Control", "max-age=60"), ("X-Custom", "yes"), status=404)
    with edge_for(server, clock=clock) as edge:
        got = httpx.get(f"{edge.url}/_/_/a.jpg?v=2&x=%20", headers={"X-Trace": "t1"})
        assert got.status_code == 404 and got.content == IMAGE
        assert got.headers["x-custom"] == "yes"
        assert app.seen[-1]["query"] == "v=2&x=%20"
        assert app.seen[-1]["headers"]["x-trace"] == "t1"
        assert "host" not in app.seen[-1]["headers"] or app.seen[-1]["headers"]["host"] != "e"
        again = httpx.get(f"{edge.url}/_/_/a.jpg?v=2&x=%20")
        assert again.status_code == 404 and again.headers["cache-status"].startswith("edge; hit")
        other = httpx.get(f"{edge.url}/_/_/a.jpg?v=3")
        assert other.headers["cache-status"].startswith("edge; fwd=uri-miss")


def test_types_outside_the_passthrough_list_are_refused(origin: Any, clock: ManualClock) -> None:
    app, server = origin
    app.respond = answer(("Content-Type", "text/html"), body=b"<html></html>")
    with edge_for(server, clock=clock) as edge:
        assert httpx.get(f"{edge.url}/_/_/page").status_code == 415
    with edge_for(server, clock=clock, passthrough_types="*", cache_dir="all") as edge:
        page = httpx.get(f"{edge.url}/_/_/page")
        assert page.status_code == 200 and page.content == b"<html></html>"


def test_stale_is_served_only_with_permission(origin: Any, clock: ManualClock) -> None:
    app, server = origin
    app.respond = answer(("Cache-Control", "max-age=10"), ("ETag", '"v1"'))
    with edge_for(server, clock=clock) as edge:
        httpx.get(f"{edge.url}/_/_/a.jpg")
        clock.advance(20)
        app.respond = answer(("Cache-Control", "max-age=10"), ("ETag", '"v1"'), status=304)
        stale = httpx.get(f"{edge.url}/_/_/a.jpg")
        assert stale.headers["cache-status"] == "edge; fwd=stale; fwd-status=304"
        assert app.seen[-1]["headers"]["if-none-match"] == '"v1"'
    app.respond = answer(("Cache-Control", "max-age=10, stale-while-revalidate=60"))
    with edge_for(server, clock=clock, cache_dir="swr") as edge:
        httpx.get(f"{edge.url}/_/_/b.jpg")
        clock.advance(20)
        served = httpx.get(f"{edge.url}/_/_/b.jpg")
        assert "stale-while-revalidate" in served.headers["cache-status"]


def test_stale_if_error_needs_the_directive(origin: Any, clock: ManualClock) -> None:
    app, server = origin
    app.respond = answer(("Cache-Control", "max-age=10"))
    with edge_for(server, clock=clock) as edge:
        httpx.get(f"{edge.url}/_/_/a.jpg")
        clock.advance(20)
        app.respond = answer(status=503, body=b"down")
        assert httpx.get(f"{edge.url}/_/_/a.jpg").status_code == 503
    app.respond = answer(("Cache-Control", "max-age=10, stale-if-error=60"))
    with edge_for(server, clock=clock, cache_dir="sie") as edge:
        httpx.get(f"{edge.url}/_/_/b.jpg")
        clock.advance(20)
        app.respond = answer(status=503, body=b"down")
        kept = httpx.get(f"{edge.url}/_/_/b.jpg")
        assert kept.status_code == 200 and "stale-if-error" in kept.headers["cache-status"]


def test_vary_keys_by_the_named_request_headers(origin: Any, clock: ManualClock) -> None:
    app, server = origin
    app.respond = lambda r: (
        200,
        [
            ("Cache-Control", "max-age=60"),
            ("Vary", "Accept-Language"),
            ("Content-Type", "text/plain"),
        ],
        r["headers"].get("accept-language", "-").encode(),
    )
    with edge_for(server, clock=clock, passthrough_types="*") as edge:
        en = httpx.get(f"{edge.url}/_/_/a", headers={"Accept-Language": "en"})
        fr = httpx.get(f"{edge.url}/_/_/a", headers={"Accept-Language": "fr"})
        en2 = httpx.get(f"{edge.url}/_/_/a", headers={"Accept-Language": "en"})
        assert (en.content, fr.content, en2.content) == (b"en", b"fr", b"en")
        assert en2.headers["cache-status"].startswith("edge; hit")
        assert fr.headers["cache-status"] == "edge; fwd=vary-miss; fwd-status=200; stored"
    app.respond = answer(("Cache-Control", "max-age=60"), ("Vary", "*"))
    with edge_for(server, clock=clock, cache_dir="star") as edge:
        httpx.get(f"{edge.url}/_/_/b.jpg")
        again = httpx.get(f"{edge.url}/_/_/b.jpg")
        assert again.headers["cache-status"] == "edge; fwd=uri-miss; fwd-status=200"  # not stored


def test_age_and_date_follow_the_origin(origin: Any, clock: ManualClock) -> None:
    app, server = origin
    date = http_date(clock() - 30)
    app.respond = answer(("Cache-Control", "max-age=200"), ("Age", "100"), ("Date", date))
    with edge_for(server, clock=clock) as edge:
        first = httpx.get(f"{edge.url}/_/_/a.jpg")
        assert int(first.headers["age"]) >= 100
        clock.advance(50)
        hit = httpx.get(f"{edge.url}/_/_/a.jpg")
        assert hit.headers["cache-status"].startswith("edge; hit")
        assert int(hit.headers["age"]) >= 150
        assert hit.headers.get_list("date") == [date]  # the stored Date, once
        clock.advance(60)  # 100 + 110 > 200
        assert httpx.get(f"{edge.url}/_/_/a.jpg").headers["cache-status"].startswith("edge; fwd")


def test_expires_and_repeated_cache_control(origin: Any, clock: ManualClock) -> None:
    app, server = origin
    app.respond = answer(("Expires", "not a date"), ("ETag", '"x"'))
    with edge_for(server, clock=clock) as edge:
        httpx.get(f"{edge.url}/_/_/a.jpg")
        assert httpx.get(f"{edge.url}/_/_/a.jpg").headers["cache-status"].startswith("edge; fwd")
    app.respond = answer(("Cache-Control", "public"), ("Cache-Control", "max-age=100"))
    with edge_for(server, clock=clock, cache_dir="two") as edge:
        httpx.get(f"{edge.url}/_/_/b.jpg")
        clock.advance(50)
        assert httpx.get(f"{edge.url}/_/_/b.jpg").headers["cache-status"].startswith("edge; hit")


def test_cdn_cache_control_steers_this_cache_and_is_consumed(
    origin: Any, clock: ManualClock
) -> None:
    app, server = origin
    app.respond = answer(
        ("Cache-Control", "no-cache"),
        ("CDN-Cache-Control", "max-age=100"),
        ("Surrogate-Control", "max-age=5"),
    )
    with edge_for(server, clock=clock) as edge:
        httpx.get(f"{edge.url}/_/_/a.jpg")
        clock.advance(50)
        hit = httpx.get(f"{edge.url}/_/_/a.jpg")
        assert hit.headers["cache-status"].startswith("edge; hit")
        assert hit.headers["cache-control"] == "no-cache"
        assert "cdn-cache-control" not in hit.headers and "surrogate-control" not in hit.headers


def test_a_304_updates_the_stored_headers(origin: Any, clock: ManualClock) -> None:
    app, server = origin
    app.respond = answer(("Cache-Control", "max-age=10"), ("ETag", '"v1"'), ("X-Version", "1"))
    with edge_for(server, clock=clock) as edge:
        httpx.get(f"{edge.url}/_/_/a.jpg")
        clock.advance(20)
        app.respond = answer(
            ("Cache-Control", "max-age=10"), ("ETag", '"v1"'), ("X-Version", "2"), status=304
        )
        refreshed = httpx.get(f"{edge.url}/_/_/a.jpg")
        assert refreshed.status_code == 200 and refreshed.content == IMAGE
        assert refreshed.headers["x-version"] == "2"
        hit = httpx.get(f"{edge.url}/_/_/a.jpg")
        assert hit.headers["x-version"] == "2" and hit.headers["cache-status"].startswith(
            "edge; hit"
        )


def test_authorized_requests_are_stored_only_when_the_origin_allows(
    origin: Any, clock: ManualClock
) -> None:
    app, server = origin
    app.respond = answer(("Cache-Control", "max-age=60"))
    auth = {"Authorization": "Bearer x"}
    with edge_for(server, clock=clock) as edge:
        httpx.get(f"{edge.url}/_/_/a.jpg", headers=auth)
        assert httpx.get(f"{edge.url}/_/_/a.jpg").headers["cache-status"].startswith("edge; fwd")
        app.respond = answer(("Cache-Control", "public, max-age=60"))
        httpx.get(f"{edge.url}/_/_/b.jpg", headers=auth)
        assert httpx.get(f"{edge.url}/_/_/b.jpg").headers["cache-status"].startswith("edge; hit")


def test_heuristic_freshness_only_from_last_modified(origin: Any, clock: ManualClock) -> None:
    app, server = origin
    app.respond = answer(("Last-Modified", http_date(clock() - 10 * 86400)))
    with edge_for(server, clock=clock) as edge:
        httpx.get(f"{edge.url}/_/_/a.jpg")
        clock.advance(3600)
        assert httpx.get(f"{edge.url}/_/_/a.jpg").headers["cache-status"].startswith("edge; hit")
    app.respond = answer()  # no freshness information at all: nothing invented
    with edge_for(server, clock=clock, cache_dir="none") as edge:
        httpx.get(f"{edge.url}/_/_/b.jpg")
        assert httpx.get(f"{edge.url}/_/_/b.jpg").headers["cache-status"].startswith("edge; fwd")


def test_conditionals_and_ranges_are_answered_from_the_cache(
    origin: Any, clock: ManualClock
) -> None:
    app, server = origin
    modified = http_date(clock() - 1000)
    app.respond = answer(
        ("Cache-Control", "max-age=60"), ("ETag", 'W/"weak"'), ("Last-Modified", modified)
    )
    with edge_for(server, clock=clock) as edge:
        first = httpx.get(f"{edge.url}/_/_/a.jpg")
        assert first.headers["etag"] == 'W/"weak"'  # kept as the origin sent it
        asked = len(app.seen)
        tag = httpx.get(f"{edge.url}/_/_/a.jpg", headers={"If-None-Match": 'W/"weak"'})
        since = httpx.get(f"{edge.url}/_/_/a.jpg", headers={"If-Modified-Since": modified})
        part = httpx.get(f"{edge.url}/_/_/a.jpg", headers={"Range": "bytes=0-9"})
        assert tag.status_code == since.status_code == 304
        assert part.status_code == 206 and part.content == IMAGE[:10]
        assert part.headers["content-range"] == f"bytes 0-9/{len(IMAGE)}"
        assert len(app.seen) == asked


def test_request_directives(origin: Any, clock: ManualClock) -> None:
    app, server = origin
    app.respond = answer(("Cache-Control", "max-age=60"))
    with edge_for(server, clock=clock) as edge:
        only = httpx.get(f"{edge.url}/_/_/a.jpg", headers={"Cache-Control": "only-if-cached"})
        assert only.status_code == 504
        httpx.get(f"{edge.url}/_/_/a.jpg")
        asked = len(app.seen)
        no_cache = httpx.get(f"{edge.url}/_/_/a.jpg", headers={"Cache-Control": "no-cache"})
        assert len(app.seen) == asked + 1 and no_cache.status_code == 200
        # RFC 9211: a fresh response the request would not take is forwarded "by request"
        assert no_cache.headers["cache-status"].startswith("edge; fwd=request; fwd-status=200")
        clock.advance(10)
        hit = httpx.get(f"{edge.url}/_/_/a.jpg")
        assert hit.headers["cache-status"] == "edge; hit; detail=memory"
        too_old = httpx.get(f"{edge.url}/_/_/a.jpg", headers={"Cache-Control": "max-age=5"})
        assert too_old.headers["cache-status"].startswith("edge; fwd=request")


def test_qualified_private_keeps_the_rest(origin: Any, clock: ManualClock) -> None:
    app, server = origin
    app.respond = answer(
        ("Cache-Control", 'max-age=60, private="Set-Cookie"'), ("Set-Cookie", "id=alice")
    )
    with edge_for(server, clock=clock) as edge:
        first = httpx.get(f"{edge.url}/_/_/a.jpg")
        assert first.headers["set-cookie"] == "id=alice"  # the one who asked gets it
        again = httpx.get(f"{edge.url}/_/_/a.jpg")
        assert again.headers["cache-status"].startswith("edge; hit")
        assert "set-cookie" not in again.headers, "a listed private field is never shared"
    app.respond = answer(("Cache-Control", "max-age=60, private"))
    with edge_for(server, clock=clock, cache_dir="plain") as edge:
        httpx.get(f"{edge.url}/_/_/b.jpg")
        again = httpx.get(f"{edge.url}/_/_/b.jpg")
        assert again.headers["cache-status"].startswith("edge; fwd=uri-miss")


def test_unsafe_methods_invalidate_the_uri_and_its_location(
    origin: Any, clock: ManualClock
) -> None:
    app, server = origin
    app.respond = answer(("Cache-Control", "max-age=600"))
    with edge_for(server, clock=clock, passthrough_methods="GET,HEAD,POST") as edge:
        httpx.get(f"{edge.url}/_/_/a.jpg")
        httpx.get(f"{edge.url}/_/_/b.jpg")
        app.respond = answer(("Location", "/b.jpg"), status=201, body=b"")
        posted = httpx.post(f"{edge.url}/_/_/a.jpg", content=b"data")
        assert posted.status_code == 201 and app.seen[-1]["body"] == b"data"
        assert posted.headers.get_list("date").__len__() == 1
        app.respond = answer(("Cache-Control", "max-age=600"))
        for path in ("a.jpg", "b.jpg"):
            status = httpx.get(f"{edge.url}/_/_/{path}").headers["cache-status"]
            assert status.startswith("edge; fwd=uri-miss"), path


def test_svg_and_markup_still_go_through_the_image_flow(origin: Any, clock: ManualClock) -> None:
    app, server = origin
    app.respond = lambda r: (
        200,
        [("Content-Type", "image/png")],
        png(8, 8) if r["path"] == "/ok.png" else b"<html>not an image</html>",
    )
    with edge_for(server, clock=clock) as edge:
        assert httpx.get(f"{edge.url}/_/_/ok.png").status_code == 200
        assert httpx.get(f"{edge.url}/_/_/fake.png").status_code == 415
