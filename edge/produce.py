"""A response made from what came from upstream, as the `Entry` every tier stores:
a passthrough of the source's bytes, a rendered variant, a parent edge's answer, or a
4xx kept briefly. Its headers, validators and freshness are decided here."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable

from cdn_common.errors import HTTPError, PayloadTooLarge, error_body
from cdn_common.http import digits
from edge import httpcache
from edge.cache.entry import Entry
from edge.clock import Clock
from edge.negotiate import ACCEPT_FOR_CLASS
from edge.origin_client import Fetched
from edge.request import Ask
from edge.settings import EdgeSettings
from edge.stats import EdgeStats
from edge.transform.plan import CONTENT_TYPES
from edge.transform.render import Rendered
from edge.transform.runner import Transformer

# A source is passed through untouched only when it is a raster image by both the
# origin's word and its first byte; SVG, HTML or anything odd is rendered (or refused).
PASSTHROUGH_TYPES = frozenset({"image/jpeg", "image/png", "image/webp", "image/gif", "image/avif"})


class Producer:
    def __init__(
        self,
        settings: EdgeSettings,
        transformer: Transformer,
        stats: EdgeStats,
        clock: Clock,
    ) -> None:
        self.settings = settings
        self.transformer = transformer
        self.limits = transformer.limits
        self.stats = stats
        self.clock = clock
        self._cache_control = settings.cache_control.encode()
        self.stale_defaults = settings.stale_defaults

    async def make(
        self,
        ask: Ask,
        fetched: Fetched,
        lifetime: float | None,
        wanted: Callable[[], bool] | None = None,
    ) -> tuple[Entry, str]:
        """The variant `ask` wants of the fetched source, and its Server-Timing part."""
        spec = ask.spec
        origin_etag = None
        timing = ""
        if spec.is_identity and passthrough(fetched):
            # not decoded, but never a bomb: the header's size and frames against the limits
            # (read in a worker unless it is a JPEG or PNG header: never libvips here)
            info = await self.transformer.probe(fetched.body, ask.deadline)
            if info.pages > self.limits.max_frames:
                raise PayloadTooLarge("source has too many frames")
            body, content_type = fetched.body, fetched.content_type.split(";")[0]
            if fetched.etag and fetched.etag.startswith('"'):
                origin_etag = fetched.etag  # the origin's strong tag names these very bytes
            cache_control = (fetched.cache_control or self.settings.cache_control).encode()
        else:
            started = time.monotonic()
            accept = ACCEPT_FOR_CLASS[ask.klass]
            rendered = await self.transformer.render(
                ask.source.id, fetched, spec, accept, ask.deadline, wanted
            )
            elapsed = time.monotonic() - started
            self.stats.transform.observe(rendered.format, elapsed)
            timing = f", transform;dur={elapsed * 1000:.1f}"
            if spec.format == "json":
                body, content_type = describe(rendered), "application/json"
            else:
                body, content_type = rendered.body, CONTENT_TYPES[rendered.format]
            cache_control = self.downstream(fetched, lifetime)
        etag = origin_etag or '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'
        headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"etag", etag.encode()),
            (b"cache-control", cache_control),
            (b"x-content-type-options", b"nosniff"),
        ]
        if fetched.last_modified:
            headers.append((b"last-modified", fetched.last_modified.encode("latin-1")))
        if ask.auto:
            headers.append((b"vary", b"Accept"))
        headers += self.settings.cors_fields
        return self.entry(ask, fetched, lifetime, 200, body, headers, etag.encode()), timing

    def downstream(self, fetched: Fetched, lifetime: float | None) -> bytes:
        """The Cache-Control a variant is sent with: `EDGE_CACHE_CONTROL`, never promising
        more than its source did (RFC 9111: a variant is as fresh as its source at most).
        Each lifetime is capped at the source's; a `no-cache` or `private` source makes
        the variant so; `EDGE_CACHE_CONTROL_OVERRIDE=true` sends the setting as it is."""
        if self.settings.cache_control_override:
            return self._cache_control
        source = _directives(fetched.cache_control)
        if "no-store" in source:
            return b"no-store"
        ours = _directives(self.settings.cache_control)
        if lifetime is None or "private" in source:
            scope = "private"
        elif "no-cache" in source:
            return b"public, no-cache"
        else:
            scope = "public"
        parts = [scope]
        if scope == "private":  # a browser's lifetime: the source's max-age
            given = source.get("max-age")
            cap = int(given) if given is not None and digits(given) else 0
        else:
            cap = int(
                httpcache.source_lifetime(
                    fetched.cache_control,
                    fetched.expires,
                    fetched.received or self.clock(),
                    fetched.last_modified,
                )
            )
        for name in ("max-age", "s-maxage"):
            value = ours.get(name)
            if value is not None and digits(value) and not (scope == "private" and name[0] == "s"):
                parts.append(f"{name}={min(int(value), cap)}")
        for name, value in ours.items():
            if name in ("stale-while-revalidate", "stale-if-error", "immutable") and (
                name in source or (name == "immutable" and "immutable" in source)
            ):
                parts.append(name if value is None else f"{name}={value}")
        return ", ".join(parts).encode()

    def from_parent(self, ask: Ask, fetched: Fetched, lifetime: float | None) -> Entry:
        headers = [
            (b"content-type", fetched.content_type.encode("latin-1")),
            (b"content-length", str(len(fetched.body)).encode()),
            (b"cache-control", self._cache_control),
            (b"x-content-type-options", b"nosniff"),
        ]
        etag = (fetched.etag or "").encode("latin-1")
        if etag:
            headers.append((b"etag", etag))
        if fetched.last_modified:
            headers.append((b"last-modified", fetched.last_modified.encode("latin-1")))
        if ask.auto:
            headers.append((b"vary", b"Accept"))
        headers += self.settings.cors_fields
        return self.entry(ask, fetched, lifetime, 200, fetched.body, headers, etag)

    def entry(
        self,
        ask: Ask,
        fetched: Fetched,
        lifetime: float | None,
        status: int,
        body: bytes,
        headers: list[tuple[bytes, bytes]],
        etag: bytes,
    ) -> Entry:
        cc = _directives(fetched.cache_control)
        received = fetched.received or self.clock()
        return Entry(
            key=ask.key,
            source=ask.source.id,
            status=status,
            body=body,
            headers=headers,
            etag=etag,
            stored=received,
            fresh_until=received + (lifetime or 0.0),
            # stale only with permission: the origin's directives, or the operator's
            # defaults for an origin marked trusted (RFC 5861; RFC 9111 §4.2.4)
            swr=httpcache.stale_window(cc, "stale-while-revalidate", self.stale_defaults[0]),
            sie=httpcache.stale_window(cc, "stale-if-error", self.stale_defaults[1]),
            # RFC 9111 §4.2.4: these forbid serving stale; no lifetime at all: not stored
            must_revalidate=lifetime is None
            or any(
                d in cc for d in ("must-revalidate", "proxy-revalidate", "s-maxage", "no-cache")
            ),
            source_etag=fetched.etag if fetched.cache_status is None else None,
            source_modified=fetched.last_modified if fetched.cache_status is None else None,
        )

    def lifetime(self, fetched: Fetched) -> float | None:
        """Seconds fresh, clamped to the configured floor and ceiling; None: do not store."""
        cc = _directives(fetched.cache_control)
        if "no-store" in cc or "private" in cc:
            return None
        lifetime = httpcache.source_lifetime(
            fetched.cache_control,
            fetched.expires,
            fetched.received or self.clock(),
            fetched.last_modified,
        )
        if "no-cache" in cc:
            return 0.0
        return min(max(lifetime, self.settings.min_ttl_s), self.settings.max_ttl_s)

    def error(self, ask: Ask, error: HTTPError) -> Entry:
        """A 4xx kept for `negative_ttl_s`, so a bad URL does not reach the origin again."""
        body = error_body(error)
        now = self.clock()
        return Entry(
            key=ask.key,
            source=ask.source.id,
            status=error.status,
            body=body,
            headers=[
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                (b"x-content-type-options", b"nosniff"),
            ],
            etag=b"",
            stored=now,
            fresh_until=now + self.settings.negative_ttl_s,
            must_revalidate=True,
        )


def _directives(cache_control: str | None) -> dict[str, str | None]:
    return httpcache.directives([cache_control or ""])


def passthrough(fetched: Fetched) -> bool:
    declared = fetched.content_type.split(";")[0].strip().lower()
    return declared in PASSTHROUGH_TYPES and fetched.body[:64].lstrip()[:1] != b"<"


def describe(rendered: Rendered) -> bytes:
    """The `format=json` answer."""
    source = rendered.source
    document = {
        "source": {
            "width": source.width,
            "height": source.height,
            "format": source.format,
            "pages": source.pages,
            "size": source.size,
        },
        "result": {
            "width": rendered.width,
            "height": rendered.height,
            "format": rendered.format,
            "pages": rendered.pages,
            "size": len(rendered.body),
        },
    }
    return json.dumps(document, separators=(",", ":")).encode()
