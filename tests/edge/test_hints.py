"""Client hints: `width=auto` and `dpr=auto` from Sec-CH-Width, Width, Sec-CH-DPR, DPR and
Sec-CH-Viewport-Width, rounded so hints cannot mint unbounded variants, with Vary."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import pyvips

from edge.hints import resolve
from tests.edge.countingorigin import Blob, CountingOrigin
from tests.edge.edges import edge_for
from tests.images import jpeg
from tests.servers import ServerThread


@pytest.mark.parametrize(
    ("options", "headers", "resolved"),
    [
        ("w=auto", {b"sec-ch-width": b"380"}, "width=400"),
        ("width=auto,f=webp", {b"width": b"401"}, "width=450,f=webp"),
        ("w=auto", {b"sec-ch-viewport-width": b"300", b"sec-ch-dpr": b"2"}, "width=600"),
        ("w=auto", {}, "_"),  # no hint: the source's own width
        ("w=200,dpr=auto", {b"sec-ch-dpr": b"2.2"}, "w=200,dpr=2"),
        ("w=200,dpr=auto", {b"dpr": b"9"}, "w=200,dpr=4"),
        ("w=auto", {b"sec-ch-width": b"99999"}, "width=8192"),
        ("w=auto", {b"sec-ch-width": b"nan"}, "_"),
    ],
)
def test_hints_resolve_to_bounded_sizes(
    options: str, headers: dict[bytes, bytes], resolved: str
) -> None:
    assert resolve(options, headers, 8192) == (resolved, True)


def test_allowed_widths_take_the_next_one_up() -> None:
    allowed = frozenset({320, 640, 1280})
    assert resolve("w=auto", {b"width": b"500"}, 8192, allowed) == ("width=640", True)
    assert resolve("w=auto", {b"width": b"5000"}, 8192, allowed) == ("width=1280", True)
    assert resolve("w=300", {b"width": b"500"}, 8192, allowed) == ("w=300", False)


@pytest.fixture
def origin() -> Iterator[ServerThread]:
    with ServerThread(CountingOrigin({"a.jpg": Blob(jpeg(1000, 500))})) as server:
        yield server


def test_width_auto_sizes_by_the_hint_and_varies_on_it(origin: ServerThread) -> None:
    with edge_for(origin) as edge:
        first = httpx.get(f"{edge.url}/_/w=auto/a.jpg", headers={"Sec-CH-Width": "380"})
        assert pyvips.Image.new_from_buffer(first.content, "").width == 400
        assert "Sec-CH-Width" in first.headers["vary"]
        same = httpx.get(f"{edge.url}/_/w=auto/a.jpg", headers={"Width": "360"})
        assert same.headers["cache-status"] == "edge; hit; detail=memory"  # one 400 px entry
        spelled = httpx.get(f"{edge.url}/_/w=400/a.jpg")
        assert spelled.headers["cache-status"] == "edge; hit; detail=memory"
        assert "vary" not in spelled.headers
        none = httpx.get(f"{edge.url}/_/w=auto/a.jpg")
        assert pyvips.Image.new_from_buffer(none.content, "").width == 1000
