"""CSS colours for `background=`: hex, rgb()/rgba() and the common names, as RGBA."""

from __future__ import annotations

import re

RGBA = tuple[int, int, int, int]

NAMED: dict[str, RGBA] = {
    "transparent": (0, 0, 0, 0),
    "black": (0, 0, 0, 255),
    "white": (255, 255, 255, 255),
    "red": (255, 0, 0, 255),
    "green": (0, 128, 0, 255),
    "lime": (0, 255, 0, 255),
    "blue": (0, 0, 255, 255),
    "yellow": (255, 255, 0, 255),
    "cyan": (0, 255, 255, 255),
    "aqua": (0, 255, 255, 255),
    "magenta": (255, 0, 255, 255),
    "fuchsia": (255, 0, 255, 255),
    "gray": (128, 128, 128, 255),
    "grey": (128, 128, 128, 255),
    "silver": (192, 192, 192, 255),
    "maroon": (128, 0, 0, 255),
    "olive": (128, 128, 0, 255),
    "navy": (0, 0, 128, 255),
    "purple": (128, 0, 128, 255),
    "teal": (0, 128, 128, 255),
    "orange": (255, 165, 0, 255),
}
_HEX = re.compile(r"#?([0-9a-f]{3,4}|[0-9a-f]{6}|[0-9a-f]{8})")
_FUNC = re.compile(r"rgba?\(([^)]*)\)")


def parse_color(text: str) -> RGBA:
    """RGBA for a CSS colour; ValueError for anything else."""
    value = text.strip().lower()
    if value in NAMED:
        return NAMED[value]
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
