"""API keys: parsing `id:secret[:scope+scope][:prefix]` and authorising a request against them."""

from __future__ import annotations

from dataclasses import dataclass

from cdn_common.auth import bearer_token, find_secret
from cdn_common.errors import Forbidden, Unauthorized

SCOPES = frozenset({"read", "write", "delete"})


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    secret: str
    scopes: frozenset[str] = SCOPES
    prefix: str = ""

    def __repr__(self) -> str:  # never print the secret
        return f"ApiKey(id={self.id!r}, scopes={sorted(self.scopes)}, prefix={self.prefix!r})"


def parse_api_key(text: str) -> ApiKey:
    parts = text.split(":")
    if len(parts) < 2 or len(parts) > 4 or not parts[0] or not parts[1]:
        raise ValueError("each API key is id:secret[:scope+scope][:prefix]")
    scopes = SCOPES
    if len(parts) >= 3 and parts[2]:
        scopes = frozenset(parts[2].split("+"))
        unknown = scopes - SCOPES
        if unknown:
            raise ValueError(f"unknown scope {sorted(unknown)[0]!r} for key {parts[0]!r}")
    prefix = parts[3] if len(parts) == 4 else ""
    return ApiKey(parts[0], parts[1], scopes, prefix)


def find_key(keys: tuple[ApiKey, ...], token: str | None) -> ApiKey | None:
    """The key whose secret is `token`, comparing every secret in constant time."""
    index = find_secret(token, [key.secret for key in keys])
    return None if index is None else keys[index]


def authorize(
    keys: tuple[ApiKey, ...], authorization: str | None, scope: str, blob_key: str
) -> ApiKey:
    """The API key allowed to do `scope` on `blob_key`, or 401/403."""
    key = find_key(keys, bearer_token(authorization))
    if key is None:
        raise Unauthorized()
    if scope not in key.scopes:
        raise Forbidden(f"API key {key.id!r} lacks the {scope} scope")
    if not under(blob_key, key.prefix):
        raise Forbidden(f"API key {key.id!r} may only use keys under {key.prefix!r}")
    return key


def under(blob_key: str, prefix: str) -> bool:
    """Whether `blob_key` is in the folder `prefix`, by whole path segments: the prefix
    `uploads/alice` (or `uploads/alice/`) holds `uploads/alice/x.jpg`, never
    `uploads/alice2/x.jpg`."""
    folder = prefix.strip("/")
    return not folder or blob_key.startswith(folder + "/")
