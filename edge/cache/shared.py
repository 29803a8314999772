"""L3: entries shared by a fleet, in Redis or memcached through aiocache.

Optional (EDGE_SHARED_CACHE_URL). Every call has a short timeout, objects over a size
cap are not sent, and after a failure the tier is skipped for `BREAK_S` seconds
(a circuit breaker): a dead or slow server costs at most one timeout per interval,
never a failed request. Keys are hashed (memcached allows 250 bytes, no spaces).

Purges cannot enumerate keys in memcached, so they are recorded as markers: one per
source and per path prefix ending in `/` ("photos/", "photos/2026/"), plus one global
marker for other prefixes. A lookup fetches the entry and its source's markers in one
`multi_get`; an entry stored before a marker is stale (soft) or gone (hard).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import aiomcache
from aiocache import MemcachedCache, RedisCache
from aiocache.serializers import BaseSerializer

from edge.cache.entry import CorruptEntry, Entry
from edge.clock import Clock, system_clock

log = logging.getLogger("edge.cache.shared")

BREAK_S = 5.0
GLOBAL = ""
# memcached reads an expiry over 30 days as a Unix time (so a year means "already gone")
MAX_TTL = 30 * 86400


class _Raw(BaseSerializer):  # type: ignore[misc]
    """Bytes in, bytes out (aiocache's default serializer would pickle)."""

    DEFAULT_ENCODING = None

    def dumps(self, value: Any) -> Any:
        return value

    def loads(self, value: Any) -> Any:
        return value


class _Memcached(aiomcache.Client):
    """aiomcache 0.8.2's simple commands (set, delete) loop on `readline()` until a line
    ends in CRLF; after the server dies readline returns b"" at once, forever, and the
    loop spins without yielding: the whole event loop hangs. Same client, EOF raised."""

    async def _execute_simple_command(self, conn: Any, raw_command: bytes) -> bytes:
        response, line = bytearray(), b""
        conn.writer.write(raw_command)
        await conn.writer.drain()
        while not line.endswith(b"\r\n"):
            line = await conn.reader.readline()
            if not line:
                raise ConnectionError("memcached closed the connection")
            response.extend(line)
        return bytes(response[:-2])


def _hashed(kind: str, text: str) -> str:
    return kind + hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def source_of(key: str) -> str:
    return key.split("\x00", 1)[0]


def marker_names(source: str) -> list[str]:
    """Where a purge of this source, or of a prefix of it, leaves its mark."""
    names = [GLOBAL, source]
    cut = source.find("/")
    while cut != -1:
        names.append(source[: cut + 1])
        cut = source.find("/", cut + 1)
    return names


class SharedTier:
    name = "shared"

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 0.05,
        max_object: int = 1 << 20,
        marker_ttl: int,
        wall: Clock = system_clock,
    ) -> None:
        self.wall = wall
        parts = urlsplit(url)
        kwargs: dict[str, Any] = {
            "serializer": _Raw(),
            "timeout": timeout,
            "namespace": "edge:",
            "endpoint": parts.hostname or "127.0.0.1",
        }
        if parts.scheme in ("redis", "rediss"):
            kwargs["port"] = parts.port or 6379
            kwargs["db"] = int(parts.path.strip("/") or 0)
            kwargs["password"] = parts.password
            self.cache: Any = RedisCache(**kwargs)
        elif parts.scheme == "memcached":
            kwargs["port"] = parts.port or 11211
            self.cache = MemcachedCache(**kwargs)
            self.cache.client = _Memcached(kwargs["endpoint"], kwargs["port"], pool_size=2)
        else:
            raise ValueError(f"unsupported shared cache URL scheme: {parts.scheme!r}")
        self.url = url
        self.timeout = timeout
        self.max_object = max_object
        self.marker_ttl = min(MAX_TTL, marker_ttl)
        self.down_until = 0.0
        self.pending: set[asyncio.Task[None]] = set()
        self.errors = 0
        self.hits = 0

    @property
    def available(self) -> bool:
        return time.monotonic() >= self.down_until

    def _failed(self, error: BaseException) -> None:
        self.errors += 1
        if self.available:
            log.warning(
                "shared cache unavailable, skipping it",
                extra={"fields": {"error": repr(error), "retry_in_s": BREAK_S}},
            )
        self.down_until = time.monotonic() + BREAK_S

    async def get(self, key: str) -> Entry | None:
        if not self.available:
            return None
        markers = marker_names(source_of(key))
        names = [_hashed("e:", key), *(_hashed("m:", m) for m in markers)]
        try:
            values = await self._bounded(self.cache.multi_get(names))
        except Exception as error:
            self._failed(error)
            return None
        data = values[0]
        if not data:
            return None
        try:
            entry = Entry.from_bytes(data)
        except CorruptEntry:
            return None
        if entry.key != key:
            return None
        for value in values[1:]:
            if value:
                when, _, mode = bytes(value).decode().partition(" ")
                if entry.stored <= float(when):
                    if mode == "hard":
                        return None
                    entry.fresh_until = min(entry.fresh_until, float(when))
        self.hits += 1
        return entry

    def put(self, entry: Entry) -> None:
        if not self.available:
            return
        now = self.wall()
        data = entry.to_bytes()
        if len(data) > self.max_object:
            return
        ttl = min(MAX_TTL, int(entry.fresh_until + max(entry.swr, entry.sie) - now) + 1)
        if ttl <= 0:
            return
        self._background(self.cache.set(_hashed("e:", entry.key), data, ttl=ttl))

    def delete(self, key: str) -> None:
        if self.available:
            self._background(self.cache.delete(_hashed("e:", key)))

    def mark(self, name: str, soft: bool, now: float) -> None:
        """Record a purge of a source, a `/`-ended prefix, or (GLOBAL) anything."""
        value = f"{now} {'soft' if soft else 'hard'}".encode()
        self._background(self.cache.set(_hashed("m:", name), value, ttl=self.marker_ttl))

    async def _bounded(self, call: Any) -> Any:
        """`call` within the timeout, without waiting for a stuck client to unwind
        (asyncio.wait_for would wait for the cancelled call to finish)."""
        task = asyncio.ensure_future(call)
        done, _ = await asyncio.wait({task}, timeout=self.timeout)
        if not done:
            task.cancel()
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            raise TimeoutError("shared cache call timed out")
        return task.result()

    def _background(self, call: Any) -> None:
        async def run() -> None:
            try:
                await self._bounded(call)
            except Exception as error:
                self._failed(error)

        task = asyncio.get_running_loop().create_task(run())
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def flush(self) -> None:
        if self.pending:
            await asyncio.gather(*self.pending, return_exceptions=True)

    async def close(self) -> None:
        await self.flush()
        with contextlib.suppress(Exception):
            await self.cache.close()
