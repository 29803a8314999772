"""The container image is built the way the tests install the project (no second list
of dependencies), and its health check is a working command. No Docker engine runs
here: `make lint` runs hadolint on the Dockerfile; these check what it refers to."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from tests.servers import ServerThread, free_port
from tools import healthcheck

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def instructions(name: str) -> list[str]:
    joined = DOCKERFILE.replace("\\\n", " ")
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.startswith(name + " ")]


def test_the_image_installs_the_project_from_pyproject_only() -> None:
    installs = [run for run in instructions("RUN") if "pip install" in run]
    assert installs == ["/opt/imagecdn/bin/pip install --no-cache-dir ."]
    copied = {part.rstrip("/") for copy in instructions("COPY") for part in copy.split()[:-1]}
    packages = {
        name.rstrip("*") for name in PROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    assert packages <= copied
    assert "pyproject.toml" in copied and "config" in copied


def test_the_base_python_satisfies_requires_python() -> None:
    image = re.search(r"python:(\d+)\.(\d+)-slim", DOCKERFILE)
    assert image is not None
    minimum = re.match(r">=(\d+)\.(\d+)", PROJECT["project"]["requires-python"])
    assert minimum is not None
    assert tuple(map(int, image.groups())) >= tuple(map(int, minimum.groups()))


def test_the_image_runs_as_a_non_root_user_with_a_health_check() -> None:
    assert instructions("USER") == ["10001"]
    assert "tools.healthcheck" in instructions("HEALTHCHECK")[0]
    assert instructions("ENTRYPOINT") == ['["python", "-m"]']
    assert instructions("CMD")[-1].startswith('["edge", "--config", "/etc/imagecdn/')


def test_the_health_check_passes_when_a_service_answers_and_fails_otherwise() -> None:
    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        status = 200 if scope["path"] == "/healthz" else 404
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    dead = f"http://127.0.0.1:{free_port()}/healthz"
    with ServerThread(app) as server:
        assert healthcheck.main([dead, f"{server.url}/healthz"]) == 0
        assert healthcheck.main([f"{server.url}/other"]) == 1
    assert healthcheck.main([dead]) == 1
