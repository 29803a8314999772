"""A stand-in for a libvips crash, which no image can be trusted to cause here.

`render` is the edge's own, except for sources ending in CRASH: in a worker process
it kills the process with SIGSEGV, as a decoder bug would; in the edge's process (where
a crash would take the whole edge down) it records that it ran there and raises.
Each call on such a source appends a line to the file named by CRASH_LOG.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from edge.pipeline.render import render as real_render

CRASH = b"CRASH"


def render(data: bytes, *args: Any) -> Any:
    if data.endswith(CRASH):
        in_edge = str(os.getpid()) == os.environ["CRASH_EDGE_PID"]
        with open(os.environ["CRASH_LOG"], "a") as log:
            log.write("edge process\n" if in_edge else "worker\n")
        if in_edge:
            raise RuntimeError("a crashing source was decoded in the edge's process")
        signal.raise_signal(signal.SIGSEGV)
    return real_render(data, *args)
