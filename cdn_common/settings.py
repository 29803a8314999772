"""Settings loading shared by both services: defaults < TOML file < environment.

Each service declares one frozen pydantic-settings class; `load_settings` reads it
once at start-up and turns every validation problem into one line naming the setting.
"""

from __future__ import annotations

import difflib
import os
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


class ConfigError(Exception):
    """Invalid configuration; the message is one line meant for the operator."""


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="forbid", case_sensitive=False)

    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Threshold for warnings and errors in the JSON log."
    )
    access_log: bool = Field(True, description="One JSON log line per request.")
    shutdown_grace_s: float = Field(
        10, ge=0, description="On SIGTERM: time given to requests in flight before closing."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init kwargs; the environment overrides it.
        return (env_settings, init_settings)


def split_list(value: Any) -> Any:
    """Comma lists from the environment (`a,b`) or TOML (a string or an array)."""
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


S = TypeVar("S", bound=ServiceSettings)
SERVICES = ("edge", "origin")  # the TOML tables a shared profile file may have


def load_settings(cls: type[S], config_file: Path | None = None) -> S:
    """Build `cls` from an optional TOML file and the environment, or raise ConfigError."""
    values: dict[str, Any] = {}
    if config_file is not None:
        try:
            values = tomllib.loads(config_file.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from None
    values = _section(cls, values)
    for line in unknown_variables(cls, os.environ):
        print(f"warning: {line}", file=sys.stderr)
    try:
        return cls(**values)
    except ValidationError as exc:
        raise ConfigError(_one_line(cls, exc)) from None


def unknown_variables(cls: type[ServiceSettings], environ: Mapping[str, str]) -> list[str]:
    """Environment variables with the service's prefix that name no setting (a typo is
    otherwise silently ignored), each with the closest real name."""
    prefix = str(cls.model_config.get("env_prefix", "")).upper()
    if not prefix:
        return []
    known = [prefix + name.upper() for name in cls.model_fields]
    found = []
    for name in sorted(environ):
        if name.upper().startswith(prefix) and name.upper() not in known:
            close = difflib.get_close_matches(name.upper(), known, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            found.append(f"{name} is not a setting and is ignored{hint}")
    return found


def _section(cls: type[ServiceSettings], values: dict[str, Any]) -> dict[str, Any]:
    """A profile may hold both services as `[edge]` and `[origin]` tables; each service
    reads its own (a file with neither is one service's settings, flat)."""
    if not any(isinstance(values.get(name), dict) for name in SERVICES):
        return values
    own = str(cls.model_config.get("env_prefix", "")).rstrip("_").lower()
    strays = [key for key in values if key not in SERVICES]
    if strays:
        raise ConfigError(
            f"invalid configuration: {', '.join(strays)} outside the [edge]/[origin] tables"
        )
    section = values.get(own, {})
    return section if isinstance(section, dict) else {}


def _one_line(cls: type[ServiceSettings], exc: ValidationError) -> str:
    prefix = str(cls.model_config.get("env_prefix", ""))
    problems = []
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"]) or "?"
        shown = f"{(prefix + name).upper()} ({name})" if prefix else name
        got = error.get("input")
        detail = error["msg"]
        if isinstance(got, str | int | float) and error["type"] != "extra_forbidden":
            detail += f", got {got!r}"
        problems.append(f"{shown}: {detail}")
    return "invalid configuration: " + "; ".join(problems)
