"""Settings to a running app: the one place the edge's parts are built and wired.

    build_app(settings) -> FastPath -> AccessMiddleware -> EdgeApp -> Server -> ...

Tests and tools pass their own seams here: a `Fetcher` (origin client) and a `Clock`.
"""

from __future__ import annotations

from pathlib import Path

from cdn_common.asgi import AccessMiddleware, HTTPMetrics
from cdn_common.logs import AccessLog
from edge.app import EdgeApp, classify
from edge.cache.disk import DiskTier
from edge.cache.memory import MemoryTier
from edge.cache.shared import SharedTier
from edge.cache.sources import SourceCache
from edge.cache.tiers import TieredCache
from edge.clock import Clock, system_clock
from edge.fastpath import NOT_FAST, FastPath
from edge.host import Host
from edge.origin_client import Fetcher
from edge.produce import Producer
from edge.protocol import edge_protocol
from edge.proxy import Proxy
from edge.security.connections import ConnectionLimits, allowed_connections
from edge.security.gate import Gate
from edge.security.limits import Limits
from edge.serve import Server
from edge.settings import EdgeSettings
from edge.stats import EdgeStats
from edge.transform.encode import Encoding
from edge.transform.pool import TransformPool
from edge.transform.runner import Transformer
from edge.upstream import Upstream

MIB = 1024 * 1024


def build_cache(settings: EdgeSettings, clock: Clock = system_clock) -> TieredCache:
    memory = MemoryTier(int(settings.memory_cache_mb * MIB))
    disk = None
    if settings.disk_cache_mb > 0:
        disk = DiskTier(
            Path(settings.cache_dir),
            int(settings.disk_cache_mb * MIB),
            int(settings.disk_min_free_mb * MIB),
            part=(settings.process_slot, settings.process_count) if _shared(settings) else None,
        )
    shared = None
    if settings.shared_cache_url:
        shared = SharedTier(
            settings.shared_cache_url,
            timeout=settings.shared_cache_timeout_ms / 1000,
            max_object=settings.shared_cache_max_kb * 1024,
            marker_ttl=int(settings.max_ttl_s + settings.stale_if_error_s) + 1,
        )
    return TieredCache(memory, disk, shared, wall=clock)


def encoding_of(settings: EdgeSettings) -> Encoding:
    return Encoding(
        jpeg_quality=settings.jpeg_quality,
        webp_quality=settings.webp_quality,
        avif_quality=settings.avif_quality,
        jpeg_effort=settings.jpeg_effort,
        webp_effort=settings.webp_effort,
        avif_effort=settings.avif_effort,
        png_effort=settings.png_effort,
        auto_target=settings.auto_quality_target,
    )


def _shared(settings: EdgeSettings) -> bool:
    """One of several edge processes of a host (started by `edge.supervisor`)."""
    return bool(settings.host_dir) and settings.process_count > 1


def build_app(
    settings: EdgeSettings, fetcher: Fetcher | None = None, clock: Clock = system_clock
) -> FastPath:
    settings = settings.for_one_process()
    host = None
    if _shared(settings):
        host = Host(Path(settings.host_dir), settings.process_slot, settings.process_count)
    metrics = HTTPMetrics("edge")
    fetcher = fetcher or Fetcher(
        settings.origin_url,
        allowed_hosts=settings.allowed_sources,
        connect_timeout=settings.origin_connect_timeout_s,
        read_timeout=settings.origin_read_timeout_s,
        clock=clock,
        read_key=settings.origin_read_key,
    )
    pool = TransformPool(
        settings.workers,
        settings.queue,
        int(settings.transform_memory_mb * MIB),
        source_budget=int(settings.inflight_sources_mb * MIB),
        processes=settings.transform_processes,
        max_wait_s=settings.max_queue_wait_s,
        worker_memory=int(settings.worker_memory_mb * MIB),
    )
    cache = build_cache(settings, clock)
    sources = SourceCache(
        int(settings.source_cache_mb * MIB), int(settings.decoded_cache_mb * MIB), wall=clock
    )
    gate = Gate(settings, clock)
    stats = EdgeStats(pool, sources, cache, gate.budget)
    metrics.registry.register(stats)
    transformer = Transformer(
        pool,
        sources,
        stats,
        Limits.of(settings),
        encoding_of(settings),
        pivots=settings.decoded_cache_mb > 0,
    )
    upstream = Upstream(
        fetcher,
        sources,
        stats,
        max_src_bytes=int(settings.max_src_mb * MIB),
        parents=settings.parent_url,
    )
    producer = Producer(settings, transformer, stats, clock)
    server = Server(settings, cache, upstream, producer, transformer, pool, stats, clock)
    proxy = Proxy(
        settings,
        cache,
        fetcher,
        transformer,
        stats,
        clock,
        lambda source: server.forget_source(source, soft=False),
    )
    if host is not None:
        server.claims = host.claims
    app = EdgeApp(settings, server, fetcher, metrics, gate, proxy, host)
    middleware = AccessMiddleware(
        app,
        metrics=metrics,
        classify=classify,
        access_log=AccessLog() if settings.access_log else None,
        date=True,
    )
    # the access log names a client as the budgets do: past the trusted proxies
    middleware.requests.client_of = gate.addresses.of
    # with a list of CORS origins the answer depends on Origin: the full app adds it
    cors_list = bool(settings.cors_origins) and settings.cors_origins != ("*",)
    not_fast = NOT_FAST | {b"origin"} if cors_list else NOT_FAST
    fast = FastPath(middleware, cache, stats, clock, not_fast)
    limits = ConnectionLimits(
        header_timeout_s=settings.header_timeout_s,
        max_header_bytes=settings.max_header_kb * 1024,
        max_connections=allowed_connections(settings.max_connections),
        per_client=settings.max_connections_per_client,
        uncapped=gate.addresses.is_trusted,
    )
    fast.http_protocol = edge_protocol(
        fast if settings.protocol_hits else None, limits, stats.connections
    )
    # no Date from uvicorn: a proxied response keeps its origin's (RFC 9110 §6.6.1), and
    # every other answer gets one where it is built (respond, the access middleware)
    fast.uvicorn_options = {
        "timeout_keep_alive": settings.keepalive_timeout_s,
        "date_header": False,
    }
    return fast
