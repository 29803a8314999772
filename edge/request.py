"""What one image request asks for: the parsed URL, the cache key and the request
headers that matter to the answer, in one value built at the start of the flow."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from edge.keys import variant_key
from edge.negotiate import accept_class
from edge.options import TransformSpec
from edge.routes import ImageRequest, Source

# our CDN-Loop (RFC 8586) token: a request that carries it comes from another edge
LOOP_TOKEN = "edge"  # noqa: S105 - a name, not a secret


@dataclass(slots=True)
class Ask:
    """One request's view of what it wants (a fill runs with the first asker's)."""

    raw: bytes
    key: str
    source: Source
    spec: TransformSpec
    klass: str
    auto: bool
    deadline: float
    from_edge: bool
    client: str = ""
    # completes when the client has gone (a disconnect): waiting for a fill stops then
    gone: Callable[[], Awaitable[object]] | None = None


def make_ask(
    raw: bytes,
    headers: dict[bytes, bytes],
    request: ImageRequest,
    deadline_s: float,
    client: str = "",
) -> Ask:
    spec = request.spec
    auto = spec.format == "auto"
    klass = accept_class(headers.get(b"accept", b"")) if auto else ""
    return Ask(
        raw=raw,
        key=variant_key(request.source.id, spec, klass),
        source=request.source,
        spec=spec,
        klass=klass,
        auto=auto,
        deadline=time.monotonic() + deadline_s,
        from_edge=LOOP_TOKEN in headers.get(b"cdn-loop", b"").decode("latin-1"),
        client=client,
    )
