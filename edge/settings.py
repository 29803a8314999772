"""The edge's one frozen settings object (DESIGN.md "Configuration")."""

from __future__ import annotations

import ipaddress
import math
from typing import Annotated

from pydantic import Field, PrivateAttr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from cdn_common.cpus import usable_cpus
from cdn_common.settings import ServiceSettings, split_list
from edge.options import parse_options

StrList = Annotated[tuple[str, ...], NoDecode]
CPUS = usable_cpus()  # affinity and cgroup v2 cpu.max, not the host's count


class EdgeSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EDGE_", frozen=True, extra="forbid")
    _one_process: bool = PrivateAttr(False)  # for_one_process made these: split once only

    host: str = Field("127.0.0.1", description="Bind address.")
    port: int = Field(8080, ge=0, le=65535, description="Bind port (0 picks a free one).")
    processes: int = Field(
        1,
        ge=0,
        le=256,
        description="Edge processes on this host, all on the one port (0: one per usable "
        "CPU). Above 1 a supervisor starts and restarts them; L1 and the transform workers "
        "are split between them, L2 (disk) is shared, purges and coalescing are host-wide.",
    )
    host_dir: str = Field(
        "", description="Set by the supervisor for its processes: where they meet (internal)."
    )
    process_slot: int = Field(0, ge=0, description="Set by the supervisor (internal).")
    origin_url: str = Field("http://127.0.0.1:8081", description="Base URL of the origin.")
    signing_keys: StrList = Field((), description="Comma list of URL signing secrets (rotation).")
    allow_unsigned: bool | None = Field(
        None, description="Accept `_` as signature; default: true when no key is set."
    )
    allowed_sources: StrList = Field(
        (),
        description="Hosts allowed as absolute http(s) sources (`*.example.com` for subdomains).",
    )
    workers: int = Field(
        CPUS + 1,
        ge=1,
        le=256,
        description="Concurrent transforms (large decodes: at most one per core).",
        json_schema_extra={"doc_default": "usable CPUs + 1"},
    )
    transform_processes: bool = Field(
        True,
        description="Run transforms in worker processes (false: threads of the edge process).",
    )
    queue: int = Field(
        64 * CPUS,
        ge=0,
        description="Most transforms waiting for a worker (a hard cap; see max_queue_wait_s).",
        json_schema_extra={"doc_default": "64 x usable CPUs"},
    )
    max_queue_wait_s: float = Field(
        2,
        gt=0,
        description="A miss waits for a worker only when the expected wait (from recent "
        "jobs' service time) is under this; else 503 with Retry-After at once.",
    )
    client_miss_rate: float = Field(
        10,
        ge=0,
        description="Per-client token bucket on misses (transforms and fetches), per second; "
        "0 turns it off. Over it: 429 with Retry-After. Hits are never limited.",
    )
    client_miss_burst: int = Field(
        100, ge=1, description="Per-client token bucket size: misses a client may make at once."
    )
    trusted_proxies: StrList = Field(
        (),
        description="CIDRs of proxies whose X-Forwarded-For names the client (else the peer).",
    )
    allowed_widths: StrList = Field(
        (),
        description="When set, the only widths and heights (after dpr) URLs may ask for; "
        "others get 400, so variants cannot be busted.",
    )
    presets: str = Field(
        "",
        description="Named option sets usable as the whole options segment (`/_/thumb/a.jpg`): "
        "`name=options;name=options`, e.g. `thumb=w=200,h=200,fit=cover;hero=w=1600`.",
    )
    only_presets: bool = Field(
        False, description="Refuse any options but the presets' (and `_`, the original)."
    )
    cors_origins: StrList = Field(
        ("*",),
        description="Origins sent Access-Control-Allow-Origin and Timing-Allow-Origin with "
        "image responses: `*` for any (as image CDNs do), a list, or empty for none.",
    )
    passthrough_types: StrList = Field(
        ("image/*",),
        description="Content types (patterns) the identity route `/_/_/{path}` passes on; "
        "`*` for any. Non-raster images are rendered unless this is `*`.",
    )
    origin_trusted: bool = Field(
        False,
        description="Apply stale_while_revalidate_s / stale_if_error_s to responses whose "
        "origin gives no such directive (only for an origin you run).",
    )
    passthrough_methods: StrList = Field(
        ("GET", "HEAD"),
        description="Methods the identity route `/_/_/{key}` accepts; unsafe ones (PUT, "
        "POST, DELETE, PATCH) are forwarded to the origin, never cached.",
    )
    header_timeout_s: float = Field(
        10, gt=0, description="Time a connection has to send a whole request head (then 408)."
    )
    keepalive_timeout_s: float = Field(
        5, gt=0, description="Idle time before a keep-alive connection is closed."
    )
    max_connections: int = Field(
        10_000,
        ge=1,
        description="Open connections per process; more are closed at once (capped by the "
        "descriptor limit, less 512).",
    )
    max_connections_per_client: int = Field(
        1000,
        ge=0,
        description="Open connections per peer address (0: no cap); trusted proxies are "
        "not capped.",
    )
    max_header_kb: int = Field(
        16, ge=1, le=1024, description="Largest request head (431 and close beyond it)."
    )
    origin_read_key: str | None = Field(
        None,
        description="Bearer secret sent with origin reads (for ORIGIN_PUBLIC_READ=false).",
    )
    max_src_mp: float = Field(50, gt=0, description="Largest source, in megapixels (per frame).")
    max_src_mb: float = Field(50, gt=0, description="Largest source, in MiB.")
    max_frames: int = Field(100, ge=1, description="Most animation frames kept.")
    max_out_px: int = Field(8192, ge=1, le=16384, description="Largest output width or height.")
    source_cache_mb: float = Field(
        256, ge=0, description="Memory for source bytes, kept as the origin's Cache-Control allows."
    )
    decoded_cache_mb: float = Field(
        256, ge=0, description="Memory for pre-shrunk decoded copies of hot sources."
    )
    memory_cache_mb: float = Field(
        256, ge=0, description="L1: memory for cached responses (bytes of bodies)."
    )
    protocol_hits: bool = Field(
        True,
        description="Answer fresh exact-URL hits inside uvicorn's HTTP protocol, before ASGI.",
    )
    cache_dir: str = Field("./data/cache", description="L2: directory of the disk tier.")
    disk_cache_mb: float = Field(1024, ge=0, description="L2: disk budget (0 turns the tier off).")
    disk_min_free_mb: float = Field(
        256, ge=0, description="L2: free space kept on the cache's file system."
    )
    shared_cache_url: str | None = Field(
        None, description="L3: `redis://host:port/db` or `memcached://host:port`."
    )
    shared_cache_timeout_ms: float = Field(50, gt=0, description="L3: timeout per call.")
    shared_cache_max_kb: int = Field(1024, gt=0, description="L3: largest object sent.")
    parent_url: StrList = Field(
        (), description="Shield edge(s) asked before the origin, by consistent hashing."
    )
    min_ttl_s: float = Field(0, ge=0, description="Floor on the origin's freshness lifetime.")
    max_ttl_s: float = Field(
        31_536_000, ge=0, description="Ceiling on the origin's freshness lifetime."
    )
    stale_while_revalidate_s: float = Field(
        30,
        ge=0,
        description="Serve-stale-and-refresh window when the origin gives none (only with "
        "origin_trusted).",
    )
    stale_if_error_s: float = Field(
        86400,
        ge=0,
        description="Serve-stale-on-origin-error window when the origin gives none (only "
        "with origin_trusted).",
    )
    negative_ttl_s: float = Field(
        10, ge=0, description="How long a 4xx (missing or undecodable source) is cached."
    )
    purge_keys: StrList = Field((), description="Bearer secrets accepted by POST /_purge.")
    inflight_sources_mb: float = Field(
        128, gt=0, description="Source bytes held by requests waiting for or in a transform."
    )
    transform_memory_mb: float = Field(
        1024,
        gt=0,
        description="Decode memory for transforms in flight (estimated from headers).",
    )
    worker_memory_mb: float = Field(
        2048,
        ge=0,
        description="Address-space ceiling of each transform worker process (0: none); a "
        "job over it fails with 413 and the worker goes on.",
    )
    deadline_s: float = Field(30, gt=0, description="Per-request deadline, seconds.")
    origin_connect_timeout_s: float = Field(2, gt=0, description="Origin connect timeout.")
    origin_read_timeout_s: float = Field(10, gt=0, description="Origin read timeout.")
    cache_control: str = Field(
        "public, max-age=3600, s-maxage=86400, stale-while-revalidate=60",
        description="Cache-Control sent with transformed images: browsers keep them an "
        "hour (so a purge reaches them soon), shared caches downstream a day.",
    )
    cache_control_override: bool = Field(
        False,
        description="Send cache_control with variants as it is; by default each lifetime "
        "in it is capped at the source's (a variant never outlives its source's promise).",
    )
    jpeg_quality: int = Field(80, ge=1, le=100, description="Default JPEG quality.")
    webp_quality: int = Field(80, ge=1, le=100, description="Default WebP quality.")
    avif_quality: int = Field(60, ge=1, le=100, description="Default AVIF quality.")
    jpeg_effort: int = Field(
        2,
        ge=0,
        le=3,
        description="JPEG encoder effort (0 fastest: libjpeg-turbo's choices; 1 mozjpeg's "
        "tables for photos; 2 also each progressive scan chosen by trial, 6-8% fewer bytes "
        "at the same look for 2.2x the encoder's CPU; 3 also trellis quantisation, 10%, 4x).",
    )
    webp_effort: int = Field(3, ge=0, le=6, description="WebP encoder effort (0 fastest).")
    avif_effort: int = Field(3, ge=0, le=9, description="AVIF encoder effort (0 fastest).")
    png_effort: int = Field(3, ge=1, le=10, description="PNG zlib level (1 fastest).")
    auto_quality_target: float = Field(
        70.0,
        ge=30,
        le=95,
        description="quality=auto: the SSIMULACRA2 score each image keeps (90: not told "
        "apart side by side; 70: libjxl's high quality, artifacts hard to notice without "
        "the original); the lowest quality reaching it is sent.",
    )

    @field_validator(
        "signing_keys",
        "allowed_sources",
        "purge_keys",
        "parent_url",
        "trusted_proxies",
        "allowed_widths",
        "passthrough_methods",
        "passthrough_types",
        "cors_origins",
        mode="before",
    )
    @classmethod
    def _split(cls, value: object) -> object:
        return split_list(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _check_cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not an address or CIDR") from None
        return value

    @field_validator("allowed_widths")
    @classmethod
    def _check_widths(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for width in value:
            if not (width.isascii() and width.isdigit() and 0 < int(width) <= 16384):
                raise ValueError(f"{width!r} is not a width in pixels")
        return value

    @field_validator("passthrough_methods")
    @classmethod
    def _check_methods(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        methods = tuple(m.upper() for m in value)
        unknown = set(methods) - {"GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "*"}
        if unknown:
            raise ValueError(f"unsupported method(s): {', '.join(sorted(unknown))}")
        if "*" in methods:
            return ("GET", "HEAD", "PUT", "POST", "DELETE", "PATCH")
        return methods

    @field_validator("presets")
    @classmethod
    def _check_presets(cls, value: str) -> str:
        for item in filter(None, (part.strip() for part in value.split(";"))):
            name, sep, options = item.partition("=")
            if not sep or not name or "," in name or "=" in name or not options:
                raise ValueError(f"{item!r} is not name=options")
            try:
                parse_options(options)
            except Exception as error:
                raise ValueError(f"preset {name!r}: {error}") from None
        return value

    @property
    def preset_table(self) -> dict[str, str]:
        table = {}
        for item in filter(None, (part.strip() for part in self.presets.split(";"))):
            name, _, options = item.partition("=")
            table[name.strip()] = options.strip()
        return table

    @field_validator("origin_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")

    @field_validator("parent_url")
    @classmethod
    def _check_parents(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http(s) URL")
        return tuple(url.rstrip("/") for url in value)

    @field_validator("shared_cache_url")
    @classmethod
    def _check_shared(cls, value: str | None) -> str | None:
        if value and not value.startswith(("redis://", "rediss://", "memcached://")):
            raise ValueError("must be a redis:// or memcached:// URL")
        return value or None

    @model_validator(mode="after")
    def _unsigned_default(self) -> EdgeSettings:
        if self.allow_unsigned is None:
            object.__setattr__(self, "allow_unsigned", not self.signing_keys)
        elif not self.allow_unsigned and not self.signing_keys:
            raise ValueError(
                "allow_unsigned=false with no EDGE_SIGNING_KEYS would refuse every image "
                "URL: set EDGE_SIGNING_KEYS"
            )
        return self

    @property
    def process_count(self) -> int:
        return self.processes or CPUS

    def for_one_process(self) -> EdgeSettings:
        """The settings one of `process_count` edge processes runs with: the L1 budget and
        (unless set) the transform workers split between them. Settings already split are
        returned as they are."""
        count = self.process_count
        if count <= 1 or not self.host_dir or self._one_process:
            return self
        update: dict[str, object] = {
            "memory_cache_mb": self.memory_cache_mb / count,
            "disk_cache_mb": self.disk_cache_mb / count,  # each indexes its share of files
        }
        if "workers" not in self.model_fields_set:
            update["workers"] = max(1, math.ceil(self.workers / count))
        share = self.model_copy(update=update)
        share._one_process = True
        return share

    @property
    def stale_defaults(self) -> tuple[float, float]:
        """(stale-while-revalidate, stale-if-error) seconds for a response that names
        neither: the operator's, for an origin marked trusted; else none (RFC 5861)."""
        if not self.origin_trusted:
            return 0.0, 0.0
        return self.stale_while_revalidate_s, self.stale_if_error_s

    @property
    def cors_fields(self) -> list[tuple[bytes, bytes]]:
        """CORS fields every image response carries when any origin may read it."""
        if self.cors_origins == ("*",):
            return [(b"access-control-allow-origin", b"*"), (b"timing-allow-origin", b"*")]
        return []

    @property
    def unsigned_allowed(self) -> bool:
        return bool(self.allow_unsigned)
