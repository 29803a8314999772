"""The cache key, built here and nowhere else.

A variant's key is its source, the canonical form of its options (defaults applied,
aliases and order folded, never the signature) and the negotiated format class, so
equivalent URLs share one entry. The fast hit path looks entries up by the raw request
path instead (no parsing); a negotiated path adds the class the same way.
"""

from __future__ import annotations

from edge.negotiate import ACCEPT_FOR_CLASS
from edge.options import TransformSpec

SEP = "\x00"


def variant_key(source_id: str, spec: TransformSpec, klass: str) -> str:
    return f"{source_id}{SEP}{spec.canonical}{SEP}{klass}"


def variant_keys(source_id: str, spec: TransformSpec) -> list[str]:
    """Every key the URL's variant may be stored under: one per format class when it is
    negotiated (`format=auto`), else one."""
    classes = ACCEPT_FOR_CLASS if spec.format == "auto" else {"": ""}
    return [variant_key(source_id, spec, klass) for klass in classes]


def fast_key(raw: bytes, klass: str) -> bytes:
    """The fast path's key for a negotiated request path."""
    return raw + b"\x00" + klass.encode()
