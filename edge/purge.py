"""`POST /_purge` with a bearer key: by source (all its variants), by exact URL or by
prefix; soft (mark stale) or hard (drop)."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import Receive, Scope, Send

from cdn_common.asgi import send_response
from cdn_common.auth import bearer_token, find_secret
from cdn_common.errors import BadRequest, Forbidden, PayloadTooLarge, Unauthorized, Unavailable
from edge.host import Host, SiblingsUnreachable
from edge.keys import variant_keys
from edge.security.gate import Gate
from edge.serve import Server
from edge.settings import EdgeSettings

MAX_BODY = 65536
USAGE = 'expected JSON {"source"|"url"|"prefix": "...", "mode": "hard"|"soft"}'


class Purge:
    def __init__(
        self, settings: EdgeSettings, server: Server, gate: Gate, host: Host | None = None
    ) -> None:
        self.host = host  # the host's other edge processes: a purge reaches them all
        self.settings = settings
        self.gate = gate
        self.server = server
        self.cache = server.cache

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.settings.purge_keys:
            raise Forbidden("purge is disabled: no EDGE_PURGE_KEYS")
        headers = dict(scope["headers"])
        token = bearer_token(headers.get(b"authorization", b"").decode("latin-1"))
        if find_secret(token, self.settings.purge_keys) is None:
            raise Unauthorized()
        document = await _document(receive)
        mode = document.get("mode", "hard")
        if mode not in ("hard", "soft"):
            raise BadRequest('mode must be "hard" or "soft"')
        targets = [name for name in ("source", "url", "prefix") if name in document]
        if len(targets) != 1 or not isinstance(document[targets[0]], str):
            raise BadRequest('expected exactly one of "source", "url" or "prefix" as a string')
        kind, target, soft = targets[0], document[targets[0]], mode == "soft"
        dropped = self.purge(kind, target, soft=soft)
        if self.host is not None:
            try:
                asked = {"target_kind": kind, "target": target, "soft": soft}
                dropped += sum(await self.host.ask_all("purge", asked))
            except SiblingsUnreachable as error:
                # never "done" for a purge some process did not make: the caller retries
                raise Unavailable(f"purge not confirmed by every edge process ({error})") from None
        self.server.stats.purges += 1
        answer = json.dumps({"purged": dropped, "mode": mode}).encode()
        await send_response(send, 200, answer, b"application/json")

    async def from_sibling(self, asked: dict[str, Any]) -> int:
        return self.purge(asked["target_kind"], asked["target"], soft=bool(asked["soft"]))

    def purge(self, kind: str, target: str, *, soft: bool) -> int:
        if kind == "source":
            return self.server.forget_source(target, soft=soft)
        if kind == "prefix":
            if not target:
                raise BadRequest('an empty prefix would purge everything; say so with "/"')
            prefix = "" if target == "/" else target
            dropped = self.cache.purge_prefix(prefix, soft=soft)
            sources = self.server.upstream.sources
            for source in sources.sources_under(prefix):
                dropped += sources.purge(source)
            return dropped
        request = self.gate.parse(target.split("?", 1)[0], allow_unsigned=True)
        if request.spec.is_identity:  # the original, as the proxy keeps it: its source
            return self.server.forget_source(request.source.id, soft=soft)
        return self.cache.purge_keys(variant_keys(request.source.id, request.spec), soft=soft)


async def _document(receive: Receive) -> dict[str, Any]:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if len(body) > MAX_BODY:
            raise PayloadTooLarge("purge request too large")
        if not message.get("more_body"):
            break
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise BadRequest(USAGE)
    return document
