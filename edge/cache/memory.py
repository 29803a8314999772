"""L1: entries in this process's memory, under S3-FIFO, plus the exact-URL fast path.

The fast path maps a request's raw path (plus the negotiated-format class for
`format=auto` URLs) straight to its entry, so a hit costs a dict lookup, no parsing.
Aliases are dropped with their entry (eviction, replacement or purge), so the fast
path never keeps a body alive beyond the budget.
"""

from __future__ import annotations

from edge.cache.entry import Entry
from edge.cache.policy import S3FIFO

MAX_ALIASES = 4  # request spellings per entry kept on the fast path


class MemoryTier:
    name = "memory"

    def __init__(self, budget: int) -> None:
        self.policy: S3FIFO[str, Entry] = S3FIFO(budget, on_evict=self._evicted)
        self.fast: dict[bytes, Entry] = {}
        self.by_source: dict[str, set[str]] = {}
        self.evictions = 0

    def get_now(self, key: str) -> Entry | None:
        return self.policy.get(key)

    async def get(self, key: str) -> Entry | None:
        return self.policy.get(key)

    def put(self, entry: Entry) -> bool:
        if not self.policy.capacity:  # L1 off (EDGE_MEMORY_CACHE_MB=0): nothing to hold
            return False
        old = self.policy.pop(entry.key)
        if old is not None:
            self._forget(old)
        if not self.policy.put(entry.key, entry, entry.size):
            return False
        self.by_source.setdefault(entry.source, set()).add(entry.key)
        return True

    def alias(self, entry: Entry, raw: bytes) -> None:
        """Let requests for `raw` find `entry` without parsing (if it is still held)."""
        if len(entry.aliases) < MAX_ALIASES and self.policy.peek(entry.key) is entry:
            if raw not in self.fast:
                entry.aliases.append(raw)
            self.fast[raw] = entry

    def pop(self, key: str) -> Entry | None:
        entry = self.policy.pop(key)
        if entry is not None:
            self._forget(entry)
        return entry

    def delete(self, key: str) -> None:
        self.pop(key)

    async def flush(self) -> None:
        """Nothing is written in the background."""

    def keys_of(self, source: str) -> list[str]:
        return list(self.by_source.get(source, ()))

    def sources_under(self, prefix: str) -> list[str]:
        return [source for source in self.by_source if source.startswith(prefix)]

    @property
    def size(self) -> int:
        return self.policy.size

    def __len__(self) -> int:
        return len(self.policy)

    def _evicted(self, key: str, entry: Entry) -> None:
        self.evictions += 1
        self._forget(entry)

    def _forget(self, entry: Entry) -> None:
        for raw in entry.aliases:
            if self.fast.get(raw) is entry:
                del self.fast[raw]
        entry.aliases.clear()
        keys = self.by_source.get(entry.source)
        if keys is not None:
            keys.discard(entry.key)
            if not keys:
                del self.by_source[entry.source]
