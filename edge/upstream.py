"""Where a miss gets its bytes: a parent edge, or the source (from the in-memory source
cache when fresh there, else one coalesced fetch per source from the origin or an
allowed remote host)."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable

from edge.cache.coalesce import Coalescer
from edge.cache.sources import SourceCache
from edge.negotiate import ACCEPT_FOR_CLASS
from edge.origin_client import Fetched, Fetcher
from edge.request import LOOP_TOKEN, Ask
from edge.routes import OriginSource, Source
from edge.stats import EdgeStats


class Upstream:
    def __init__(
        self,
        fetcher: Fetcher,
        sources: SourceCache,
        stats: EdgeStats,
        *,
        max_src_bytes: int,
        parents: tuple[str, ...],
    ) -> None:
        self.fetcher = fetcher
        self.sources = sources
        self.stats = stats
        self.max_src_bytes = max_src_bytes
        self.parents = parents
        self.fills: Coalescer[Fetched] = Coalescer()

    async def source(
        self, source: Source, deadline: float, reserve: Callable[[int], Awaitable[None]]
    ) -> tuple[Fetched, str]:
        """The source's bytes, from memory when fresh there, and the Server-Timing part."""
        self.sources.touch(source.id)
        fetched = self.sources.get(source.id)
        if fetched is not None:
            self.stats.source_hits += 1
            return fetched, "source-cache;dur=0"

        async def fetch() -> Fetched:
            got = await self.fetcher.fetch(
                source, max_bytes=self.max_src_bytes, deadline=deadline, reserve=reserve
            )
            self.sources.put(source.id, got)
            upstream = "origin" if isinstance(source, OriginSource) else "remote"
            self.stats.origin.observe(upstream, got.seconds)
            return got

        fetched, collapsed = await self.fills.run(source.id, fetch)
        if collapsed:
            await reserve(len(fetched.body))
            return fetched, "origin;desc=collapsed"
        return fetched, f"origin;dur={fetched.seconds * 1000:.1f}"

    async def validate(
        self, source: Source, deadline: float, validators: tuple[str | None, str | None]
    ) -> Fetched:
        """A conditional GET of the source: `not_modified`, or its new bytes."""
        return await self.fetcher.fetch(
            source, max_bytes=self.max_src_bytes, deadline=deadline, validators=validators
        )

    async def parent(self, ask: Ask) -> Fetched:
        """The variant from the parent edge the key hashes to (rendezvous hashing, so
        every child asks the same parent for a key)."""
        parent = max(self.parents, key=lambda p: hashlib.blake2b((p + ask.key).encode()).digest())
        return await self.fetcher.fetch(
            ask.source,
            max_bytes=self.max_src_bytes,
            deadline=ask.deadline,
            via=parent + ask.raw.decode(),
            headers={"accept": ACCEPT_FOR_CLASS[ask.klass], "cdn-loop": LOOP_TOKEN},
        )

    def forget(self, source_id: str) -> int:
        return self.sources.purge(source_id)
