"""A fetched source and a spec in, a rendered variant out: where each step runs.

Headers are read here when that is cheap and safe (JPEG and PNG, in Python), else in a
worker; the render runs in the pool, or in this process on a decoded copy (a "pivot")
of a hot source that some worker has already rendered without crashing. A source whose
decode killed a worker is refused for a while instead of costing a worker per variant.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import xxhash
from cachetools import LRUCache, TTLCache

from edge.cache.sources import PIVOT_SIDE, SourceCache
from edge.options import TransformSpec
from edge.origin_client import Fetched
from edge.security.limits import Limits
from edge.stats import EdgeStats
from edge.transform.encode import Encoding
from edge.transform.plan import SourceInfo
from edge.transform.pool import DecoderCrashed, TransformPool
from edge.transform.render import (
    Rendered,
    prepare,
    probe,
    probe_in_python,
    render,
)

log = logging.getLogger("edge")

PROBED_ENTRIES = 65536  # headers already read, by (source, etag)
# A source whose decode killed a worker (SEGV, ABRT: a libvips or codec bug it triggers)
# is refused with 422 for CRASHED_S instead of killing a worker per new variant; only a
# source some worker has rendered is decoded in this process (pre-shrunk copies), so a
# crashing image can cost a worker, never the edge.
CRASHED_S = 600.0
CRASHED_ENTRIES = 4096
PROVEN_ENTRIES = 65536
# Sources whose decode may run in this process (for decoded copies of hot sources):
# rasters whose cost the header bounds. Vector and container formats (SVG, whose
# parse is unbounded by its size: a 67 KB svgz once took 5 GB; HEIF, TIFF) decode only
# in workers, under their memory ceiling.
IN_PROCESS_FORMATS = frozenset({"jpeg", "png", "webp"})


def digest(body: bytes) -> str:
    """A version for a source the origin gave no ETag."""
    return "xxh3:" + xxhash.xxh3_128_hexdigest(body)


class Transformer:
    def __init__(
        self,
        pool: TransformPool,
        sources: SourceCache,
        stats: EdgeStats,
        limits: Limits,
        encoding: Encoding,
        *,
        pivots: bool,
    ) -> None:
        self.pool = pool
        self.sources = sources
        self.stats = stats
        self.limits = limits
        self.encoding = encoding
        # decoded copies are libvips images in this process: their jobs run in its threads
        self.pivots = pivots
        self._probed: dict[tuple[str, str | None], SourceInfo] = {}
        self._crashed: TTLCache[tuple[str, str], bool] = TTLCache(CRASHED_ENTRIES, CRASHED_S)
        self._proven: LRUCache[tuple[str, str], bool] = LRUCache(PROVEN_ENTRIES)

    async def probe(self, body: bytes, deadline: float) -> SourceInfo:
        """The source's header checked against the limits: JPEG and PNG read here, any
        other format by libvips in a worker (a GIF declaring two million frames once
        stalled every hit for half a second when read on the event loop)."""
        info = probe_in_python(body, self.limits)
        if info is not None:
            return info
        return await self.pool.run(probe, body, self.limits, cost=1, deadline=deadline)

    def forget(self, source_id: str) -> None:
        """What is remembered of a source's headers goes with a purge of it."""
        for key in [k for k in self._probed if k[0] == source_id]:
            del self._probed[key]

    async def render(
        self,
        source_id: str,
        fetched: Fetched,
        spec: TransformSpec,
        accept: str,
        deadline: float,
        wanted: Callable[[], bool] | None = None,
    ) -> Rendered:
        # only an ETag ties what is remembered about a source to these exact bytes
        version = fetched.etag
        identity = version  # of the bytes, for the crash memory: the ETag, else a hash
        if self._crashed:
            identity = version or digest(fetched.body)
            if (source_id, identity) in self._crashed:
                raise DecoderCrashed()
        try:
            return await self._in_pool(source_id, version, fetched, spec, accept, deadline, wanted)
        except DecoderCrashed:
            self._crashed[(source_id, identity or digest(fetched.body))] = True
            log.warning(
                "source crashed a transform worker; its variants are refused",
                extra={"fields": {"source": source_id, "for_s": CRASHED_S}},
            )
            raise

    async def _in_pool(
        self,
        source_id: str,
        version: str | None,
        fetched: Fetched,
        spec: TransformSpec,
        accept: str,
        deadline: float,
        wanted: Callable[[], bool] | None,
    ) -> Rendered:
        known = self._probed.get((source_id, version)) if version else None
        # a JPEG or PNG header is read here in 5-50 us (edge/transform/header.py), less than
        # a hand-off costs the event loop; any header libvips reads (libheif, librsvg,
        # libwebp, giflib, or a JPEG our parser gives up on) walks more of the file and is
        # read in a worker, where a crash costs a process, not the edge
        info = known or probe_in_python(fetched.body, self.limits)
        if info is not None:
            job = prepare(fetched.body, spec, accept, self.limits, info)
        else:
            job = await self.pool.run(
                prepare, fetched.body, spec, accept, self.limits, cost=1, deadline=deadline
            )
        if known is None and version:
            if len(self._probed) >= PROBED_ENTRIES:
                self._probed.pop(next(iter(self._probed)))
            self._probed[(source_id, version)] = job.source
        pivot, pivot_side = None, 0
        if (
            version
            and self.pivots
            and job.source.format in IN_PROCESS_FORMATS
            and self.sources.hot(source_id)
            and (source_id, version) in self._proven
        ):
            pivot = self.sources.pivot(source_id, version)
            pivot_side = 0 if pivot is not None else PIVOT_SIDE
        here = pivot is not None or pivot_side > 0
        rendered = await self.pool.run(
            render,
            fetched.body,
            spec,
            job,
            self.encoding,
            deadline,
            pivot,
            pivot_side,
            cost=job.cost,
            deadline=deadline,
            here=here,
            wanted=wanted,
        )
        if version and not here:
            self._proven[(source_id, version)] = True
        if rendered.pivot is not None and version:
            self.stats.copies_made += 1
            self.sources.keep_pivot(source_id, version, rendered.pivot)
        elif pivot is not None and rendered.from_pivot:
            self.stats.copies_used += 1
        return rendered
