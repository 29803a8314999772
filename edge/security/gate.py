"""The one door an image request passes before the edge works for it.

`Gate.admit(raw_path)` runs every check on the untrusted URL, in order: the path is
UTF-8, the signature is one of the configured keys' (or unsigned URLs are allowed), an
absolute source's host is on the allow-list, options are valid, and sizes are among
`EDGE_ALLOWED_WIDTHS` when that is set. What comes out is a frozen `ImageRequest`, or
a typed 4xx (`cdn_common/errors.py`). `Gate.client` names who is asking (the peer, or
a trusted proxy's `X-Forwarded-For`), and `Gate.budget` is what a miss spends
(`budget.py`). Request-head sizes and times are bounded before this, in the HTTP
protocol (`edge/protocol.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from cdn_common.errors import BadRequest
from edge import hints
from edge.clock import Clock
from edge.routes import ImageRequest, parse_request
from edge.security.budget import ClientAddress, MissBudget
from edge.settings import EdgeSettings


class Gate:
    def __init__(self, settings: EdgeSettings, clock: Clock) -> None:
        self.keys = settings.signing_keys
        self.allow_unsigned = settings.unsigned_allowed
        self.allowed_hosts = settings.allowed_sources
        self.widths = frozenset(int(w) for w in settings.allowed_widths)
        self.max_out = settings.max_out_px
        self.presets = settings.preset_table
        self.only_presets = settings.only_presets
        self.addresses = ClientAddress(settings.trusted_proxies)
        self.budget = MissBudget(settings.client_miss_rate, settings.client_miss_burst, clock)

    def client(self, peer: tuple[str, int] | None, forwarded_for: bytes | None) -> str:
        return self.addresses.of(peer[0] if peer else "", forwarded_for)

    def admit(
        self, raw_path: bytes, headers: Mapping[bytes, bytes] | None = None
    ) -> tuple[str, ImageRequest, bool]:
        """The decoded path (without a query), the request it names, and whether client
        hints chose its size (`width=auto`, `dpr=auto`: then the answer varies on them)."""
        try:
            path = raw_path.decode().split("?", 1)[0]
        except UnicodeDecodeError:
            raise BadRequest("path is not UTF-8") from None
        hinted = False

        def rewrite(options: str) -> str:
            nonlocal hinted
            options, hinted = hints.resolve(options, headers or {}, self.max_out, self.widths)
            return options

        request = self.parse(path, allow_unsigned=self.allow_unsigned, rewrite=rewrite)
        if self.widths:
            spec = request.spec
            for size in (spec.width, spec.height):
                if size is not None and size not in self.widths:
                    raise BadRequest(f"size {size} is not one of this edge's allowed sizes")
        return path, request, hinted

    def parse(
        self,
        path: str,
        *,
        allow_unsigned: bool,
        rewrite: Callable[[str], str] | None = None,
    ) -> ImageRequest:
        return parse_request(
            path,
            keys=self.keys,
            allow_unsigned=allow_unsigned,
            allowed_hosts=self.allowed_hosts,
            presets=self.presets,
            only_presets=self.only_presets,
            rewrite=rewrite,
        )
