"""The edge's own Prometheus series, read at scrape time from plain counters and the pool."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from cdn_common.metrics import LatencyHistogram
from edge.sourcecache import SourceCache
from edge.workers import TransformPool


class EdgeStats(Collector):
    def __init__(self, pool: TransformPool, sources: SourceCache) -> None:
        self.pool = pool
        self.sources = sources
        self.transform = LatencyHistogram()
        self.origin = LatencyHistogram()
        self.source_hits = 0
        self.copies_made = 0
        self.copies_used = 0

    def collect(
        self,
    ) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        yield CounterMetricFamily(
            "edge_source_cache_hits", "Sources served from memory.", value=self.source_hits
        )
        yield CounterMetricFamily(
            "edge_decoded_copies_made",
            "Pre-shrunk copies of hot sources decoded.",
            value=self.copies_made,
        )
        yield CounterMetricFamily(
            "edge_decoded_copies_used",
            "Variants made from a pre-shrunk copy.",
            value=self.copies_used,
        )
        yield GaugeMetricFamily(
            "edge_source_cache_bytes", "Source bytes held.", value=self.sources.source_bytes
        )
        yield GaugeMetricFamily(
            "edge_decoded_cache_bytes", "Decoded copies held.", value=self.sources.pivot_bytes
        )
        yield GaugeMetricFamily(
            "edge_transform_queue_depth", "Transforms waiting for a slot.", value=self.pool.waiting
        )
        yield GaugeMetricFamily(
            "edge_transforms_in_flight", "Transforms running.", value=self.pool.running
        )
        yield GaugeMetricFamily(
            "edge_transform_memory_reserved_bytes",
            "Decode memory reserved by admitted transforms.",
            value=self.pool.memory_reserved,
        )
        yield self.transform.family(
            "edge_transform_duration_seconds", "Decode, transform and encode.", "format"
        )
        yield self.origin.family(
            "edge_origin_fetch_duration_seconds", "Fetching a source.", "upstream"
        )
