"""The tiers in order (memory, disk, shared), promotion, and purge across them.

The rest of the edge talks to this class only: the tiers' indexes (the memory tier's
exact-URL aliases, the disk tier's routes and source maps) are theirs to keep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

from edge.cache.disk import DiskTier
from edge.cache.entry import Entry
from edge.cache.memory import MemoryTier
from edge.cache.shared import GLOBAL, SharedTier
from edge.keys import fast_key
from edge.negotiate import accept_class

_NO_ROUTES: dict[bytes, tuple[str, str]] = {}


class Tier(Protocol):
    """What every tier does with entries, whatever holds them (this process's memory,
    files, Redis or memcached): one contract, one test suite
    (`tests/edge/cache/test_contract.py`). A tier stores the whole `Entry` and gives it
    back equal; `put` may finish in the background (`flush` waits for it); a tier that
    fails answers as a miss, it does not raise."""

    name: str

    async def get(self, key: str) -> Entry | None: ...

    def put(self, entry: Entry) -> object: ...

    def delete(self, key: str) -> None: ...

    async def flush(self) -> None: ...


class TieredCache:
    def __init__(
        self,
        memory: MemoryTier,
        disk: DiskTier | None = None,
        shared: SharedTier | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.memory = memory
        self.disk = disk
        self.shared = shared
        self.wall = wall

    async def lookup(self, key: str) -> tuple[Entry, str] | None:
        """The entry and the tier that had it; a lower tier's hit fills those above it."""
        entry = self.memory.get_now(key)
        if entry is not None:
            return entry, "memory"
        if self.disk is not None:
            entry = await self.disk.get(key)
            if entry is not None:
                self.memory.put(entry)
                return entry, "disk"
        if self.shared is not None:
            entry = await self.shared.get(key)
            if entry is not None:
                self.memory.put(entry)
                if self.disk is not None:
                    self.disk.put(entry)
                return entry, "shared"
        return None

    @property
    def has_routes(self) -> bool:
        """Whether any exact request path is known yet (else `exact` cannot hit)."""
        return bool(self.memory.fast) or (self.disk is not None and bool(self.disk.routes))

    def exact(self, raw: bytes, accept: bytes) -> tuple[Entry, bool] | None:
        """The entry a request path was last answered with, and whether it came from
        memory (else from disk, now promoted). A path is either negotiated
        (`format=auto`: its key adds the `Accept` format class) or not, so its raw and
        negotiated forms never both match, and the second is made only when the first is
        in neither tier."""
        memory = self.memory
        entry = memory.fast.get(raw)
        if entry is None:
            routes = self.disk.routes if self.disk is not None else _NO_ROUTES
            route = raw
            found = routes.get(raw)
            if found is None:
                route = fast_key(raw, accept_class(accept))
                entry = memory.fast.get(route)
                found = routes.get(route)
            if entry is None:
                if found is None or self.disk is None:
                    return None
                entry = self.disk.get_now(*found)
                if entry is not None and memory.put(entry):
                    memory.alias(entry, route)
                return None if entry is None else (entry, False)
        memory.policy.get(entry.key)  # a hit, for the eviction policy
        return entry, True

    def learn_route(self, entry: Entry, route: bytes) -> None:
        """Let later requests for `route` find `entry` without parsing."""
        if self.memory.policy.peek(entry.key) is entry:
            self.memory.alias(entry, route)
        if self.disk is not None:
            self.disk.route(route, entry.key)

    def store_briefly(self, entry: Entry) -> None:
        """An answer kept on this node only, in memory (a 4xx, for a short while)."""
        self.memory.put(entry)

    def store(self, entry: Entry, *, shared: bool = True) -> None:
        self.memory.put(entry)
        if self.disk is not None:
            self.disk.put(entry)
        if shared and self.shared is not None:
            self.shared.put(entry)

    def refresh(self, entry: Entry, fresh_until: float) -> None:
        """A revalidated entry: fresh again in every tier (the body is unchanged)."""
        entry.fresh_until = fresh_until
        if self.memory.policy.peek(entry.key) is not entry:
            self.memory.put(entry)
        if self.disk is not None:
            self.disk.set_fresh_until(entry.key, fresh_until)
        if self.shared is not None:
            self.shared.put(entry)

    # -- purge ------------------------------------------------------------------------

    def purge_keys(self, keys: list[str], *, soft: bool) -> int:
        dropped = 0
        for key in keys:
            dropped += self._purge_key(key, soft)
            if self.shared is not None:
                self.shared.delete(key)  # soft or hard: L3 entries cannot be edited in place
        return dropped

    def purge_source(self, source: str, *, soft: bool) -> int:
        dropped = sum(self._purge_key(key, soft) for key in self._keys_of(source))
        if self.shared is not None:
            self.shared.mark(source, soft, self.wall())
        return dropped

    def purge_prefix(self, prefix: str, *, soft: bool) -> int:
        sources = set(self.memory.sources_under(prefix))
        if self.disk is not None:
            sources.update(self.disk.sources_under(prefix))
        dropped = 0
        for source in sources:
            dropped += sum(self._purge_key(key, soft) for key in self._keys_of(source))
        if self.shared is not None:
            mark = prefix if prefix.endswith("/") else GLOBAL
            self.shared.mark(mark, soft, self.wall())
        return dropped

    def _keys_of(self, source: str) -> set[str]:
        """Every key this node holds for the source, in memory or on disk."""
        keys = set(self.memory.keys_of(source))
        if self.disk is not None:
            keys.update(self.disk.keys_of(source))
        return keys

    def _purge_key(self, key: str, soft: bool) -> int:
        found = 0
        if soft:  # stale from now on: stale-if-error and revalidation still apply
            now = self.wall()
            entry = self.memory.policy.peek(key)
            if entry is not None:
                entry.fresh_until = min(entry.fresh_until, now)
                found = 1
            if self.disk is not None:
                self.disk.set_fresh_until(key, now)
        else:
            found = int(self.memory.pop(key) is not None)
            if self.disk is not None:
                self.disk.delete(key)
        return found

    async def start(self) -> None:
        """Background work of the tiers: the disk index rebuild runs while requests are
        served (they read files directly)."""
        if self.disk is not None:
            task = asyncio.get_running_loop().create_task(self.disk.rebuild())
            self.disk.pending.add(task)
            task.add_done_callback(self.disk.pending.discard)

    async def close(self) -> None:
        if self.shared is not None:
            await self.shared.close()

    async def flush(self) -> None:
        if self.disk is not None:
            await self.disk.flush()
        if self.shared is not None:
            await self.shared.flush()
