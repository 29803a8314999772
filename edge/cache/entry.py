"""A cached response and its wire form for the disk and shared tiers.

An `Entry` is what every tier stores: status, body, the response headers (without the
per-request `Age`, `Cache-Status` and `Server-Timing`), and what the cache needs to
judge it: when it was stored, until when it is fresh, its RFC 5861 windows, and the
source's validators (a stale variant is revalidated by asking the origin about its
source). The wire form is a fixed binary header (freshness at a fixed offset, so a
soft purge or a 304 refresh rewrites 8 bytes in place), then JSON metadata and the
body, with a CRC-32 over both: a torn or corrupted file is detected, never served.
"""

from __future__ import annotations

import struct
import zlib
from typing import Final

import orjson

MAGIC: Final = b"EDC1"
# magic, stored, fresh_until, stale-while-revalidate, stale-if-error, flags,
# metadata length, body length, CRC-32 of metadata + body
HEADER: Final = struct.Struct("<4sddddIIII")
FRESH_OFFSET: Final = 12  # of fresh_until, for in-place updates
FRESH: Final = struct.Struct("<d")
MUST_REVALIDATE: Final = 1


class CorruptEntry(Exception):
    """A stored entry that fails its checks: truncated, wrong magic, bad checksum."""


class Entry:
    __slots__ = (
        "aliases",
        "body",
        "etag",
        "fresh_until",
        "headers",
        "hit_memory",
        "key",
        "must_revalidate",
        "sie",
        "source",
        "source_etag",
        "source_modified",
        "status",
        "stored",
        "swr",
    )

    def __init__(
        self,
        *,
        key: str,
        source: str,
        status: int,
        body: bytes,
        headers: list[tuple[bytes, bytes]],
        etag: bytes,
        stored: float,
        fresh_until: float,
        swr: float = 0.0,
        sie: float = 0.0,
        must_revalidate: bool = False,
        source_etag: str | None = None,
        source_modified: str | None = None,
    ) -> None:
        self.key = key
        self.source = source
        self.status = status
        self.body = body
        self.headers = headers
        self.etag = etag
        self.stored = stored
        self.fresh_until = fresh_until
        self.swr = swr
        self.sie = sie
        self.must_revalidate = must_revalidate
        self.source_etag = source_etag
        self.source_modified = source_modified
        self.aliases: list[bytes] = []  # request paths of the fast path that point here
        self.hit_memory = [*headers, (b"cache-status", b"edge; hit; detail=memory")]

    @property
    def size(self) -> int:
        """What the entry costs a tier's budget: body plus a fixed overhead."""
        return len(self.body) + 512

    def ttl(self, now: float) -> float:
        return self.fresh_until - now

    def may_serve_stale(self, now: float, window: float) -> bool:
        return not self.must_revalidate and now < self.fresh_until + window

    def to_bytes(self) -> bytes:
        meta = orjson.dumps(
            {
                "key": self.key,
                "source": self.source,
                "status": self.status,
                "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in self.headers],
                "etag": self.etag.decode("latin-1"),
                "source_etag": self.source_etag,
                "source_modified": self.source_modified,
            }
        )
        crc = zlib.crc32(self.body, zlib.crc32(meta))
        header = HEADER.pack(
            MAGIC,
            self.stored,
            self.fresh_until,
            self.swr,
            self.sie,
            MUST_REVALIDATE if self.must_revalidate else 0,
            len(meta),
            len(self.body),
            crc,
        )
        return header + meta + self.body

    @staticmethod
    def meta_from(meta_bytes: bytes) -> tuple[str, str]:
        """(source, key) from the metadata part, for the disk index."""
        try:
            meta = orjson.loads(meta_bytes)
            return str(meta["source"]), str(meta["key"])
        except (ValueError, KeyError, TypeError) as error:
            raise CorruptEntry(f"bad metadata: {error}") from None

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> Entry:
        if len(data) < HEADER.size:
            raise CorruptEntry("truncated header")
        magic, stored, fresh, swr, sie, flags, meta_len, body_len, crc = HEADER.unpack_from(data)
        if magic != MAGIC:
            raise CorruptEntry("bad magic")
        end = HEADER.size + meta_len + body_len
        if len(data) != end:
            raise CorruptEntry("length mismatch")
        view = memoryview(data)
        meta_bytes = view[HEADER.size : HEADER.size + meta_len]
        body = bytes(view[HEADER.size + meta_len : end])
        if zlib.crc32(body, zlib.crc32(meta_bytes)) != crc:
            raise CorruptEntry("checksum mismatch")
        try:
            meta = orjson.loads(meta_bytes)
            return cls(
                key=meta["key"],
                source=meta["source"],
                status=int(meta["status"]),
                body=body,
                headers=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in meta["headers"]],
                etag=meta["etag"].encode("latin-1"),
                stored=stored,
                fresh_until=fresh,
                swr=swr,
                sie=sie,
                must_revalidate=bool(flags & MUST_REVALIDATE),
                source_etag=meta["source_etag"],
                source_modified=meta["source_modified"],
            )
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise CorruptEntry(f"bad metadata: {error}") from None
