"""Client hints: `width=auto` and `dpr=auto` resolved from the request's headers, as
Cloudflare's `width=auto` does.

    width=auto  <- Sec-CH-Width, else Width (both in device pixels), else
                   Sec-CH-Viewport-Width x DPR; with none of them, no width (the source's)
    dpr=auto    <- Sec-CH-DPR, else DPR; with neither, 1

The options text is rewritten before it is parsed, so the cache key is the resolved
spec: a hinted request shares its entry with the URL that spells the same size. Widths
are rounded up to a 50 px step (or to the next of `EDGE_ALLOWED_WIDTHS`) and clamped to
the output limit, DPR to 1-4 in steps of a half, so hints cannot mint unbounded
variants. The answer then carries `Vary` on the hints. A page opts in with
`Accept-CH: Sec-CH-Width, Sec-CH-DPR, Sec-CH-Viewport-Width` and, for an image host of
its own, `<meta http-equiv="Delegate-CH" content="sec-ch-width https://img.example;
sec-ch-dpr https://img.example; sec-ch-viewport-width https://img.example">`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

WIDTH_NAMES = frozenset({"width", "w"})
STEP = 50
VARY = b"Sec-CH-Width, Width, Sec-CH-DPR, DPR, Sec-CH-Viewport-Width"


def _number(headers: Mapping[bytes, bytes], *names: bytes) -> float | None:
    for name in names:
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw.decode("latin-1").strip().strip('"'))
        except ValueError:
            continue
        if math.isfinite(value) and value > 0:
            return value
    return None


def resolve(
    options: str,
    headers: Mapping[bytes, bytes],
    max_out: int,
    allowed: frozenset[int] = frozenset(),
) -> tuple[str, bool]:
    """The options text with `auto` width and dpr replaced (or dropped), and whether any
    was: then the answer depends on the hint headers."""
    if "auto" not in options:
        return options, False
    items = options.split(",")
    wants_width = any(_is(item, WIDTH_NAMES) for item in items)
    wants_dpr = any(_is(item, {"dpr"}) for item in items)
    if not (wants_width or wants_dpr):
        return options, False
    dpr = _number(headers, b"sec-ch-dpr", b"dpr")
    dpr = min(4.0, max(1.0, round((dpr or 1.0) * 2) / 2))
    width = _number(headers, b"sec-ch-width", b"width")
    if width is None:
        viewport = _number(headers, b"sec-ch-viewport-width")
        width = viewport * dpr if viewport is not None else None
    resolved = []
    for item in items:
        if _is(item, WIDTH_NAMES):
            if width is not None:
                resolved.append(f"width={_bucket(width, max_out, allowed)}")
        elif _is(item, {"dpr"}):
            if wants_width:  # Sec-CH-Width already counts device pixels
                continue
            resolved.append(f"dpr={dpr:g}")
        else:
            resolved.append(item)
    return ",".join(resolved) or "_", True


def _is(item: str, names: set[str] | frozenset[str]) -> bool:
    name, _, value = item.partition("=")
    return name.strip().lower() in names and value.strip().lower() == "auto"


def _bucket(width: float, max_out: int, allowed: frozenset[int]) -> int:
    if allowed:
        fitting = [w for w in sorted(allowed) if w >= width]
        return fitting[0] if fitting else max(allowed)
    return max(1, min(max_out, math.ceil(width / STEP) * STEP))
