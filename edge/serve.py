"""The cache's side of one image request: look the key up in the tiers; on a miss, one
coalesced fill (parent edge, or source + transform) stored in the tiers; on a stale
entry, revalidation of its source.

Stale entries are revalidated by asking the origin about their source (a 304 keeps
every variant of it), in the background within `stale-while-revalidate`, and served
stale within `stale-if-error` when the origin fails.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from cachetools import LRUCache

from cdn_common.errors import BadGateway, GatewayTimeout, HTTPError
from edge.cache.coalesce import Coalescer
from edge.cache.entry import Entry
from edge.cache.tiers import TieredCache
from edge.clock import Clock
from edge.host import Claims
from edge.origin_client import Fetched
from edge.produce import Producer
from edge.request import Ask
from edge.security.budget import MissBudget
from edge.settings import EdgeSettings
from edge.stats import EdgeStats
from edge.transform.pool import TransformPool
from edge.transform.runner import Transformer
from edge.upstream import Upstream

log = logging.getLogger("edge")

VALIDATED_ENTRIES = 65536  # sources recently validated with the origin

Answer = tuple[Entry, str, str]  # the entry, its Cache-Status, its Server-Timing


class Server:
    def __init__(
        self,
        settings: EdgeSettings,
        cache: TieredCache,
        upstream: Upstream,
        producer: Producer,
        transformer: Transformer,
        pool: TransformPool,
        stats: EdgeStats,
        clock: Clock,
    ) -> None:
        self.settings = settings
        self.cache = cache
        self.upstream = upstream
        self.producer = producer
        self.transformer = transformer
        self.pool = pool
        self.stats = stats
        self.clock = clock
        self.fills: Coalescer[tuple[Entry, str]] = Coalescer()
        self.claims: Claims | None = None  # host-wide claims, with sibling processes
        # source -> (ETag, fresh until): a 304 for a source freshens all its variants
        self.validated: LRUCache[str, tuple[str | None, float]] = LRUCache(VALIDATED_ENTRIES)

    async def answer(self, ask: Ask, budget: MissBudget | None = None) -> Answer:
        """The entry to answer with, its Cache-Status and its Server-Timing. A miss that
        would start new work spends from the client's `budget` (429 when it is empty);
        one that joins work already running does not."""
        started = time.perf_counter()
        found = await self.cache.lookup(ask.key)
        if found is None:
            if budget is not None and ask.key not in self.fills:
                budget.spend(ask.client)
            self.stats.count("miss")
            (entry, timing), collapsed = await self.fills.run(
                ask.key,
                lambda: self._fill(ask, wanted=lambda: self.fills.wanted(ask.key)),
                ask.gone,
            )
            status = "edge; fwd=uri-miss" + ("; collapsed" if collapsed else "; stored")
            return entry, status, timing
        entry, tier = found
        now = self.clock()
        lookup = f"cache;desc={tier};dur={(time.perf_counter() - started) * 1000:.2f}"
        if now < entry.fresh_until:
            self.stats.count(tier)
            return entry, f"edge; hit; detail={tier}", lookup
        return await self._stale(ask, entry, tier, now, lookup)

    def forget_source(self, source: str, *, soft: bool) -> int:
        """Everything this node holds for a source: its variants and its bytes."""
        dropped = self.cache.purge_source(source, soft=soft)
        dropped += self.upstream.forget(source)
        self.validated.pop(source, None)
        self.transformer.forget(source)
        return dropped

    async def _stale(self, ask: Ask, entry: Entry, tier: str, now: float, lookup: str) -> Answer:
        known = self.validated.get(entry.source)
        if known is not None and known[1] > now and entry.status < 400:
            if known[0] == entry.source_etag:  # the source was revalidated for a sibling
                self.cache.refresh(entry, known[1])
                self.stats.count(tier)
                return entry, f"edge; hit; detail={tier}", lookup
        elif entry.status < 400 and entry.may_serve_stale(now, entry.swr):
            self.stats.count("stale")
            self.fills.start("reval\x00" + ask.key, lambda: self._revalidate(ask, entry))
            ttl = math.floor(entry.fresh_until - now)
            return entry, f"edge; hit; ttl={ttl}; detail={tier}-stale-while-revalidate", lookup
        try:
            (fresh, timing), _collapsed = await self.fills.run(
                "reval\x00" + ask.key, lambda: self._revalidate(ask, entry)
            )
        except HTTPError as error:
            if error.status >= 500 and entry.status < 400 and entry.may_serve_stale(now, entry.sie):
                self.stats.count("stale_if_error")
                ttl = math.floor(entry.fresh_until - now)
                status = (
                    f"edge; fwd=stale; fwd-status={error.status}; ttl={ttl}; detail=stale-if-error"
                )
                return entry, status, lookup
            raise
        self.stats.count("revalidated" if fresh is entry else "miss")
        code = 304 if fresh is entry else 200
        return fresh, f"edge; fwd=stale; fwd-status={code}", timing

    async def _revalidate(self, ask: Ask, entry: Entry) -> tuple[Entry, str]:
        """Ask the origin whether the entry's source changed; a 304 freshens the entry."""
        if entry.status >= 400 or not (entry.source_etag or entry.source_modified):
            return await self._produce(ask)
        if ask.deadline <= time.monotonic():  # background refresh of an old request's ask
            ask.deadline = time.monotonic() + self.settings.deadline_s
        fetched = await self.upstream.validate(
            ask.source, ask.deadline, (entry.source_etag, entry.source_modified)
        )
        timing = f"origin;desc=revalidate;dur={fetched.seconds * 1000:.1f}"
        if fetched.not_modified:
            lifetime = self.producer.lifetime(fetched)
            fresh_until = fetched.received + (lifetime or 0.0)
            self.validated[entry.source] = (entry.source_etag, fresh_until)
            self.cache.refresh(entry, fresh_until)
            return entry, timing
        # changed: every variant of the old version goes; this one is made from the new
        self.cache.purge_source(entry.source, soft=False)
        self.upstream.forget(entry.source)
        self.validated[entry.source] = (
            fetched.etag,
            fetched.received + (self.producer.lifetime(fetched) or 0),
        )
        return await self._produce(ask, fetched)

    async def _fill(self, ask: Ask, wanted: Callable[[], bool]) -> tuple[Entry, str]:
        """`_produce`, once per host: with sibling processes, under the key's host claim;
        a process that waited for the claim takes what the holder left in the disk tier."""
        disk = self.cache.disk
        if self.claims is None or disk is None:
            return await self._produce(ask, wanted=wanted)
        made: list[Entry] = []

        async def done() -> bool:
            entry = await disk.get(ask.key)
            if entry is not None and entry.fresh_until > self.clock():
                made.append(entry)
                return True
            return False

        started = time.perf_counter()
        async with self.claims.hold(ask.key, done) as already:
            if already:
                self.cache.memory.put(made[-1])
                took = (time.perf_counter() - started) * 1000
                return made[-1], f"host;desc=sibling;dur={took:.1f}"
            try:
                return await self._produce(ask, wanted=wanted)
            finally:
                await disk.settled()  # on disk before the claim goes: waiters read it

    async def _produce(
        self,
        ask: Ask,
        fetched: Fetched | None = None,
        wanted: Callable[[], bool] | None = None,
    ) -> tuple[Entry, str]:
        """Make the response for `ask` (parent edge, or source + transform) and store it.
        `wanted()`: whether anyone still waits for it (a transform still queued when no
        one does is dropped before it starts)."""
        if self.upstream.parents and not ask.from_edge and fetched is None:
            try:
                return await self._from_parent(ask)
            except (BadGateway, GatewayTimeout) as error:
                self.stats.count("parent_error")
                log.warning(
                    "parent edge failed, asking the origin",
                    extra={"fields": {"error": error.public_message}},
                )
        held = 0

        async def reserve(size: int) -> None:
            # source bytes in flight are bounded for transforms (passthrough streams on)
            nonlocal held
            if not ask.spec.is_identity:
                held += await self.pool.hold(size, ask.deadline)

        try:
            if fetched is None:
                fetched, timing = await self.upstream.source(ask.source, ask.deadline, reserve)
            else:
                timing = f"origin;dur={fetched.seconds * 1000:.1f}"
            lifetime = self.producer.lifetime(fetched)
            entry, more = await self.producer.make(ask, fetched, lifetime, wanted)
            timing += more
        except HTTPError as error:
            if 400 <= error.status < 499 and error.status != 429 and self.settings.negative_ttl_s:
                # what the source or URL is, not what happened to this request's client
                self.cache.store_briefly(self.producer.error(ask, error))
            raise
        finally:
            if held:
                await self.pool.release_source(held)
        if lifetime is not None:
            self.cache.store(entry)
        return entry, timing

    async def _from_parent(self, ask: Ask) -> tuple[Entry, str]:
        fetched = await self.upstream.parent(ask)
        lifetime = self.producer.lifetime(fetched)
        entry = self.producer.from_parent(ask, fetched, lifetime)
        if lifetime is not None:
            self.cache.store(entry)
        self.stats.count("parent")
        return entry, f"parent;dur={fetched.seconds * 1000:.1f}"
