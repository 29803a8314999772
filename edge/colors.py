"""CSS colours for `background=`: hex, rgb()/rgba() and every CSS colour name, as RGBA."""

from __future__ import annotations

import contextlib
import re

import webcolors

RGBA = tuple[int, int, int, int]

# every CSS named colour (webcolors' CSS3 table, 147 names) plus the two it leaves to
# CSS Color 4: `transparent` and `rebeccapurple`
EXTRA: dict[str, RGBA] = {"transparent": (0, 0, 0, 0), "rebeccapurple": (102, 51, 153, 255)}
_HEX = re.compile(r"#?([0-9a-f]{3,4}|[0-9a-f]{6}|[0-9a-f]{8})")
_FUNC = re.compile(r"rgba?\(([^)]*)\)")


def parse_color(text: str) -> RGBA:
    """RGBA for a CSS colour; ValueError for anything else."""
    value = text.strip().lower()
    if value in EXTRA:
        return EXTRA[value]
    if value.isalpha():
        with contextlib.suppress(ValueError):  # not a name: maybe hex without its `#`
            named = webcolors.name_to_rgb(value, spec=webcolors.CSS3)
            return (named.red, named.green, named.blue, 255)
    hexed = _HEX.fullmatch(value)
    if hexed:
        digits = hexed.group(1)
        if len(digits) <= 4:
            digits = "".join(c * 2 for c in digits)
        if len(digits) == 6:
            digits += "ff"
        r, g, b, a = (int(digits[i : i + 2], 16) for i in range(0, 8, 2))
        return (r, g, b, a)
    func = _FUNC.fullmatch(value)
    if func:
        parts = [p.strip() for p in func.group(1).replace("/", ",").split(",")]
        if len(parts) not in (3, 4):
            raise ValueError("rgb() takes 3 or 4 values")
        rgb = [_channel(p) for p in parts[:3]]
        alpha = _alpha(parts[3]) if len(parts) == 4 else 255
        return (rgb[0], rgb[1], rgb[2], alpha)
    raise ValueError(f"not a CSS colour: {text!r}")


def _channel(part: str) -> int:
    number = float(part[:-1]) * 2.55 if part.endswith("%") else float(part)
    if not 0 <= number <= 255:
        raise ValueError("colour channel out of range")
    return round(number)


def _alpha(part: str) -> int:
    number = float(part[:-1]) / 100 if part.endswith("%") else float(part)
    if not 0 <= number <= 1:
        raise ValueError("alpha out of range")
    return round(number * 255)


def format_color(rgba: RGBA) -> str:
    r, g, b, a = rgba
    return f"#{r:02x}{g:02x}{b:02x}" + ("" if a == 255 else f"{a:02x}")
