"""Edges over real sockets for the tests: built from settings, read through /metrics,
and the disk tier's files once written."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx

from edge.clock import Clock, system_clock
from edge.compose import build_app
from edge.settings import EdgeSettings
from tests.servers import ServerThread

PURGE = {"Authorization": "Bearer purge-key"}


def edge_for(
    server: ServerThread, loop: str = "asyncio", clock: Clock = system_clock, **overrides: Any
) -> ServerThread:
    values: dict[str, Any] = {
        "origin_url": server.url,
        "access_log": False,
        "purge_keys": "purge-key",
    }
    values.update(overrides)
    return ServerThread(build_app(EdgeSettings(**values), clock=clock), loop=loop)


def metric(edge: ServerThread, name: str) -> float:
    text = httpx.get(f"{edge.url}/metrics").text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def transforms(edge: ServerThread) -> float:
    """Transforms the edge has run, from its metrics."""
    text = httpx.get(f"{edge.url}/metrics").text
    return sum(
        float(v)
        for v in re.findall(r"^edge_transform_duration_seconds_count\S* (\S+)$", text, re.M)
    )


def files_in(directory: Path, count: int) -> list[Path]:
    """The cache files once `count` of them are written (writes are in the background)."""
    for _ in range(200):
        files = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix != ".tmp")
        if len(files) >= count:
            return files
        time.sleep(0.01)
    raise AssertionError(f"{count} cache files never appeared")
