from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cdn_common.metrics import RequestSeries


def test_series_parse_as_prometheus_text() -> None:
    series = RequestSeries("svc")
    registry = CollectorRegistry()
    registry.register(series)
    series.observe("blob", "GET", 200, 0.0003, 1000)
    series.observe("blob", "GET", 200, 0.02, 500)
    series.observe("blob", "PUT", 415, 7.0, 10)
    series.observe("meta", "GET", 404, 60.0, 0)
    series.in_flight = 3
    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
    }
    requests = {
        (s.labels["route"], s.labels["method"], s.labels["status"]): s.value
        for s in families["svc_http_requests"].samples
    }
    assert requests == {
        ("blob", "GET", "200"): 2,
        ("blob", "PUT", "415"): 1,
        ("meta", "GET", "404"): 1,
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
        if s.name.endswith("_bucket") and s.labels == {"route": "meta", "le": "+Inf"}
    ]
    assert meta_inf == [1]
    sent = {s.labels["route"]: s.value for s in families["svc_http_response_bytes"].samples}
    assert sent == {"blob": 1510, "meta": 0}
    assert families["svc_http_requests_in_flight"].samples[0].value == 3
