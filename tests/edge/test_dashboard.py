"""The Grafana dashboard in config/ asks only for series the services really expose, and
both services' /metrics parse as Prometheus text with conventional names."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.edge.conftest import Stack
from tests.images import jpeg
from tests.servers import free_port

DASHBOARD = Path(__file__).resolve().parents[2] / "config" / "grafana-dashboard.json"


def exposed(text: str) -> set[str]:
    """Every sample name (counters with `_total`, histograms with `_bucket` ...)."""
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def test_dashboard_series_exist_and_metrics_follow_conventions(stack: Stack) -> None:
    stack.put("a.jpg", jpeg(300, 200))
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    with stack.edge(shared_cache_url=dead_redis) as edge:
        for _ in range(2):
            assert httpx.get(f"{edge.url}/_/w=40/a.jpg").status_code == 200
        names = exposed(httpx.get(f"{edge.url}/metrics").text)
    names |= exposed(httpx.get(f"{stack.origin.url}/metrics").text)

    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    wanted = {m for e in exprs for m in re.findall(r"\b(?:edge|origin)_[a-z_]+", e)}
    assert len(dashboard["panels"]) >= 6
    # one node or all: every edge series is filtered by the dashboard's instance variable
    assert "instance" in {v["name"] for v in dashboard["templating"]["list"]}
    for expr in exprs:
        if "edge_" in expr:
            assert expr.count('instance=~"$instance"') == expr.count("edge_"), expr
    assert wanted <= names, wanted - names
    # the four views: requests, hit ratio per tier, latency percentiles, queue
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for view in ("requests", "hit ratio", "latency", "queue"):
        assert view in titles

    for name in names:
        # our series, and the standard process_* ones (prometheus_client's collector)
        assert re.fullmatch(r"(edge|origin|process)_[a-z0-9_]+", name), name
        if "duration" in name:
            assert "_seconds" in name, name
        if name.endswith("_bytes") or "_bytes_" in name:
            assert not name.endswith("_bytes_bytes")
    counters = {n for n in names if n.endswith("_total")}
    assert {"edge_http_requests_total", "edge_cache_results_total"} <= counters
    assert "edge_http_request_duration_seconds_bucket" in names
