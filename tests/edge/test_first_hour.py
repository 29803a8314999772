"""What a browser, a newcomer and an operator meet first: CORS and Timing-Allow-Origin on
image responses and their preflight, a browser lifetime short enough for purges,
misconfiguration refused or warned about, quiet logs."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from cdn_common.logs import configure_logging
from cdn_common.settings import ConfigError, load_settings, unknown_variables
from edge.compose import build_app
from edge.settings import EdgeSettings
from origin.settings import OriginSettings
from tests.edge.countingorigin import Blob, CountingOrigin
from tests.edge.edges import edge_for
from tests.images import jpeg
from tests.servers import ServerThread


def test_access_lines_name_client_agent_referer_and_request_id() -> None:
    counting = CountingOrigin({"a.jpg": Blob(jpeg(80, 60))})
    stream = io.BytesIO()
    with ServerThread(counting) as origin:
        app = build_app(
            EdgeSettings(origin_url=origin.url, access_log=True, trusted_proxies="127.0.0.1/32")
        )
        app.app.access_log._stream = stream  # type: ignore[union-attr]
        with ServerThread(app) as edge:
            asked = {"User-Agent": "Mozilla/5.0 test", "Referer": "https://shop.example/p"}
            miss = httpx.get(f"{edge.url}/_/w=40/a.jpg", headers=asked)
            with httpx.Client() as client:  # keep-alive: the hit is answered in the protocol
                client.get(f"{edge.url}/_/w=41/a.jpg")
                hit = client.get(
                    f"{edge.url}/_/w=40/a.jpg",
                    headers={**asked, "X-Request-ID": "req-42", "X-Forwarded-For": "203.0.113.9"},
                )
            assert miss.status_code == hit.status_code == 200
            assert hit.headers["cache-status"] == "edge; hit; detail=memory"
        app.app.access_log.flush()  # type: ignore[union-attr]
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    images = [line for line in lines if "/w=40/" in line.get("path", "")]
    first, second = images
    for line in (first, second):
        assert line["user_agent"] == "Mozilla/5.0 test"
        assert line["referer"] == "https://shop.example/p"
        assert {"cache", "status", "bytes", "duration_ms"} <= line.keys()
    assert first["client"] == "127.0.0.1" and first["cache"].startswith("edge; fwd=uri-miss")
    # the miss's id went to the origin with its fetch, so both logs can be joined on it
    assert first["request_id"] == counting.request_ids[0] and len(first["request_id"]) >= 16
    assert second["client"] == "203.0.113.9", "past the trusted proxy"
    assert second["request_id"] == "req-42"


@pytest.fixture
def origin() -> Iterator[ServerThread]:
    with ServerThread(CountingOrigin({"a.jpg": Blob(jpeg(80, 60))})) as server:
        yield server


def test_images_carry_cors_and_timing_allow_origin_by_default(origin: ServerThread) -> None:
    with edge_for(origin) as edge:
        for _ in range(2):  # the miss and the hit (the fast path) alike
            answer = httpx.get(f"{edge.url}/_/w=40/a.jpg")
            assert answer.headers["access-control-allow-origin"] == "*"
            assert answer.headers["timing-allow-origin"] == "*"
        assert httpx.get(f"{edge.url}/_/_/a.jpg").headers["access-control-allow-origin"] == "*"
        preflight = httpx.options(
            f"{edge.url}/_/w=40/a.jpg",
            headers={
                "Origin": "https://shop.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "x-app",
            },
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "*"
        assert preflight.headers["access-control-allow-headers"] == "x-app"
        assert "GET" in preflight.headers["access-control-allow-methods"]


def test_a_list_of_origins_is_answered_per_request_with_vary(origin: ServerThread) -> None:
    with edge_for(origin, cors_origins="https://shop.example") as edge:
        for _ in range(2):
            ours = httpx.get(f"{edge.url}/_/w=40/a.jpg", headers={"Origin": "https://shop.example"})
            assert ours.headers["access-control-allow-origin"] == "https://shop.example"
            assert "Origin" in ours.headers["vary"]
        other = httpx.get(f"{edge.url}/_/w=40/a.jpg", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
    with edge_for(origin, cors_origins="", cache_dir="off") as edge:
        assert "access-control-allow-origin" not in httpx.get(f"{edge.url}/_/w=40/a.jpg").headers


@pytest.mark.parametrize(
    ("source", "variant"),
    [
        ("public, max-age=31536000", "public, max-age=3600, s-maxage=86400"),
        (
            "public, max-age=600, stale-while-revalidate=30",
            "public, max-age=600, s-maxage=600, stale-while-revalidate=60",
        ),
        ("private, max-age=600", "private, max-age=600"),
        ("no-cache", "public, no-cache"),
        ("no-store", "no-store"),
    ],
)
def test_a_variant_never_promises_more_than_its_source(source: str, variant: str) -> None:
    """Browsers keep variants an hour and shared caches a day by default
    (EDGE_CACHE_CONTROL), each capped at what the source's own lifetime allows."""
    app = CountingOrigin({"a.jpg": Blob(jpeg(80, 60), cache_control=source)})
    with ServerThread(app) as server, edge_for(server) as edge:
        assert httpx.get(f"{edge.url}/_/w=40/a.jpg").headers["cache-control"] == variant
    with (
        ServerThread(app) as server,
        edge_for(server, cache_control_override=True, cache_dir="override") as edge,
    ):
        sent = httpx.get(f"{edge.url}/_/w=40/a.jpg").headers["cache-control"]
        assert sent == EdgeSettings().cache_control


def test_signed_only_without_a_key_refuses_to_start(tmp_path: Any) -> None:
    profile = tmp_path / "edge.toml"
    profile.write_text("allow_unsigned = false\n")
    with pytest.raises(ConfigError, match="EDGE_SIGNING_KEYS"):
        load_settings(EdgeSettings, profile)


def test_a_misspelled_variable_is_named_with_the_closest_setting(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    environ = {"EDGE_SIGING_KEYS": "x", "EDGE_PORT": "1", "ORIGIN_PORT": "2", "HOME": "/"}
    assert unknown_variables(EdgeSettings, environ) == [
        "EDGE_SIGING_KEYS is not a setting and is ignored; did you mean EDGE_SIGNING_KEYS?"
    ]
    assert unknown_variables(OriginSettings, {"ORIGIN_PUBLIC_RAED": "false"}) == [
        "ORIGIN_PUBLIC_RAED is not a setting and is ignored; did you mean ORIGIN_PUBLIC_READ?"
    ]
    monkeypatch.setenv("EDGE_MEMORY_CACHE_M", "64")
    load_settings(EdgeSettings)
    assert "did you mean EDGE_MEMORY_CACHE_MB?" in capsys.readouterr().err


def test_pyvips_chatter_is_not_logged_at_info() -> None:
    configure_logging("info")
    assert not logging.getLogger("pyvips").isEnabledFor(logging.INFO)
    assert logging.getLogger("pyvips").isEnabledFor(logging.WARNING)


def test_sniffing_non_images_does_not_grow_libvips_error_buffer() -> None:
    from pyvips import ffi, vips_lib

    from origin.sniff import sniff_type

    for _ in range(50):
        assert sniff_type(b"this is not an image at all" * 4) is None
    assert ffi.string(vips_lib.vips_error_buffer()) == b""
