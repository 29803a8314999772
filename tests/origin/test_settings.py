"""Configuration: defaults < TOML file < environment, and one clear line when it is wrong."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from cdn_common.settings import ConfigError, load_settings
from origin.auth import ApiKey
from origin.settings import OriginSettings


def test_defaults_match_the_design() -> None:
    settings = load_settings(OriginSettings)
    assert (settings.host, settings.port) == ("127.0.0.1", 8081)
    assert settings.storage == "file://./data/blobs"
    assert settings.api_keys == ()
    assert settings.public_read is True
    assert settings.max_upload_bytes == 50 * 1024 * 1024


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "origin.toml"
    config.write_text('port = 9000\nstorage = "memory://"\napi_keys = ["a:s1:read", "b:s2"]\n')
    monkeypatch.setenv("ORIGIN_PORT", "9001")
    monkeypatch.setenv("ORIGIN_PURGE_WEBHOOKS", "http://e1/_purge, http://e2/_purge")
    settings = load_settings(OriginSettings, config)
    assert settings.port == 9001
    assert settings.storage == "memory://"
    assert settings.api_keys[0] == ApiKey("a", "s1", frozenset({"read"}))
    assert settings.api_keys[1].scopes == frozenset({"read", "write", "delete"})
    assert settings.purge_webhooks == ("http://e1/_purge", "http://e2/_purge")
    with pytest.raises(ValidationError, match="frozen"):
        settings.port = 1  # type: ignore[misc]


def test_api_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORIGIN_API_KEYS", "up:s3cret:write:users/,ops:x:read+delete")
    keys = load_settings(OriginSettings).api_keys
    assert keys[0] == ApiKey("up", "s3cret", frozenset({"write"}), "users/")
    assert keys[1].scopes == frozenset({"read", "delete"})
    assert "s3cret" not in repr(keys)


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("ORIGIN_PORT", "eighty", "ORIGIN_PORT"),
        ("ORIGIN_PORT", "70000", "ORIGIN_PORT"),
        ("ORIGIN_MAX_UPLOAD_MB", "-1", "ORIGIN_MAX_UPLOAD_MB"),
        ("ORIGIN_STORAGE", "ftp://x", "ORIGIN_STORAGE"),
        ("ORIGIN_API_KEYS", "nosecret", "ORIGIN_API_KEYS"),
        ("ORIGIN_API_KEYS", "a:b:admin", "ORIGIN_API_KEYS"),
        ("ORIGIN_PURGE_WEBHOOKS", "edge:8080", "ORIGIN_PURGE_WEBHOOKS"),
        ("ORIGIN_PUBLIC_READ", "maybe", "ORIGIN_PUBLIC_READ"),
    ],
)
def test_invalid_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, named: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(OriginSettings)
    message = str(caught.value)
    assert named in message
    assert "\n" not in message


def test_unknown_file_keys_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "origin.toml"
    config.write_text("prot = 8080\n")
    with pytest.raises(ConfigError, match="prot"):
        load_settings(OriginSettings, config)


def test_bad_configuration_stops_the_service_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "origin.toml"
    config.write_text("port = 'x'\n")
    result = subprocess.run(
        [sys.executable, "-m", "origin", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("origin: invalid configuration: ORIGIN_PORT")
