"""Sources kept at the edge: their bytes, and a decoded, pre-shrunk copy of the hot ones.

A new variant of a source the edge has seen needs neither a fetch nor (when the copy
is large enough) a full decode: the copy is already oriented, sRGB, in memory, and at
least `PIVOT_SIDE` pixels on its long side. Bytes are kept for as long as the origin's
`Cache-Control` allows (RFC 9111 freshness, see `freshness.py`); copies are keyed by the
source's ETag, so a changed source never meets an old copy. Sources are under S3-FIFO,
copies under a byte-bounded LRU (cachetools), touched only on the event loop thread.
A purge drops both.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cachetools import LRUCache

from edge.cache.policy import S3FIFO
from edge.httpcache import source_lifetime
from edge.origin_client import Fetched

PIVOT_SIDE = 1280  # long side of a pre-shrunk copy: covers the common 100-1280 px variants


@dataclass(frozen=True, slots=True)
class Entry:
    fetched: Fetched
    expires: float


class SourceCache:
    def __init__(
        self,
        source_budget: int,
        pivot_budget: int,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._sources: S3FIFO[str, Entry] = S3FIFO(source_budget)
        self._pivots: LRUCache[tuple[str, str], Any] = LRUCache(
            maxsize=pivot_budget, getsizeof=_pivot_bytes
        )
        self._seen: LRUCache[str, int] = LRUCache(maxsize=65536)
        self._clock = clock
        self._wall = wall

    def get(self, source_id: str) -> Fetched | None:
        entry = self._sources.get(source_id)
        if entry is None:
            return None
        if entry.expires <= self._clock():
            self._sources.pop(source_id)
            return None
        return entry.fetched

    def put(self, source_id: str, fetched: Fetched) -> None:
        """Keep a source for as long as its freshness lifetime allows (S3-FIFO keeps
        one-hit wonders from evicting the sources that are reused)."""
        lifetime = source_lifetime(
            fetched.cache_control, fetched.expires, self._wall(), fetched.last_modified
        )
        if lifetime > 0:
            self._sources.put(
                source_id, Entry(fetched, self._clock() + lifetime), len(fetched.body) + 512
            )

    def touch(self, source_id: str) -> None:
        """Counts a request for the source (once per request)."""
        self._seen[source_id] = self._seen.get(source_id, 0) + 1

    def hot(self, source_id: str) -> bool:
        """Asked for at least twice recently."""
        return self._seen.get(source_id, 0) >= 2

    def pivot(self, source_id: str, etag: str) -> Any:
        return self._pivots.get((source_id, etag)) if self._pivots.maxsize else None

    def keep_pivot(self, source_id: str, etag: str, image: Any) -> None:
        if self._pivots.maxsize and _pivot_bytes(image) <= self._pivots.maxsize:
            self._pivots[(source_id, etag)] = image

    def sources_under(self, prefix: str) -> list[str]:
        return [source for source in self._sources if source.startswith(prefix)]

    def purge(self, source_id: str) -> int:
        dropped = int(self._sources.pop(source_id) is not None)
        for key in [k for k in self._pivots if k[0] == source_id]:
            del self._pivots[key]
            dropped += 1
        return dropped

    @property
    def source_bytes(self) -> int:
        return self._sources.size

    @property
    def pivot_bytes(self) -> int:
        return int(self._pivots.currsize)


def _pivot_bytes(image: Any) -> int:
    return int(image.width * image.height * image.bands) + 1024
