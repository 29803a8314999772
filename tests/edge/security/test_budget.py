"""Per-client miss budgets: the token bucket on a moved clock, the client behind trusted
proxies, and an edge over real sockets that refuses a variant-busting client with 429
while hits and other clients are served."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from cdn_common.errors import TooManyRequests
from edge.clock import ManualClock
from edge.security.budget import ClientAddress, MissBudget
from tests.edge.countingorigin import Blob, CountingOrigin
from tests.edge.edges import edge_for, metric
from tests.images import jpeg
from tests.servers import ServerThread


def test_a_bucket_spends_its_burst_then_refills_at_its_rate() -> None:
    clock = ManualClock()
    budget = MissBudget(rate=2, burst=3, clock=clock)
    for _ in range(3):
        budget.spend("a")
    with pytest.raises(TooManyRequests) as refused:
        budget.spend("a")
    assert refused.value.status == 429 and refused.value.headers["Retry-After"] == "1"
    budget.spend("b")  # another client has its own bucket
    clock.advance(0.5)  # one token back
    budget.spend("a")
    with pytest.raises(TooManyRequests):
        budget.spend("a")
    clock.advance(100)  # never more than the burst
    for _ in range(3):
        budget.spend("a")
    with pytest.raises(TooManyRequests):
        budget.spend("a")
    assert budget.refused == 3


def test_rate_zero_turns_the_budget_off() -> None:
    budget = MissBudget(rate=0, burst=1, clock=ManualClock())
    for _ in range(100):
        budget.spend("a")


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("203.0.113.9", b"198.51.100.1", "203.0.113.9"),  # untrusted peer: its own address
        ("10.0.0.2", b"198.51.100.1", "198.51.100.1"),
        ("10.0.0.2", b"6.6.6.6, 198.51.100.1, 10.0.0.7", "198.51.100.1"),  # rightmost untrusted
        ("10.0.0.2", b"10.0.0.7", "10.0.0.2"),  # only proxies: the nearest answers
        ("10.0.0.2", b"not-an-address", "10.0.0.2"),
        ("10.0.0.2", None, "10.0.0.2"),
        ("10.0.0.2", b"2001:db8::1", "2001:db8::1"),
    ],
)
def test_the_client_behind_trusted_proxies(peer: str, forwarded: bytes | None, client: str) -> None:
    assert ClientAddress(("10.0.0.0/8",)).of(peer, forwarded) == client


@pytest.fixture
def origin() -> Iterator[ServerThread]:
    app = CountingOrigin({"a.jpg": Blob(jpeg(200, 100))})
    with ServerThread(app) as server:
        yield server


def test_a_variant_busting_client_gets_429_and_hits_still_flow(origin: Any) -> None:
    with edge_for(origin, client_miss_rate=0.01, client_miss_burst=3) as edge:
        url = f"{edge.url}/_/w={{}}/a.jpg"
        answers = [httpx.get(url.format(40 + i)) for i in range(5)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
        assert int(answers[3].headers["retry-after"]) >= 1
        assert answers[3].headers["content-type"].startswith("text/plain")
        hit = httpx.get(url.format(40))
        assert hit.status_code == 200 and hit.headers["cache-status"].endswith("memory")
        # the header does not make a new client: the peer is not a trusted proxy
        spoofed = httpx.get(url.format(60), headers={"X-Forwarded-For": "198.51.100.7"})
        assert spoofed.status_code == 429, (spoofed.headers, [a.headers for a in answers])
        assert metric(edge, "edge_client_budget_refused_total") == 3


def test_allowed_widths_shut_out_other_sizes(origin: Any) -> None:
    with edge_for(origin, allowed_widths="100,200") as edge:
        assert httpx.get(f"{edge.url}/_/w=100/a.jpg").status_code == 200
        refused = httpx.get(f"{edge.url}/_/w=101/a.jpg")
        assert refused.status_code == 400 and "allowed sizes" in refused.text
        assert httpx.get(f"{edge.url}/_/w=50,dpr=2/a.jpg").status_code == 200  # 100 after dpr


def test_named_presets_and_only_presets(origin: Any) -> None:
    presets = "thumb=w=50,h=50,fit=cover;wide=w=120"
    with edge_for(origin, presets=presets, only_presets=True) as edge:
        thumb = httpx.get(f"{edge.url}/_/thumb/a.jpg")
        assert thumb.status_code == 200
        same = httpx.get(f"{edge.url}/cdn-cgi/image/thumb/a.jpg")  # one entry, one key
        assert same.headers["cache-status"].endswith("memory")
        refused = httpx.get(f"{edge.url}/_/w=51/a.jpg")
        assert refused.status_code == 400 and "presets only" in refused.text
        assert httpx.get(f"{edge.url}/_/_/a.jpg").status_code == 200  # the original


def test_a_bad_preset_stops_the_start() -> None:
    from pydantic import ValidationError

    from edge.settings import EdgeSettings

    with pytest.raises(ValidationError, match="thumb"):
        EdgeSettings(presets="thumb=w=0")
