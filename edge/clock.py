"""Wall-clock time as an injected seam: freshness, stale windows and negative caching
read `Clock`, never `time.time` directly, so tests move time instead of sleeping.

Deadlines and durations stay on `time.monotonic` (the event loop's own clock)."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]  # seconds since the epoch

system_clock: Clock = time.time


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
