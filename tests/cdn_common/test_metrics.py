from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cdn_common.metrics import RequestSeries, cache_outcome


def test_series_parse_as_prometheus_text() -> None:
    series = RequestSeries("svc")
    registry = CollectorRegistry()
    registry.register(series)
    series.observe("blob", "GET", 200, 0.0003, 1000)
    series.observe("blob", "GET", 200, 0.02, 500)
    series.observe("blob", "PUT", 415, 7.0, 10)
    series.observe("meta", "GET", 404, 60.0, 0)
    series.observe("img", "GET", 200, 0.0004, 10, cache="hit")
    series.observe("img", "GET", 200, 0.3, 10, cache="miss")
    series.in_flight = 3
    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
    }
    requests = {
        (s.labels["route"], s.labels["method"], s.labels["status"], s.labels["cache"]): s.value
        for s in families["svc_http_requests"].samples
    }
    assert requests == {
        ("blob", "GET", "200", "none"): 2,
        ("blob", "PUT", "415", "none"): 1,
        ("meta", "GET", "404", "none"): 1,
        ("img", "GET", "200", "hit"): 1,
        ("img", "GET", "200", "miss"): 1,
    }
    buckets = {
        s.labels["le"]: s.value
        for s in families["svc_http_request_duration_seconds"].samples
        if s.name.endswith("_bucket") and s.labels["route"] == "blob"
    }
    assert buckets["0.0005"] == 1
    assert buckets["0.025"] == 2
    assert buckets["5"] == 2
    assert buckets["10"] == 3
    assert buckets["+Inf"] == 3
    sums = {
        s.labels["route"]: s.value
        for s in families["svc_http_request_duration_seconds"].samples
        if s.name.endswith("_sum")
    }
    assert abs(sums["blob"] - 7.0203) < 1e-9
    meta_inf = [
        s.value
        for s in families["svc_http_request_duration_seconds"].samples
        if s.name.endswith("_bucket")
        and s.labels == {"route": "meta", "cache": "none", "le": "+Inf"}
    ]
    assert meta_inf == [1]
    # latency splits by what the cache did: a hit and a miss of one route apart
    fast = {
        s.labels["cache"]: s.value
        for s in families["svc_http_request_duration_seconds"].samples
        if s.name.endswith("_bucket") and s.labels["route"] == "img" and s.labels["le"] == "0.001"
    }
    assert fast == {"hit": 1, "miss": 0}
    sent = {s.labels["route"]: s.value for s in families["svc_http_response_bytes"].samples}
    assert sent == {"blob": 1510, "meta": 0, "img": 20}
    assert families["svc_http_requests_in_flight"].samples[0].value == 3


def test_cache_outcomes_name_what_the_cache_did() -> None:
    assert cache_outcome(None) == "none"
    assert cache_outcome("edge; hit; detail=memory") == "hit"
    assert cache_outcome("edge; hit; ttl=-3; detail=disk-stale-while-revalidate") == "stale"
    assert cache_outcome("edge; fwd=stale; fwd-status=502; detail=stale-if-error") == "stale"
    assert cache_outcome("edge; fwd=stale; fwd-status=304") == "revalidated"
    assert cache_outcome("edge; fwd=uri-miss; collapsed") == "collapsed"
    assert cache_outcome("edge; fwd=vary-miss; fwd-status=200; stored") == "miss"
