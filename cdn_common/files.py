"""File helpers shared by the origin's store and uploads and the edge's disk tier."""

from __future__ import annotations

import os


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """All of `data` to `fd`: a write may take less than it was given (a signal, a file
    system nearly full), and what it left is written by the next call."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
