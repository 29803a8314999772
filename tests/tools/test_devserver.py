"""`make run` fails at once, and says what to do, when its port is taken."""

from __future__ import annotations

import socket

import pytest

from tools import devserver


def test_a_busy_port_is_a_clear_error_not_a_traceback_in_a_log(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setattr(devserver, "EDGE_PORT", port)
        assert devserver.main() == 1
    assert capsys.readouterr().err.strip() == f"port {port} is in use; set EDGE_PORT"
