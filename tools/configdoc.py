"""The configuration reference, generated from the settings: `python -m tools.configdoc`.

The tables of `docs/configuration.md` are this output (`--write docs/configuration.md`
puts them in place); a test fails when they drift apart.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo

from cdn_common.settings import ServiceSettings

SERVICES = {"origin": "origin.settings:OriginSettings", "edge": "edge.settings:EdgeSettings"}


def _load(path: str) -> type[ServiceSettings]:
    module, _, name = path.partition(":")
    cls: type[ServiceSettings] = getattr(importlib.import_module(module), name)
    return cls


def _default(field: FieldInfo) -> str:
    extra = field.json_schema_extra
    if isinstance(extra, dict) and "doc_default" in extra:
        return str(extra["doc_default"])  # machine-dependent defaults are described
    value: Any = field.default
    if value is None or value == ():
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _type(field: FieldInfo) -> str:
    annotation = field.annotation
    text = getattr(annotation, "__name__", None) or str(annotation)
    text = text.replace("typing.", "")
    if "tuple" in text:
        return "list"
    if text.startswith("Literal"):
        return " \\| ".join(a for a in map(str, getattr(annotation, "__args__", ())))
    return text.replace(" | None", "").replace("Optional[", "").rstrip("]")


def table(service: str) -> str:
    cls = _load(SERVICES[service])
    prefix = str(cls.model_config.get("env_prefix", ""))
    lines = ["| environment | TOML key | type | default | meaning |", "|---|---|---|---|---|"]
    shared = ServiceSettings.model_fields
    # the service's own settings first, then the ones every service has
    names = [n for n in cls.model_fields if n not in shared] + list(shared)
    for name in names:
        field = cls.model_fields[name]
        lines.append(
            f"| `{prefix}{name.upper()}` | `{name}` | {_type(field)} | `{_default(field)}` "
            f"| {field.description or ''} |"
        )
    return "\n".join(lines)


def write(path: Path) -> None:
    """Replace each `<!-- {service}-settings:begin/end -->` block of `path` in place."""
    text = path.read_text()
    for service in SERVICES:
        begin, end = f"<!-- {service}-settings:begin -->", f"<!-- {service}-settings:end -->"
        head, _, rest = text.partition(begin)
        _, _, tail = rest.partition(end)
        if rest:
            text = f"{head}{begin}\n{table(service)}\n{end}{tail}"
    path.write_text(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tools.configdoc",
        description="Print the settings reference tables, or write them into a Markdown file.",
    )
    parser.add_argument("services", nargs="*", choices=[[], *SERVICES], metavar="SERVICE")
    parser.add_argument("--write", type=Path, metavar="FILE", help="replace the tables in FILE")
    args = parser.parse_args(argv)
    if args.write is not None:
        write(args.write)
        return
    for service in args.services or list(SERVICES):
        print(table(service))


if __name__ == "__main__":
    main()
