"""A stand-in for a libvips crash, which no image can be trusted to cause here.

`render` and `prepare` are the edge's own, except for sources ending in CRASH (for
`prepare`: when it is not given the header, so libvips would read it): in a worker process they
kill the process with SIGSEGV, as a decoder bug would; in the edge's process (where a
crash would take the whole edge down) they record that they ran there and raise.
Each such call appends a line to the file named by CRASH_LOG.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from edge.transform.render import prepare as real_prepare
from edge.transform.render import render as real_render

CRASH = b"CRASH"


def render(data: bytes | memoryview, *args: Any) -> Any:
    if data[-len(CRASH) :] == CRASH:  # a memoryview in a worker process
        _crash()
    return real_render(data, *args)


def prepare(data: bytes | memoryview, *args: Any) -> Any:
    if data[-len(CRASH) :] == CRASH and len(args) < 4:  # no header given: libvips reads it
        _crash()
    return real_prepare(data, *args)


def _crash() -> None:
    in_edge = str(os.getpid()) == os.environ["CRASH_EDGE_PID"]
    with open(os.environ["CRASH_LOG"], "a") as log:
        log.write("edge process\n" if in_edge else "worker\n")
    if in_edge:
        raise RuntimeError("a crashing source was decoded in the edge's process")
    signal.raise_signal(signal.SIGSEGV)
