from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cdn_common.asgi import AccessMiddleware
from origin.app import build_app
from origin.settings import OriginSettings
from origin.stores import open_store

KEYS = "admin:admin-secret,reader:reader-secret:read,users:users-secret:write+delete:users/"
ADMIN = {"Authorization": "Bearer admin-secret"}
READER = {"Authorization": "Bearer reader-secret"}
USERS = {"Authorization": "Bearer users-secret"}


def make_settings(blob_dir: Path, **overrides: Any) -> OriginSettings:
    values: dict[str, Any] = {
        "storage": f"file://{blob_dir}",
        "api_keys": KEYS,
        "max_upload_mb": 2,
        "access_log": True,
    }
    values.update(overrides)
    return OriginSettings(**values)


def make_app(blob_dir: Path, **overrides: Any) -> AccessMiddleware:
    settings = make_settings(blob_dir, **overrides)
    return build_app(settings, open_store(settings.storage))


@pytest.fixture
async def client(blob_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(blob_dir))
    async with httpx.AsyncClient(transport=transport, base_url="http://origin") as made:
        yield made
