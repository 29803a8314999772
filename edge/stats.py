"""The edge's own Prometheus series, read at scrape time from plain counters and the pool."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from cdn_common.metrics import LatencyHistogram
from edge.cache.sources import SourceCache
from edge.cache.tiers import TieredCache
from edge.security.budget import MissBudget
from edge.security.connections import ConnectionStats
from edge.transform.pool import TransformPool

# How image requests were answered: a tier's hit, or why the edge went further.
RESULTS = (
    "memory",
    "disk",
    "shared",
    "miss",
    "parent",
    "parent_error",
    "stale",
    "stale_if_error",
    "revalidated",
)


class EdgeStats(Collector):
    def __init__(
        self, pool: TransformPool, sources: SourceCache, cache: TieredCache, budget: MissBudget
    ) -> None:
        self.budget = budget
        self.connections = ConnectionStats()
        self.pool = pool
        self.sources = sources
        self.cache = cache
        self.results = dict.fromkeys(RESULTS, 0)
        self.memory_fast = 0  # memory hits answered by the fast path (counted apart: no dict)
        self.protocol_hits = 0  # hits of either tier answered inside the HTTP protocol
        self.purges = 0
        self.transform = LatencyHistogram()
        self.origin = LatencyHistogram()
        self.source_hits = 0
        self.copies_made = 0
        self.copies_used = 0

    def count(self, result: str) -> None:
        self.results[result] += 1

    def collect(
        self,
    ) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        results = CounterMetricFamily(
            "edge_cache_results",
            "Image requests by how they were answered: a tier's hit (memory, disk, shared), "
            "miss, parent, stale, stale_if_error, revalidated.",
            labels=["result"],
        )
        for result, count in self.results.items():
            if result == "memory":
                count += self.memory_fast
            results.add_metric([result], count)
        yield results
        yield CounterMetricFamily(
            "edge_protocol_hits",
            "Hits answered inside the HTTP protocol, before ASGI (counted in the results too).",
            value=self.protocol_hits,
        )
        yield CounterMetricFamily("edge_purges", "Purge requests accepted.", value=self.purges)
        cache = self.cache
        tier_bytes = GaugeMetricFamily(
            "edge_cache_bytes", "Bytes held by each cache tier.", labels=["tier"]
        )
        tier_entries = GaugeMetricFamily(
            "edge_cache_entries", "Entries held by each cache tier.", labels=["tier"]
        )
        evictions = CounterMetricFamily(
            "edge_cache_evictions", "Entries evicted by each tier's policy.", labels=["tier"]
        )
        tier_bytes.add_metric(["memory"], cache.memory.size)
        tier_entries.add_metric(["memory"], len(cache.memory))
        evictions.add_metric(["memory"], cache.memory.evictions)
        if cache.disk is not None:
            disk = cache.disk
            tier_bytes.add_metric(["disk"], disk.size)
            tier_entries.add_metric(["disk"], len(disk))
            evictions.add_metric(["disk"], disk.evictions)
            yield CounterMetricFamily(
                "edge_disk_cache_corrupt", "Disk entries dropped as corrupt.", value=disk.corrupt
            )
            yield CounterMetricFamily(
                "edge_disk_cache_write_errors",
                "Disk tier write errors (each turns the tier off for a while).",
                value=disk.write_errors,
            )
            yield GaugeMetricFamily(
                "edge_disk_cache_enabled", "1 while the disk tier is on.", value=int(disk.enabled)
            )
        if cache.shared is not None:
            yield CounterMetricFamily(
                "edge_shared_cache_errors",
                "Shared tier calls that failed or timed out.",
                value=cache.shared.errors,
            )
            yield GaugeMetricFamily(
                "edge_shared_cache_available",
                "1 while the shared tier is in use (0 while its circuit breaker is open).",
                value=int(cache.shared.available),
            )
        yield tier_bytes
        yield tier_entries
        yield evictions
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
        yield CounterMetricFamily(
            "edge_transforms_shed",
            "Misses refused with 503 because their expected wait was over max_queue_wait_s.",
            value=self.pool.shed,
        )
        deaths = CounterMetricFamily(
            "edge_worker_deaths",
            "Transform worker processes that died mid-job (each is replaced): crashed "
            "(a signal such as SIGSEGV), killed (SIGKILL), exited.",
            labels=["cause"],
        )
        for cause, count in self.pool.worker_deaths.items():
            deaths.add_metric([cause], count)
        yield deaths
        yield CounterMetricFamily(
            "edge_transforms_abandoned",
            "Queued transforms dropped before starting: every client waiting had gone.",
            value=self.pool.abandoned,
        )
        yield CounterMetricFamily(
            "edge_transforms_stopped",
            "Transforms stopped past their deadline (worker process killed, 504).",
            value=self.pool.stopped,
        )
        wait = GaugeMetricFamily(
            "edge_transform_expected_wait_seconds",
            "Expected wait for a slot of a job joining each lane now.",
            labels=["lane"],
        )
        for lane in ("small", "large"):
            wait.add_metric([lane], self.pool.expected_wait(lane))
        yield wait
        closed = CounterMetricFamily(
            "edge_connections_closed",
            "Connections closed by a limit: over the cap, head too slow (408), head too "
            "large (431).",
            labels=["reason"],
        )
        closed.add_metric(["max_connections"], self.connections.refused)
        closed.add_metric(["per_client"], self.connections.refused_per_client)
        closed.add_metric(["header_timeout"], self.connections.head_timeouts)
        closed.add_metric(["header_too_large"], self.connections.heads_too_large)
        yield closed
        yield CounterMetricFamily(
            "edge_client_budget_refused",
            "Misses refused with 429: the client's miss budget was empty.",
            value=self.budget.refused,
        )
        yield GaugeMetricFamily(
            "edge_client_budget_clients",
            "Clients with a miss budget held.",
            value=self.budget.clients,
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
