"""A real browser (headless Chromium, driven by Playwright) on a page of another origin:
what a web page does with our images works. The page is served from one port and the
edge from another, so every image request is cross-origin, as on a real site.

- `<img crossorigin>` loads and a canvas drawing it is not tainted (CORS);
- the Resource Timing entry of a cross-origin fetch exposes `Server-Timing`
  (`Timing-Allow-Origin`);
- `format=auto` sends AVIF for the `Accept` Chromium sends with an `<img>`;
- `dpr=auto` and `width=auto` are resolved from the client hints the page delegates to
  the edge (`Accept-CH`, `<meta http-equiv="Delegate-CH">`), at a device scale of 2.

The browser comes from the OS (Debian's `chromium`, which `make test` installs with
apt-get): Playwright's own download of a browser does not work on machines without a
network to its CDN. Only where neither exists is the test skipped, with that reason.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.types import Receive, Scope, Send

from tests.edge.countingorigin import Blob, CountingOrigin
from tests.edge.edges import edge_for
from tests.images import jpeg
from tests.servers import ServerThread

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (make test installs Debian's with apt-get)"
)


def page_html(edge: str) -> bytes:
    hints = "; ".join(f"{hint} {edge}" for hint in ("sec-ch-dpr", "sec-ch-width"))
    return f"""<!doctype html>
<html><head>
<meta http-equiv="Delegate-CH" content="{hints}">
<title>shop</title></head>
<body>
<img id="cors" crossorigin="anonymous" src="{edge}/_/w=40/a.jpg">
<img id="auto" src="{edge}/_/w=200,f=auto/a.jpg">
<img id="dpr" src="{edge}/_/w=40,dpr=auto/a.jpg">
<img id="width" sizes="120px" src="{edge}/_/width=auto/a.jpg">
</body></html>""".encode()


class Page:
    """The web site: one HTML page that opts in to client hints for the edge."""

    def __init__(self) -> None:
        self.edge = ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = page_html(self.edge)
        headers = [
            (b"content-type", b"text/html; charset=utf-8"),
            (b"accept-ch", b"Sec-CH-DPR, Sec-CH-Width"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def site() -> Iterator[tuple[str, str]]:
    origin_app = CountingOrigin({"a.jpg": Blob(jpeg(400, 300))})
    page = Page()
    with ServerThread(origin_app) as origin, edge_for(origin) as edge, ServerThread(page) as web:
        page.edge = edge.url
        yield web.url, edge.url


def loaded(page: Any, element: str) -> None:
    page.wait_for_function(
        f"document.getElementById('{element}').complete && "
        f"document.getElementById('{element}').naturalWidth > 0",
        timeout=30_000,
    )


def test_a_web_page_uses_our_images_as_browsers_do(site: tuple[str, str]) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    web, edge = site
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            context = browser.new_context(device_scale_factor=2)
            page = context.new_page()
            answers: dict[str, Any] = {}
            page.on("response", lambda r: answers.__setitem__(r.url, r))
            page.goto(web)
            for element in ("cors", "auto", "dpr", "width"):
                loaded(page, element)

            # CORS: the canvas can be read back (a tainted one throws SecurityError)
            read_back = page.evaluate(
                """() => {
                    const img = document.getElementById('cors');
                    const canvas = document.createElement('canvas');
                    canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
                    const ctx = canvas.getContext('2d');
                    ctx.drawImage(img, 0, 0);
                    return ctx.getImageData(0, 0, 1, 1).data.length;
                }"""
            )
            assert read_back == 4

            # Timing-Allow-Origin: a cross-origin fetch's Server-Timing is readable
            timing = page.evaluate(
                """async (url) => {
                    await (await fetch(url, {mode: 'cors'})).arrayBuffer();
                    const entry = performance.getEntriesByName(url).pop();
                    return entry.serverTiming.map(t => t.name);
                }""",
                f"{edge}/_/w=40/a.jpg",
            )
            # (the browser may answer from its own cache: then the entry is the first load's)
            assert timing and set(timing) <= {"cache", "origin", "transform"}, timing

            # format=auto: Chromium's <img> Accept gets AVIF, with Vary: Accept (a photo
            # over 128 x 128 px: smaller ones and graphics get the smaller of AVIF and WebP)
            auto = answers[f"{edge}/_/w=200,f=auto/a.jpg"]
            assert auto.headers["content-type"] == "image/avif"
            assert "accept" in auto.headers["vary"].lower()

            # client hints delegated to the edge: DPR 2 doubles the width
            assert page.evaluate("document.getElementById('dpr').naturalWidth") == 80
            hinted = answers[f"{edge}/_/w=40,dpr=auto/a.jpg"]
            assert hinted.request.headers.get("sec-ch-dpr") == "2"
            assert "sec-ch-dpr" in hinted.headers["vary"].lower()
            # sizes=120px at DPR 2: Sec-CH-Width 240, rounded up to the 50 px step
            width = answers[f"{edge}/_/width=auto/a.jpg"]
            assert width.request.headers.get("sec-ch-width") == "240"
            assert page.evaluate("document.getElementById('width').naturalWidth") == 250
        finally:
            browser.close()
