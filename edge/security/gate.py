"""The one door an image request passes before the edge works for it.

`Gate.admit(raw_path)` runs every check on the untrusted URL, in order: the path is
UTF-8, the signature is one of the configured keys' (or unsigned URLs are allowed), an
absolute source's host is on the allow-list, options are valid. What comes out is a
frozen `ImageRequest`, or a typed 4xx (`cdn_common/errors.py`). Request-head sizes
(414/431) are checked before this, for every route, by the access middleware.
"""

from __future__ import annotations

from cdn_common.errors import BadRequest
from edge.routes import ImageRequest, parse_request
from edge.settings import EdgeSettings


class Gate:
    def __init__(self, settings: EdgeSettings) -> None:
        self.keys = settings.signing_keys
        self.allow_unsigned = settings.unsigned_allowed
        self.allowed_hosts = settings.allowed_sources

    def admit(self, raw_path: bytes) -> tuple[str, ImageRequest]:
        """The decoded path (without a query) and the request it names."""
        try:
            path = raw_path.decode().split("?", 1)[0]
        except UnicodeDecodeError:
            raise BadRequest("path is not UTF-8") from None
        return path, self.parse(path, allow_unsigned=self.allow_unsigned)

    def parse(self, path: str, *, allow_unsigned: bool) -> ImageRequest:
        return parse_request(
            path,
            keys=self.keys,
            allow_unsigned=allow_unsigned,
            allowed_hosts=self.allowed_hosts,
        )
