"""What a request's headers choose among a variant's forms: today the output format of
`format=auto`, from `Accept`.

A negotiated response depends on the request only through its format class: which of
AVIF and WebP the client takes. The class, not the raw header, goes into the cache key,
so the thousands of distinct `Accept` strings browsers send share four entries.
"""

from __future__ import annotations

# class -> the Accept the pipeline chooses from
ACCEPT_FOR_CLASS = {"": "", "a": "image/avif", "w": "image/webp", "aw": "image/avif,image/webp"}


def accept_class(accept: bytes) -> str:
    """`Accept` to its format class: "a" for AVIF, "w" for WebP, both, or neither."""
    return ("a" if b"image/avif" in accept else "") + ("w" if b"image/webp" in accept else "")
