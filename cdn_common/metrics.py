"""Request series kept in plain ints and exposed by a collector at scrape time.

prometheus_client's Counter/Histogram take a lock per increment (five per request
here). A request runs on the event loop thread, so plain dict and list updates are
enough; the collector turns them into the same exposition on `/metrics`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

# Image requests span sub-millisecond cache hits to multi-second transforms of large sources.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class RequestSeries(Collector):
    def __init__(self, namespace: str, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.namespace = namespace
        self.buckets = buckets
        self.in_flight = 0
        self.counts: dict[tuple[str, str, int], int] = {}
        self.sent: dict[str, int] = {}
        self.latency = LatencyHistogram(buckets)

    def observe(self, route: str, method: str, status: int, seconds: float, sent: int) -> None:
        key = (route, method, status)
        self.counts[key] = self.counts.get(key, 0) + 1
        self.sent[route] = self.sent.get(route, 0) + sent
        self.latency.observe(route, seconds)

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        ns = self.namespace
        requests = CounterMetricFamily(
            f"{ns}_http_requests",
            "HTTP requests by route, method and status.",
            labels=["route", "method", "status"],
        )
        for (route, method, status), count in sorted(self.counts.items()):
            requests.add_metric([route, method, str(status)], count)
        yield requests
        sent = CounterMetricFamily(
            f"{ns}_http_response_bytes", "Body bytes sent.", labels=["route"]
        )
        for route, total in sorted(self.sent.items()):
            sent.add_metric([route], total)
        yield sent
        yield self.latency.family(
            f"{ns}_http_request_duration_seconds",
            "Time from request start to the last byte sent.",
            "route",
        )
        yield GaugeMetricFamily(
            f"{ns}_http_requests_in_flight", "Requests being served now.", value=self.in_flight
        )


class LatencyHistogram:
    """A lock-free histogram (event-loop thread only) with one label dimension."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.rows: dict[str, list[float]] = {}

    def observe(self, label: str, seconds: float) -> None:
        row = self.rows.get(label)
        if row is None:
            row = self.rows[label] = [0.0] * (len(self.buckets) + 2)
        row[bisect_left(self.buckets, seconds)] += 1
        row[-1] += seconds

    def family(self, name: str, documentation: str, label: str) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, documentation, labels=[label])
        for value, row in sorted(self.rows.items()):
            cumulative: list[tuple[str, float]] = []
            running = 0.0
            for bound, hits in zip((*map(str, self.buckets), "+Inf"), row[:-1], strict=True):
                running += hits
                cumulative.append((bound, running))
            family.add_metric([value], cumulative, sum_value=row[-1])
        return family
