"""Vector input is bounded before librsvg parses it, in the edge's workers and in the
origin's upload sniffing: a 4 KB svgz of a million elements is refused in milliseconds
with the process tree's memory untouched; a normal svgz renders; a script hidden inside
the compression is still seen."""

from __future__ import annotations

import gzip
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cdn_common.errors import PayloadTooLarge, UnsupportedMedia
from cdn_common.svg import MAX_SVG_ELEMENTS, svg_text
from origin.app import build_app as build_origin
from origin.settings import OriginSettings
from origin.stores import open_store
from tests.edge.countingorigin import Blob, CountingOrigin
from tests.edge.edges import edge_for
from tests.images import svg
from tests.servers import ServerThread

OPEN = b'<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100">'
BOMB = gzip.compress(OPEN + b"<g/>" * 1_000_000 + b"</svg>", 9)
SCRIPTED = gzip.compress(svg(extra="<script>alert(1)</script>"))


def tree_rss_mb() -> float:
    """Resident memory of this process and its children (the edge's workers)."""
    total = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        pid, ppid = int(fields["Pid"]), int(fields["PPid"])
        if (pid == os.getpid() or ppid == os.getpid()) and "VmRSS" in fields:
            total += int(fields["VmRSS"].split()[0])
    return total / 1024


def test_the_text_is_bounded_as_it_is_inflated() -> None:
    assert len(BOMB) < 8192
    started = time.monotonic()
    with pytest.raises(PayloadTooLarge, match="elements"):
        svg_text(BOMB)
    assert time.monotonic() - started < 0.5
    with pytest.raises(PayloadTooLarge):
        svg_text(OPEN + b"<g/>" * (MAX_SVG_ELEMENTS + 1) + b"</svg>")
    with pytest.raises(PayloadTooLarge, match="MiB"):
        svg_text(gzip.compress(OPEN + b" " * (9 << 20) + b"</svg>"))
    with pytest.raises(UnsupportedMedia):
        svg_text(b"\x1f\x8b" + b"\xff" * 64)  # not deflate
    assert svg_text(gzip.compress(svg())) == svg()


@pytest.fixture
def origin() -> Iterator[ServerThread]:
    blobs = {
        "bomb.svgz": Blob(BOMB, content_type="image/svg+xml"),
        "scripted.svgz": Blob(SCRIPTED, content_type="image/svg+xml"),
        "fine.svgz": Blob(gzip.compress(svg(200, 100)), content_type="image/svg+xml"),
    }
    with ServerThread(CountingOrigin(blobs)) as server:
        yield server


def test_an_svgz_bomb_is_refused_at_the_edge_without_memory(origin: ServerThread) -> None:
    with edge_for(origin) as edge:
        assert httpx.get(f"{edge.url}/_/w=50/fine.svgz").headers["content-type"] == "image/png"
        before = tree_rss_mb()
        for path in ("/_/w=100/bomb.svgz", "/_/f=json/bomb.svgz", "/_/f=json/bomb.svgz"):
            started = time.monotonic()
            answer = httpx.get(edge.url + path, timeout=30)
            assert answer.status_code == 413, answer.text
            assert "elements" in answer.text
            assert time.monotonic() - started < 1
        assert tree_rss_mb() - before < 200
        scripted = httpx.get(f"{edge.url}/_/w=100/scripted.svgz")
        assert scripted.status_code == 415


def test_the_origin_refuses_an_svgz_bomb_upload(blob_dir: Path) -> None:
    settings = OriginSettings(storage=f"file://{blob_dir}", api_keys="w:w-secret", access_log=False)
    auth = {"Authorization": "Bearer w-secret"}
    with ServerThread(build_origin(settings, open_store(settings.storage))) as server:
        started = time.monotonic()
        refused = httpx.put(f"{server.url}/bomb.svgz", content=BOMB, headers=auth, timeout=30)
        assert refused.status_code == 413
        assert time.monotonic() - started < 1
        fine = httpx.put(f"{server.url}/fine.svgz", content=gzip.compress(svg()), headers=auth)
        assert fine.status_code == 201
