from __future__ import annotations

import asyncio
import io
import json
import logging
import sys

import pytest

from cdn_common.logs import AccessLog, JSONFormatter


def test_access_lines_are_json_even_with_hostile_values() -> None:
    stream = io.BytesIO()
    log = AccessLog(stream)
    log.write({"path": '/a"b\n{"x":1}', "status": 200, "extra": object()})
    log.write({"path": "/ünïcödé", "status": 404})
    log.flush()
    lines = stream.getvalue().decode().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["path"] == '/a"b\n{"x":1}'
    assert first["logger"] == "access" and first["msg"] == "request"
    assert second["path"] == "/ünïcödé"
    assert first["time"][:4].isdigit() and first["time"].endswith("Z")


@pytest.mark.anyio
async def test_access_log_flushes_within_a_second() -> None:
    class Counting(io.BytesIO):
        flushes = 0

        def flush(self) -> None:
            Counting.flushes += 1

    stream = Counting()
    log = AccessLog(stream)
    log.FLUSH_AFTER = 0.05
    for _ in range(100):
        log.write({"status": 200})
    assert stream.getvalue() == b""
    await asyncio.sleep(0.2)
    assert Counting.flushes == 1, "one flush for a burst, not one per line"
    assert len(stream.getvalue().splitlines()) == 100
    for _ in range(2000):  # more than FLUSH_LINES: written without waiting
        log.write({"status": 200, "path": "/x" * 20})
    assert Counting.flushes >= 2


def test_formatter_includes_fields_and_exceptions() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.WARNING, "f", 1, "tier down", None, sys.exc_info())
    record.fields = {"tier": "disk"}
    line = json.loads(JSONFormatter().format(record))
    assert line["level"] == "warning"
    assert line["tier"] == "disk"
    assert line["msg"] == "tier down"
    assert "ValueError: boom" in line["exc"]
