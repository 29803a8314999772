"""An API key's prefix scopes it to a folder by whole path segments."""

from __future__ import annotations

import pytest

from cdn_common.errors import Forbidden
from origin.auth import authorize, parse_api_key


@pytest.mark.parametrize("prefix", ["uploads/alice", "uploads/alice/", "/uploads/alice/"])
@pytest.mark.parametrize(
    ("blob_key", "allowed"),
    [
        ("uploads/alice/a.jpg", True),
        ("uploads/alice/deep/b.jpg", True),
        ("uploads/alice2/a.jpg", False),
        ("uploads/alice.jpg", False),
        ("uploads/alic/a.jpg", False),
        ("other/uploads/alice/a.jpg", False),
    ],
)
def test_a_prefix_matches_whole_segments(prefix: str, blob_key: str, allowed: bool) -> None:
    key = parse_api_key(f"alice:s3cret:write:{prefix}")
    if allowed:
        assert authorize((key,), "Bearer s3cret", "write", blob_key) is key
    else:
        with pytest.raises(Forbidden):
            authorize((key,), "Bearer s3cret", "write", blob_key)


def test_no_prefix_allows_every_key() -> None:
    key = parse_api_key("admin:s3cret")
    assert authorize((key,), "Bearer s3cret", "delete", "any/where.jpg") is key
