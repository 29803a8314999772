"""How many CPUs this process may actually use: its affinity mask, lowered by a cgroup
v2 CPU quota (`cpu.max`, as a container's `--cpus` sets it). `os.cpu_count()` counts the
host's, which in a 2-CPU container on a 64-core host sizes pools 32 times too large."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_quota(root: Path = CGROUP_ROOT) -> float | None:
    """The CPUs a cgroup v2 `cpu.max` allows ("max" or absent: no limit)."""
    own = Path("/proc/self/cgroup")
    try:
        relative = own.read_text().strip().splitlines()[0].split("::", 1)[1].lstrip("/")
    except (OSError, IndexError):
        relative = ""
    for directory in (root / relative, root):
        try:
            quota, period = (directory / "cpu.max").read_text().split()[:2]
        except (OSError, ValueError):
            continue
        if quota == "max":
            return None
        try:
            return int(quota) / int(period)
        except (ValueError, ZeroDivisionError):
            return None
    return None


def usable_cpus(root: Path = CGROUP_ROOT) -> int:
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = cgroup_quota(root)
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)
