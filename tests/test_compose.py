"""compose.yaml (the local cluster) cannot run here (no Docker engine), so check what it
wires together: each of our services gets valid settings from its profile plus its
environment, and every address it is given is another service of the file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from cdn_common.settings import ServiceSettings, load_settings
from edge.settings import EdgeSettings
from origin.settings import OriginSettings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
OURS = {name: spec for name, spec in SERVICES.items() if spec.get("image") == "imagecdn:local"}
IMAGE_ENV = dict(re.findall(r"^\s+(\w+)=(\S+?)(?: \\)?$", (ROOT / "Dockerfile").read_text(), re.M))


def resolve(value: str) -> str:
    """compose's `${VAR:-default}` with VAR unset, and `${VAR:?message}` with VAR set
    (to a stand-in, as an operator must)."""
    value = re.sub(r"\$\{(\w+):\?[^}]*\}", lambda m: f"set-{m.group(1).lower()}", str(value))
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def test_no_secret_has_a_default_and_every_service_has_a_memory_limit() -> None:
    text = (ROOT / "compose.yaml").read_text()
    for secret in (
        "EDGE_SIGNING_KEYS",
        "EDGE_PURGE_KEYS",
        "ORIGIN_ADMIN_SECRET",
        "MINIO_ROOT_PASSWORD",
    ):
        assert re.search(rf"\$\{{{secret}:-", text) is None, secret
        assert re.search(rf"\$\{{{secret}:\?", text), secret
    for name, spec in OURS.items():
        assert spec.get("mem_limit"), name


def settings_of(name: str, monkeypatch: pytest.MonkeyPatch) -> ServiceSettings:
    spec = OURS[name]
    module, flag, path = spec["command"]
    assert flag == "--config" and path.startswith("/etc/imagecdn/")
    env = {**IMAGE_ENV, **{k: resolve(v) for k, v in spec.get("environment", {}).items()}}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cls = {"edge": EdgeSettings, "origin": OriginSettings}[module]
    return load_settings(cls, ROOT / "config" / path.removeprefix("/etc/imagecdn/"))


def hosts(settings: ServiceSettings) -> set[str]:
    found = set()
    for name in ("origin_url", "shared_cache_url", "s3_endpoint", "parent_url", "purge_webhooks"):
        value = getattr(settings, name, None)
        for url in value if isinstance(value, tuple) else [value] if value else []:
            found.add(urlsplit(url).hostname)
    return found


def test_the_cluster_has_every_part_the_readme_describes() -> None:
    assert {"lb", "edge-1", "edge-2", "shield", "origin", "minio", "redis"} <= set(SERVICES)
    assert set(OURS) == {"edge-1", "edge-2", "shield", "origin"}


@pytest.mark.parametrize("name", sorted(OURS))
def test_each_service_has_valid_settings_pointing_at_services_of_the_file(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_of(name, monkeypatch)
    assert settings.host == "0.0.0.0"
    assert hosts(settings) <= set(SERVICES), hosts(settings) - set(SERVICES)


def test_edge_nodes_use_the_shield_and_redis_and_the_origin_purges_them_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node = settings_of("edge-1", monkeypatch)
    assert isinstance(node, EdgeSettings)
    assert [urlsplit(u).hostname for u in node.parent_url] == ["shield"]
    assert urlsplit(node.shared_cache_url or "").hostname == "redis"
    assert node.signing_keys and not node.unsigned_allowed
    origin = settings_of("origin", monkeypatch)
    assert isinstance(origin, OriginSettings)
    purged = {urlsplit(u).hostname for u in origin.purge_webhooks}
    assert purged == {"edge-1", "edge-2", "shield"}
    assert origin.purge_key in node.purge_keys
    bucket = urlsplit(origin.storage).hostname
    assert f"local/{bucket}" in " ".join(SERVICES["minio-bucket"]["entrypoint"])


def test_nginx_balances_over_the_edge_nodes() -> None:
    conf = (ROOT / "config" / "nginx.conf").read_text()
    upstream = re.findall(r"^\s*server (\S+):(\d+)", conf, re.M)
    assert {host for host, _ in upstream} == {"edge-1", "edge-2"}
    assert SERVICES["lb"]["volumes"] == ["./config/nginx.conf:/etc/nginx/nginx.conf:ro"]
