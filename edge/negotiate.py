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
    """`Accept` to its format class: "a" for AVIF, "w" for WebP, both, or neither. A
    format counts only when named (browsers name the ones they decode; `image/*` says
    nothing about AVIF) with a non-zero weight (RFC 9110 §12.5.1: `q=0` is "not
    acceptable")."""
    lowered = accept.lower()
    if b"q=" not in lowered:  # no weights: what every browser sends, decided by `in`
        return ("a" if b"image/avif" in lowered else "") + ("w" if b"image/webp" in lowered else "")
    weights = _weights(lowered.decode("latin-1"))
    return ("a" if weights.get("image/avif", 0) > 0 else "") + (
        "w" if weights.get("image/webp", 0) > 0 else ""
    )


def _weights(accept: str) -> dict[str, float]:
    """Media range -> weight; a malformed weight counts as 1 (lenient, as browsers are
    never the ones sending those)."""
    found: dict[str, float] = {}
    for part in accept.split(","):
        media, _, params = part.partition(";")
        weight = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    weight = min(1.0, max(0.0, float(value)))
                except ValueError:
                    weight = 1.0
        found[media.strip()] = weight
    return found
