"""Every profile in config/ starts the service it configures, with only its addresses
replaced (ports, URLs of its neighbours, directories), so none can drift from the
settings schema."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cdn_common.settings import ConfigError, load_settings
from edge.security.signing import signed_path
from edge.settings import EdgeSettings
from origin.samples import write_samples
from origin.settings import OriginSettings
from tests.images import jpeg
from tests.servers import MotoServer, PythonService, ServiceProcess

CONFIG = Path(__file__).resolve().parent.parent / "config"
PROFILES = sorted(CONFIG.glob("*.toml"))
SERVICES = {"edge": EdgeSettings, "origin": OriginSettings}
KEY = "profile-test-key"


def sections(profile: Path) -> dict[str, dict[str, object]]:
    return tomllib.loads(profile.read_text())


def test_the_profiles_the_docs_promise_exist() -> None:
    assert {p.stem for p in PROFILES} >= {"default", "sidecar", "edge-node", "shield", "origin-s3"}


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_every_profile_is_valid_settings(profile: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tables = sections(profile)
    assert tables and set(tables) <= set(SERVICES), "a profile holds [edge] and/or [origin]"
    if tables.get("edge", {}).get("allow_unsigned") is False:
        # signed-only with no key would refuse every URL: such a profile does not start
        with pytest.raises(ConfigError, match="EDGE_SIGNING_KEYS"):
            load_settings(SERVICES["edge"], profile)
        monkeypatch.setenv("EDGE_SIGNING_KEYS", KEY)  # secrets come from the environment
    for service, values in tables.items():
        settings = load_settings(SERVICES[service], profile)
        for name, value in values.items():  # nothing silently ignored
            got = getattr(settings, name)
            assert got == (tuple(value) if isinstance(value, list) else value), name


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PythonService]:
    """The default profile's origin, over a seeded directory."""
    root = tmp_path_factory.mktemp("profiles")
    write_samples(root / "blobs")
    service = PythonService(
        "origin",
        {"ORIGIN_STORAGE": f"file://{root / 'blobs'}", "ORIGIN_ACCESS_LOG": "false"},
        log=root / "origin.log",
        config=CONFIG / "default.toml",
    ).start()
    yield service
    service.stop()


@pytest.fixture(scope="module")
def redis() -> Iterator[ServiceProcess]:
    server = ServiceProcess("redis").start()
    yield server
    server.stop()


def edge_from(profile: Path, origin: PythonService, tmp_path: Path, **more: str) -> PythonService:
    values = sections(profile)["edge"]
    tmp_path.mkdir(parents=True, exist_ok=True)
    env = {
        "EDGE_ORIGIN_URL": origin.url,
        "EDGE_CACHE_DIR": str(tmp_path / "cache"),
        "EDGE_SIGNING_KEYS": KEY,
        "EDGE_ACCESS_LOG": "false",
    }
    env.update(more)
    assert set(more) <= {f"EDGE_{name.upper()}" for name in values}
    return PythonService("edge", env, log=tmp_path / "edge.log", config=profile)


@pytest.mark.parametrize(
    "profile",
    [p for p in PROFILES if "edge" in sections(p) and p.stem != "edge-node"],
    ids=lambda p: p.stem,
)
def test_each_edge_profile_starts_and_resizes(
    profile: Path, origin: PythonService, tmp_path: Path
) -> None:
    edge = edge_from(profile, origin, tmp_path).start()
    try:
        assert httpx.get(f"{edge.url}/readyz").status_code == 200
        response = httpx.get(edge.url + signed_path(KEY, "/w=64/samples/testcard.jpg"))
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/jpeg"
        if sections(profile)["edge"].get("allow_unsigned") is False:
            assert httpx.get(f"{edge.url}/_/w=64/samples/testcard.jpg").status_code == 403
    finally:
        edge.stop()


def test_edge_node_profile_uses_its_shield_and_the_shared_tier(
    origin: PythonService, redis: ServiceProcess, tmp_path: Path
) -> None:
    shield = edge_from(CONFIG / "shield.toml", origin, tmp_path / "shield").start()
    try:
        node = edge_from(
            CONFIG / "edge-node.toml",
            origin,
            tmp_path / "node",
            EDGE_PARENT_URL=shield.url,
            EDGE_SHARED_CACHE_URL=redis.url,
        ).start()
        try:
            url = node.url + signed_path(KEY, "/w=80/samples/testcard.jpg")
            assert httpx.get(url).status_code == 200
            metrics = httpx.get(f"{node.url}/metrics").text
            assert 'edge_cache_results_total{result="parent"} 1.0' in metrics
            assert "edge_shared_cache_available 1.0" in metrics
        finally:
            node.stop()
    finally:
        shield.stop()


def test_origin_s3_profile_starts_over_s3(tmp_path: Path, s3_env: None) -> None:
    profile = CONFIG / "origin-s3.toml"
    bucket = str(sections(profile)["origin"]["storage"]).removeprefix("s3://").split("/")[0]
    moto = MotoServer().start()
    try:
        moto.create_bucket(bucket)
        origin = PythonService(
            "origin",
            {
                "ORIGIN_S3_ENDPOINT": moto.endpoint,
                "ORIGIN_PURGE_WEBHOOKS": "",
                "ORIGIN_API_KEYS": "w:w-secret",
                "ORIGIN_ACCESS_LOG": "false",
            },
            log=tmp_path / "origin.log",
            config=profile,
        ).start()
        try:
            assert httpx.get(f"{origin.url}/readyz").status_code == 200
            body = jpeg(120, 80)
            put = httpx.put(
                f"{origin.url}/a/b.jpg", content=body, headers={"Authorization": "Bearer w-secret"}
            )
            assert put.status_code == 201, put.text
            assert httpx.get(f"{origin.url}/a/b.jpg").content == body
        finally:
            origin.stop()
    finally:
        moto.stop()
