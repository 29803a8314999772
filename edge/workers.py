"""Back-pressure for transforms: a fixed pool of threads, a bounded queue, a memory budget.

At most `workers` transforms run at once (libvips releases the GIL, so threads use
every core); at most `queue` wait for a slot, beyond which a request is refused at once
with 503 + Retry-After rather than piling up. Each admitted transform also reserves an
estimate of its decode memory from a budget, so a burst of huge sources runs a few at a
time while small images keep flowing. Waiting is bounded by the request's deadline.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import TypeVar

from cdn_common.errors import GatewayTimeout, Unavailable

T = TypeVar("T")


class QueueFull(Unavailable):
    message = "too many transforms waiting; retry shortly"


class TransformPool:
    def __init__(
        self, workers: int, queue: int, memory_budget: int, *, processes: bool = False
    ) -> None:
        self.workers = workers
        self.queue = queue
        self.memory_budget = memory_budget
        self._executor: Executor
        if processes:
            self._executor = ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_process
            )
        else:
            self._executor = ThreadPoolExecutor(workers, thread_name_prefix="transform")
        self._slots = asyncio.Semaphore(workers)
        self._memory_free = memory_budget
        self._memory_changed = asyncio.Condition()
        self.waiting = 0
        self.running = 0

    async def run(self, fn: Callable[..., T], *args: object, cost: int, deadline: float) -> T:
        if self._slots.locked() and self.waiting >= self.queue:
            raise QueueFull(retry_after=1)
        cost = min(cost, self.memory_budget)  # a source over the budget runs alone
        self.waiting += 1
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                # memory first: a big job waiting for room must not sit on a slot that
                # a small one could use
                await self._reserve(cost)
                try:
                    await self._slots.acquire()
                except BaseException:
                    await self._release(cost)
                    raise
        except TimeoutError:
            raise GatewayTimeout("timed out waiting for a transform slot") from None
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        finally:
            self.running -= 1
            await self._release(cost)
            self._slots.release()

    async def _reserve(self, cost: int) -> None:
        async with self._memory_changed:
            await self._memory_changed.wait_for(lambda: self._memory_free >= cost)
            self._memory_free -= cost

    async def _release(self, cost: int) -> None:
        async with self._memory_changed:
            self._memory_free += cost
            self._memory_changed.notify_all()

    @property
    def memory_reserved(self) -> int:
        return self.memory_budget - self._memory_free

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _init_process() -> None:
    import pyvips

    pyvips.cache_set_max(0)
    pyvips.concurrency_set(1)


def configure_libvips(workers: int) -> None:
    """One libvips thread per transform when the pool already fills the cores."""
    import pyvips

    if workers >= (os.cpu_count() or 1):
        pyvips.concurrency_set(1)
