from __future__ import annotations

import contextlib
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from origin.keys import BadKey, key_from_raw_path

GOOD = [
    (b"a.jpg", "a.jpg"),
    (b"users/42/avatar.png", "users/42/avatar.png"),
    (b"caf%C3%A9/cr%C3%A8me.jpg", "café/crème.jpg"),
    (b"with%20space.jpg", "with space.jpg"),
    (b"a..b/c.jpg", "a..b/c.jpg"),
]

BAD = [
    (b"", "empty"),
    (b"../etc/passwd", "'.'"),
    (b"a/../../etc/passwd", "'.'"),
    (b"%2e%2e/etc/passwd", "'.'"),
    (b"%2E%2E/secret", "'.'"),
    (b"a/%2e/b", "'.'"),
    (b".meta/a.json", "'.'"),
    (b"a%2Fb", "encoded slash"),
    (b"a%5cb", "encoded slash"),
    (b"a\\b", "forbidden character"),
    (b"/etc/passwd", "absolute"),
    (b"%2fetc/passwd", "encoded slash"),
    (b"a%00b.jpg", "forbidden character"),
    (b"a%0d%0aSet-Cookie:x", "forbidden character"),
    (b"a%7fb", "forbidden character"),
    (b"a%252e%252e/b", "forbidden character"),
    (b"a//b", "empty segment"),
    (b"a/", "empty segment"),
    (b"_meta/x", "reserved"),
    (b"healthz", "reserved"),
    (b"x" * 1025, "longer than 1024"),
    (b"a/" + b"y" * 256, "segment longer"),
    (b"%ff%fe", "UTF-8"),
]


@pytest.mark.parametrize(("raw", "key"), GOOD)
def test_valid_keys(raw: bytes, key: str) -> None:
    assert key_from_raw_path(raw) == key


@pytest.mark.parametrize(("raw", "reason"), BAD)
def test_invalid_keys_name_the_problem(raw: bytes, reason: str) -> None:
    with pytest.raises(BadKey, match=reason) as caught:
        key_from_raw_path(raw)
    assert caught.value.status == 400


@given(st.binary(max_size=300))
def test_no_key_escapes_the_store(raw: bytes) -> None:
    try:
        key = key_from_raw_path(raw)
    except BadKey:
        return
    root = "/srv/blobs"
    joined = os.path.normpath(os.path.join(root, key))
    assert joined.startswith(root + "/")
    assert not any(part.startswith(".") for part in key.split("/"))


@given(st.text(max_size=200))
def test_text_keys_never_raise_anything_else(text: str) -> None:
    with contextlib.suppress(BadKey):
        key_from_raw_path(text.encode("utf-8", "surrogatepass"))
