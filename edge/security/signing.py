"""URL signatures: base64url (no padding) HMAC-SHA256 of "/" + options + "/" + source.

Several keys may be configured so they can be rotated: a URL signed with any of them
is accepted, every key is compared (in constant time) so timing tells nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def sign(key: str, path: str) -> str:
    """The signature of `path` ("/options/source", exactly as it will appear in the URL)."""
    digest = hmac.new(key.encode(), path.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def verify(keys: tuple[str, ...], signature: str, path: str) -> bool:
    ok = False
    given = signature.encode()  # as bytes: compare_digest refuses non-ASCII str (found by atheris)
    for key in keys:
        ok |= hmac.compare_digest(sign(key, path).encode(), given)
    return ok


def signed_path(key: str, path: str) -> str:
    if not path.startswith("/"):
        path = "/" + path
    return f"/{sign(key, path)}{path}"
