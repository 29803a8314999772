"""Transform options: one declarative table, a frozen `TransformSpec`, its canonical string.

Parsing is pure: a comma list of `name=value` (Cloudflare's names and aliases) goes in,
a `TransformSpec` or a `BadOption` (400, naming the option) comes out. Defaults and
folds are applied here, before any cache key is made, so equivalent URLs (another
order, aliases, defaults spelled out, `dpr` instead of a larger width) share one
canonical form: `parse_options(spec.canonical) == spec` for every spec.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

from cdn_common.errors import BadRequest
from cdn_common.http import digits
from edge.colors import RGBA, format_color, parse_color

MAX_DIMENSION = 16384  # the URL grammar's bound; EDGE_MAX_OUT_PX is checked when planning
FITS = ("scale-down", "contain", "cover", "crop", "pad", "squeeze")
FORMATS = ("auto", "avif", "webp", "jpeg", "baseline-jpeg", "png", "gif", "json")
GRAVITIES = ("auto", "center", "left", "right", "top", "bottom")
QUALITY_NAMES = {"high": 90, "medium-high": 80, "medium-low": 65, "low": 50}
AUTO_QUALITY = 0  # quality=auto: the lowest quality whose encode keeps the score target
Focal = tuple[float, float]
Trim = tuple[int, int, int, int]


class BadOption(BadRequest):
    message = "invalid options"


@dataclass(frozen=True, slots=True)
class TransformSpec:
    width: int | None = None
    height: int | None = None
    fit: str = "scale-down"
    gravity: str | Focal = "center"
    format: str | None = None
    quality: int | None = None
    blur: int | None = None
    sharpen: float | None = None
    rotate: int = 0
    flip: str | None = None
    background: RGBA | None = None
    trim: Trim | str | None = None
    metadata: str = "none"
    anim: bool = True

    @property
    def canonical(self) -> str:
        """The options' one spelling: primary names, sorted, defaults left out; `_` for none."""
        parts = []
        for option in sorted(OPTIONS, key=lambda o: o.name):
            if option.field is None:
                continue
            value = getattr(self, option.field)
            if value != DEFAULTS[option.field]:
                parts.append(f"{option.name}={option.render(value)}")
        return ",".join(parts) or "_"

    @property
    def is_identity(self) -> bool:
        return self == IDENTITY


IDENTITY = TransformSpec()
DEFAULTS: dict[str, Any] = {f.name: getattr(IDENTITY, f.name) for f in fields(TransformSpec)}


# -- value parsers: each takes the raw text and returns the value or raises ValueError --


def _integer(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not digits(text) or len(text) > 6:
            raise ValueError(f"an integer {low}-{high}")
        value = int(text)
        if not low <= value <= high:
            raise ValueError(f"an integer {low}-{high}")
        return value

    return parse


def _number(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"a number {low:g}-{high:g}") from None
        if not low <= value <= high:  # also refuses nan and inf
            raise ValueError(f"a number {low:g}-{high:g}")
        return value

    return parse


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError("one of " + ", ".join(choices))
        return text

    return parse


def _rotate(text: str) -> int:
    if text not in ("0", "90", "180", "270"):
        raise ValueError("one of 0, 90, 180, 270")
    return int(text)


def _quality(text: str) -> int:
    if text == "auto":
        return AUTO_QUALITY
    if text in QUALITY_NAMES:
        return QUALITY_NAMES[text]
    try:
        return _integer(1, 100)(text)
    except ValueError:
        raise ValueError("1-100, auto or one of " + ", ".join(QUALITY_NAMES)) from None


def _render_quality(value: int) -> str:
    return "auto" if value == AUTO_QUALITY else str(value)


def _gravity(text: str) -> str | Focal:
    if text in GRAVITIES:
        return text
    x, sep, y = text.partition("x")
    unit = _number(0, 1)
    try:
        if not sep:
            raise ValueError
        return (unit(x), unit(y))
    except ValueError:
        raise ValueError("one of " + ", ".join(GRAVITIES) + ", or XxY with X, Y in 0-1") from None


def _background(text: str) -> RGBA:
    try:
        return parse_color(text)
    except ValueError:
        raise ValueError("a CSS colour (#rgb, #rrggbb[aa], rgb(), rgba() or a name)") from None


def _trim(text: str) -> Trim | str:
    if text == "border":
        return text
    parts = text.split(";")
    side = _integer(0, MAX_DIMENSION)
    try:
        if len(parts) != 4:
            raise ValueError
        top, right, bottom, left = (side(p) for p in parts)
    except ValueError:
        raise ValueError("top;right;bottom;left in pixels, or border") from None
    return (top, right, bottom, left)


def _boolean(text: str) -> bool:
    if text not in ("true", "false"):
        raise ValueError("true or false")
    return text == "true"


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value).removesuffix(".0") if value.is_integer() else repr(value)
    return str(value)


def _render_gravity(value: str | Focal) -> str:
    return value if isinstance(value, str) else f"{_plain(value[0])}x{_plain(value[1])}"


