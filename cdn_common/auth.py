"""Bearer secrets, shared by the origin's API keys and the edge's purge keys."""

from __future__ import annotations

import hmac
from collections.abc import Sequence


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (scheme case-insensitive)."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def find_secret(token: str | None, secrets: Sequence[str]) -> int | None:
    """Index of the secret equal to `token`; every secret is compared, in constant time.

    Bytes, not str: `hmac.compare_digest` refuses non-ASCII str, and a header decoded as
    latin-1 may be anything.
    """
    if token is None:
        return None
    presented = token.encode("utf-8", "surrogateescape")
    found = None
    for index, secret in enumerate(secrets):
        if hmac.compare_digest(secret.encode(), presented):
            found = index
    return found
