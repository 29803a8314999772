from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.compose import build_app
from edge.settings import EdgeSettings
from origin.app import build_app as build_origin
from origin.settings import OriginSettings
from origin.stores import open_store
from tests.servers import ServerThread

WRITE = {"Authorization": "Bearer w-secret"}


class Stack:
    def __init__(self, origin: ServerThread, blob_dir: Path) -> None:
        self.origin = origin
        self.blob_dir = blob_dir

    def put(self, key: str, data: bytes) -> None:
        response = httpx.put(f"{self.origin.url}/{key}", content=data, headers=WRITE)
        assert response.status_code in (200, 201), response.text

    def edge(self, **overrides: Any) -> ServerThread:
        values: dict[str, Any] = {"origin_url": self.origin.url, "access_log": False}
        values.update(overrides)
        return ServerThread(build_app(EdgeSettings(**values)))


@pytest.fixture
def stack(blob_dir: Path) -> Iterator[Stack]:
    settings = OriginSettings(storage=f"file://{blob_dir}", api_keys="w:w-secret", access_log=False)
    with ServerThread(build_origin(settings, open_store(settings.storage))) as origin:
        yield Stack(origin, blob_dir)
