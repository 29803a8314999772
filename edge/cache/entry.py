"""A cached response and its wire form for the disk and shared tiers.

An `Entry` is what every tier stores: status, body, the response headers (without the
per-request `Age`, `Cache-Status` and `Server-Timing`), and what the cache needs to
judge it: when it was stored, until when it is fresh, its RFC 5861 windows, and the
source's validators (a stale variant is revalidated by asking the origin about its
source). The wire form is a fixed binary header (freshness at a fixed offset, so a
soft purge or a 304 refresh rewrites 8 bytes in place), then JSON metadata and the
body, with a 64-bit XXH3 checksum over both: a torn or corrupted file is detected,
never served. (XXH3 rather than CRC-32: every L2 hit checks its file, and zlib's CRC-32
took 7.8 us for a 27 KB body against 0.6 us.)
"""

from __future__ import annotations

import struct
from http import HTTPStatus
from typing import Final

import orjson
import xxhash

MAGIC: Final = b"EDC2"  # EDC1 files (CRC-32) read as corrupt: dropped at the start-up scan
# magic, stored, fresh_until, stale-while-revalidate, stale-if-error, flags,
# metadata length, body length, XXH3-64 of metadata + body
HEADER: Final = struct.Struct("<4sddddIIIQ")
FRESH_OFFSET: Final = 12  # of fresh_until, for in-place updates
FRESH: Final = struct.Struct("<d")
MUST_REVALIDATE: Final = 1
REASONS: Final = {status.value: status.phrase.encode() for status in HTTPStatus}


Body = bytes | memoryview  # a view into the file's bytes when read from disk (no copy)


class CorruptEntry(Exception):
    """A stored entry that fails its checks: truncated, wrong magic, bad checksum."""


class Entry:
    __slots__ = (
        "aliases",
        "body",
        "dated",
        "etag",
        "fresh_until",
        "headers",
        "key",
        "must_revalidate",
        "sie",
        "source",
        "source_etag",
        "source_modified",
        "status",
        "stored",
        "swr",
        "wire_head",
    )

    def __init__(
        self,
        *,
        key: str,
        source: str,
        status: int,
        body: Body,
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
        self.wire_head: bytes | None = None  # status line and headers as sent, built on first use
        self.dated: bool | None = None  # whether the stored headers hold a Date (found once)

    @property
    def has_date(self) -> bool:
        dated = self.dated
        if dated is None:
            dated = self.dated = any(name == b"date" for name, _ in self.headers)
        return dated

    def head(self) -> bytes:
        """The status line and stored headers in HTTP/1.1 wire form (the protocol-level
        hit path sends them with its per-request lines), built once per entry."""
        wire = self.wire_head
        if wire is None:
            lines = [b"HTTP/1.1 %d %s\r\n" % (self.status, REASONS.get(self.status, b""))]
            lines += [b"%s: %s\r\n" % header for header in self.headers]
            wire = self.wire_head = b"".join(lines)
        return wire

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
        tail = meta + self.body
        header = HEADER.pack(
            MAGIC,
            self.stored,
            self.fresh_until,
            self.swr,
            self.sie,
            MUST_REVALIDATE if self.must_revalidate else 0,
            len(meta),
            len(self.body),
            xxhash.xxh3_64_intdigest(tail),
        )
        return header + tail

    @staticmethod
    def meta_from(meta_bytes: bytes) -> tuple[str, str]:
        """(source, key) from the metadata part, for the disk index."""
        try:
            meta = orjson.loads(meta_bytes)
            return str(meta["source"]), str(meta["key"])
        except (ValueError, KeyError, TypeError) as error:
            raise CorruptEntry(f"bad metadata: {error}") from None

    @classmethod
    def from_bytes(cls, data: bytes) -> Entry:
        """The entry a file holds, checked. The body is a view into `data`, not a copy,
        and the entry is built without `__init__`'s keyword handling: every L2 hit comes
        through here (the two took 5.5 of the 10 us it cost in a loaded server)."""
        if len(data) < HEADER.size:
            raise CorruptEntry("truncated header")
        magic, stored, fresh, swr, sie, flags, meta_len, body_len, crc = HEADER.unpack_from(data)
        if magic != MAGIC:
            raise CorruptEntry("bad magic")
        start = HEADER.size + meta_len
        if len(data) != start + body_len:
            raise CorruptEntry("length mismatch")
        view = memoryview(data)
        if xxhash.xxh3_64_intdigest(view[HEADER.size :]) != crc:
            raise CorruptEntry("checksum mismatch")
        entry = cls.__new__(cls)
        (
            entry.key,
            entry.source,
            entry.status,
            entry.headers,
            entry.etag,
            entry.source_etag,
            entry.source_modified,
        ) = _meta(data[HEADER.size : start])
        entry.body = view[start:]
        entry.stored = stored
        entry.fresh_until = fresh
        entry.swr = swr
        entry.sie = sie
        entry.must_revalidate = bool(flags & MUST_REVALIDATE)
        entry.aliases = []
        entry.wire_head = None
        entry.dated = None
        return entry


_Meta = tuple[str, str, int, list[tuple[bytes, bytes]], bytes, str | None, str | None]
_decoded: dict[bytes, _Meta] = {}
DECODED_MAX = 4096  # metadata blocks kept decoded (hot files are read again and again)


def _meta(meta_bytes: bytes) -> _Meta:
    """The metadata block decoded, from a small memo: the same file read again (every
    L2 hit of a disk-only node) costs a dict lookup instead of JSON and header decoding.
    Header lists are shared between entries built from the same block; nothing mutates
    them."""
    meta = _decoded.get(meta_bytes)
    if meta is not None:
        return meta
    try:
        fields = orjson.loads(meta_bytes)
        meta = (
            str(fields["key"]),
            str(fields["source"]),
            int(fields["status"]),
            [(k.encode("latin-1"), v.encode("latin-1")) for k, v in fields["headers"]],
            fields["etag"].encode("latin-1"),
            fields["source_etag"],
            fields["source_modified"],
        )
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise CorruptEntry(f"bad metadata: {error}") from None
    if len(_decoded) >= DECODED_MAX:
        _decoded.clear()
    _decoded[meta_bytes] = meta
    return meta
