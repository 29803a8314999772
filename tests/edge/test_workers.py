"""The transform pool: slots, a bounded queue, a memory budget, deadlines."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from cdn_common.errors import GatewayTimeout
from edge.workers import QueueFull, TransformPool

pytestmark = pytest.mark.anyio


class Tracker:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def job(self, seconds: float) -> str:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        time.sleep(seconds)
        with self.lock:
            self.now -= 1
        return "done"


def later(seconds: float) -> float:
    return time.monotonic() + seconds


async def test_runs_at_most_workers_at_once() -> None:
    pool = TransformPool(workers=2, queue=10, memory_budget=100)
    tracker = Tracker()
    results = await asyncio.gather(
        *(pool.run(tracker.job, 0.05, cost=1, deadline=later(5)) for _ in range(6))
    )
    assert results == ["done"] * 6
    assert tracker.peak == 2
    pool.close()


async def test_full_queue_refuses_at_once() -> None:
    pool = TransformPool(workers=1, queue=1, memory_budget=100)
    tracker = Tracker()
    running = asyncio.ensure_future(pool.run(tracker.job, 0.3, cost=1, deadline=later(5)))
    await asyncio.sleep(0.05)
    waiting = asyncio.ensure_future(pool.run(tracker.job, 0.01, cost=1, deadline=later(5)))
    await asyncio.sleep(0.01)
    started = time.monotonic()
    with pytest.raises(QueueFull) as caught:
        await pool.run(tracker.job, 0.01, cost=1, deadline=later(5))
    assert time.monotonic() - started < 0.1
    assert caught.value.status == 503 and caught.value.headers["Retry-After"] == "1"
    assert await running == "done" and await waiting == "done"
    pool.close()


async def test_waiting_past_the_deadline_is_504() -> None:
    pool = TransformPool(workers=1, queue=5, memory_budget=100)
    tracker = Tracker()
    running = asyncio.ensure_future(pool.run(tracker.job, 0.4, cost=1, deadline=later(5)))
    await asyncio.sleep(0.05)
    with pytest.raises(GatewayTimeout):
        await pool.run(tracker.job, 0.01, cost=1, deadline=later(0.1))
    await running
    assert pool.waiting == 0
    pool.close()


async def test_memory_budget_serialises_big_jobs_and_lets_small_ones_through() -> None:
    pool = TransformPool(workers=4, queue=10, memory_budget=100)
    big, small = Tracker(), Tracker()
    bigs = [pool.run(big.job, 0.1, cost=60, deadline=later(5)) for _ in range(3)]
    smalls = [pool.run(small.job, 0.02, cost=10, deadline=later(5)) for _ in range(3)]
    started = time.monotonic()
    await asyncio.gather(*bigs, *smalls)
    assert big.peak == 1, "two 60-unit jobs never fit a 100-unit budget together"
    assert small.peak >= 2
    assert time.monotonic() - started >= 0.3
    assert pool.memory_reserved == 0
    pool.close()


async def test_a_job_over_the_whole_budget_runs_alone() -> None:
    pool = TransformPool(workers=2, queue=10, memory_budget=100)
    tracker = Tracker()
    assert await pool.run(tracker.job, 0.01, cost=10_000, deadline=later(5)) == "done"
    pool.close()