def _render_trim(value: Trim | str) -> str:
    return value if isinstance(value, str) else ";".join(map(str, value))


@dataclass(frozen=True, slots=True)
class Option:
    name: str
    aliases: tuple[str, ...]
    parse: Callable[[str], Any]
    render: Callable[[Any], str] = _plain
    field: str | None = None  # None: folded into other fields while parsing (dpr)
    values: str = ""  # for the documentation table


OPTIONS: tuple[Option, ...] = (
    Option("width", ("w",), _integer(1, MAX_DIMENSION), field="width", values="1-16384 px"),
    Option("height", ("h",), _integer(1, MAX_DIMENSION), field="height", values="1-16384 px"),
    Option("fit", (), _choice(*FITS), field="fit", values=", ".join(FITS)),
    Option(
        "gravity",
        ("g",),
        _gravity,
        _render_gravity,
        field="gravity",
        values="auto (attention), center, left, right, top, bottom, or XxY focal point in 0-1",
    ),
    Option("dpr", (), _number(1, 4), values="1-4; multiplies width and height"),
    Option("format", ("f",), _choice(*FORMATS), field="format", values=", ".join(FORMATS)),
    Option(
        "quality",
        ("q",),
        _quality,
        _render_quality,
        field="quality",
        values="1-100, auto (the lowest keeping a perceptual score), or high (90), "
        "medium-high (80), medium-low (65), low (50)",
    ),
    Option("blur", (), _integer(1, 250), field="blur", values="1-250 (radius; sigma = blur/2)"),
    Option("sharpen", (), _number(0, 10), field="sharpen", values="0-10"),
    Option("rotate", (), _rotate, field="rotate", values="90, 180, 270"),
    Option("flip", (), _choice("h", "v", "hv"), field="flip", values="h, v, hv"),
    Option(
        "background",
        (),
        _background,
        format_color,
        field="background",
        values="CSS colour: #rgb, #rrggbb[aa] (`#` as %23), rgb(), rgba(), a name",
    ),
    Option(
        "trim",
        (),
        _trim,
        _render_trim,
        field="trim",
        values="top;right;bottom;left px, or border",
    ),
    Option(
        "metadata",
        (),
        _choice("keep", "copyright", "none"),
        field="metadata",
        values="none (default), copyright (EXIF Copyright and Artist only), keep",
    ),
    Option("anim", (), _boolean, field="anim", values="true (default), false: first frame"),
)
BY_NAME: dict[str, Option] = {name: o for o in OPTIONS for name in (o.name, *o.aliases)}


def parse_options(text: str) -> TransformSpec:
    """`width=400,f=webp` (or `_`) to a spec; BadOption names the first problem."""
    if text in ("_", ""):
        return IDENTITY
    values: dict[str, Any] = {}
    dpr = 1.0
    for item in _split(text):
        name, sep, raw = item.partition("=")
        option = BY_NAME.get(name.strip().lower())
        if option is None:
            shown = name[:40].encode("unicode_escape").decode()
            raise BadOption(f"unknown option {shown!r}" if name else "empty option")
        if not sep:
            raise BadOption(f"option {option.name} needs a value")
        if option.name in values:
            raise BadOption(f"option {option.name} given twice")
        try:
            value = option.parse(raw.strip())
        except ValueError as exc:
            raise BadOption(f"invalid {option.name}: expected {exc}") from None
        values[option.name] = value
        if option.field is None:
            dpr = value
    fields_ = {field: v for n, v in values.items() if (field := BY_NAME[n].field)}
    spec = TransformSpec(**fields_)
    if spec.sharpen == 0:
        spec = replace(spec, sharpen=None)
    return _fold_dpr(spec, dpr)


def _split(text: str) -> list[str]:
    """Comma-separated, except inside parentheses (`background=rgba(0,0,0,0.5)`)."""
    items, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            items.append(text[start:index])
            start = index + 1
    items.append(text[start:])
    return items


def _fold_dpr(spec: TransformSpec, dpr: float) -> TransformSpec:
    """`w=200,dpr=2` is `w=400`: one cache entry for one output."""
    if dpr == 1:
        return spec
    width = round(spec.width * dpr) if spec.width else None
    height = round(spec.height * dpr) if spec.height else None
    for name, value in (("width", width), ("height", height)):
        if value is not None and value > MAX_DIMENSION:
            raise BadOption(f"invalid dpr: {name} times dpr exceeds {MAX_DIMENSION}")
    return replace(spec, width=width, height=height)


def options_table() -> str:
    """The README's option reference, from the same table the parser uses."""
    lines = ["| option | aliases | values | default |", "|---|---|---|---|"]
    for option in OPTIONS:
        default = "" if option.field is None else DEFAULTS[option.field]
        shown = "-" if default is None else option.render(default) if default != "" else "1"
        aliases = ", ".join(f"`{a}`" for a in option.aliases)
        lines.append(f"| `{option.name}` | {aliases} | {option.values} | {shown} |")
    return "\n".join(lines)
