"""Back-pressure for transforms: source bytes in flight, two lanes, a memory budget.

A request fetching a source for a transform reserves its size (from Content-Length,
before the body is read) from a budget of source bytes in flight (`hold`), so the
sources held by waiting requests are bounded in bytes, not by the queue length. Then
it reserves an estimate of its decode memory and takes a worker slot in its lane:
small jobs (estimate under `SMALL_JOB`) have `workers` slots and large ones at most one
per core, so thumbnails keep flowing while huge sources decode. (More large decodes than
cores only thrash the CPU caches: three 5120x2880 progressive JPEGs at once on two cores
took 372 ms of CPU each against 283 ms two at a time.) Small jobs run in one process per
core, each sent its next job while it runs one (up to `workers` in flight in all), so no
core waits for the event loop between jobs: on 2560 px JPEG -> JPEG with held sources
this made 96.5 req/s against 91.1 for one process per slot (9 alternated runs each).
A request waits only when its expected wait is under `max_wait_s`: the jobs ahead of it
in its lane times the lane's recent service time (an exponentially weighted mean of
finished jobs), over its slots. Otherwise it is refused at once with 503 and a
`Retry-After` of that expected wait, so a burst is shed in microseconds instead of
queueing ten seconds of work that clients (or a retrying proxy) will have given up on.
`queue` stays as a hard cap on waiters. Waiting is bounded by the request's deadline.

Jobs run in worker processes (`processes=True`, the default): libvips releases the GIL,
but pyvips' Python side between calls does not, and threads sharing it with the event
loop left a quarter of two cores idle in the transform benchmark. Jobs that must see
this process's memory (`here=True`: a decoded copy of a hot source) run in threads.
A worker that dies mid-job (edge/transform/procpool.py) fails that request alone: 422 when a
signal such as SIGSEGV ended it (the image crashed the decoder), 503 + Retry-After when
SIGKILL did (the OOM killer, an operator), 500 otherwise; the next job starts a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from cdn_common.cpus import usable_cpus
from cdn_common.errors import GatewayTimeout, HTTPError, Unavailable
from edge.cache.coalesce import ClientGone
from edge.security.limits import OverMemory
from edge.transform.procpool import ProcessPool, WorkerDied

T = TypeVar("T")
SMALL_JOB = 64 * 1024 * 1024  # decode estimate below which a job takes the small lane
WORKER_NICE = 10
SERVICE_WEIGHT = 0.2  # of the newest job in a lane's mean service time


class QueueFull(Unavailable):
    message = "too many transforms waiting; retry shortly"


class WorkerKilled(Unavailable):
    message = "transform worker was killed; retry shortly"


class DecoderCrashed(HTTPError):
    status = 422
    message = "image crashed the decoder"


class TransformPool:
    def __init__(
        self,
        workers: int,
        queue: int,
        memory_budget: int,
        *,
        source_budget: int = 256 * 1024 * 1024,
        processes: bool = False,
        max_wait_s: float = float("inf"),
        worker_memory: int = 0,
    ) -> None:
        self.queue = queue
        self.max_wait_s = max_wait_s
        large = min(workers, usable_cpus())
        self._slots = {"small": workers, "large": large}
        self.service_s = {"small": 0.0, "large": 0.0}  # mean seconds a job holds a slot
        self._waiting = {"small": 0, "large": 0}
        self.shed = 0  # refused because the expected wait was too long
        self.abandoned = 0  # dropped before starting: no one waited for them any more
        self.stopped = 0  # killed past their deadline
        # worker processes that died mid-job, by cause (each is replaced on the next job)
        self.worker_deaths = {"crashed": 0, "killed": 0, "exited": 0}
        self._lanes = {"small": asyncio.Semaphore(workers), "large": asyncio.Semaphore(large)}
        self._threads = ThreadPoolExecutor(
            workers + large, thread_name_prefix="transform", initializer=_lower_thread
        )
        # each lane has its own processes: a process keeps the heap of the largest image it
        # decoded, so only the `large` ones grow to 5K sizes (one shared pool: 1,118 MB for
        # the 64-client 5K flood, as every process took a large job in turn; malloc_trim
        # after each cost 40% of the 5K throughput in page faults)
        # small jobs: one process per core (at most), each given its next job before it
        # ends the current one, instead of a process per slot time-sharing the cores
        depth = -(-workers // large)
        init = functools.partial(_init_process, worker_memory)
        self._processes = (
            {
                "small": ProcessPool(large, init, depth=depth),
                "large": ProcessPool(large, init),
            }
            if processes
            else {}
        )
        self._memory = ByteBudget(memory_budget)
        self.sources = ByteBudget(source_budget)
        self.waiting = 0
        self.running = 0

    def expected_wait(self, kind: str) -> float:
        """Seconds a job joining `kind`'s queue now can expect to wait for a slot."""
        ahead = self._waiting[kind] + 1
        return ahead * self.service_s[kind] / self._slots[kind]

    def _enter_queue(self, kind: str = "small") -> None:
        if self.waiting >= self.queue:
            raise QueueFull(retry_after=1)
        wait = self.expected_wait(kind)
        if wait > self.max_wait_s:
            self.shed += 1
            raise QueueFull(retry_after=max(1, math.ceil(wait)))
        self.waiting += 1
        self._waiting[kind] += 1

    def _leave_queue(self, kind: str = "small") -> None:
        self.waiting -= 1
        self._waiting[kind] -= 1

    async def hold(self, size: int, deadline: float) -> int:
        """Reserve room for `size` bytes of source; returns what was reserved."""
        size = self.sources.clamp(size)
        if self.sources.free >= size:
            self.sources.free -= size
            return size
        self._enter_queue()
        try:
            await _before(deadline, self.sources.take(size))
        finally:
            self._leave_queue()
        return size

    async def release_source(self, size: int) -> None:
        await self.sources.give(size)

    async def run(
        self,
        fn: Callable[..., T],
        *args: object,
        cost: int,
        deadline: float,
        here: bool = False,
        wanted: Callable[[], bool] | None = None,
    ) -> T:
        """Run `fn(*args)` in a worker once its memory and a slot in its lane are free;
        `here`: in a thread of this process even when the pool runs processes. A job
        that had to wait is dropped when its turn comes if `wanted()` says no one waits
        for it any more. In a worker process, a job past `deadline` is stopped: its
        process is killed (and replaced), and the caller gets 504."""
        cost = self._memory.clamp(cost)  # a source over the budget runs alone
        kind = "small" if cost < SMALL_JOB else "large"
        lane = self._lanes[kind]
        processes = None if here else self._processes.get(kind)
        if self._memory.free >= cost and not lane.locked():
            self._memory.free -= cost  # room now: no queueing (no await until acquired)
            await lane.acquire()
            return await self._execute(processes, fn, args, kind, cost, deadline)
        self._enter_queue(kind)
        try:
            # memory first: a big job waiting for room must not sit on a slot
            await _before(deadline, self._memory.take(cost))
            try:
                await _before(deadline, lane.acquire())
            except BaseException:
                await self._memory.give(cost)
                raise
        finally:
            self._leave_queue(kind)
        if wanted is not None and not wanted():
            self.abandoned += 1
            self._lanes[kind].release()
            await self._memory.give(cost)
            raise ClientGone()
        return await self._execute(processes, fn, args, kind, cost, deadline)

    async def _execute(
        self,
        processes: ProcessPool | None,
        fn: Callable[..., T],
        args: tuple[object, ...],
        kind: str,
        cost: int,
        deadline: float,
    ) -> T:
        self.running += 1
        started = time.monotonic()
        try:
            if processes is None:
                return await asyncio.get_running_loop().run_in_executor(self._threads, fn, *args)
            try:
                return await processes.run(fn, *args, deadline=deadline)
            except MemoryError:  # raised in the worker, under its ceiling
                raise OverMemory() from None
            except TimeoutError:
                self.stopped += 1
                raise GatewayTimeout("transform timed out: stopped") from None
            except WorkerDied as died:
                self.worker_deaths[_death(died)] += 1
                raise _died_error(died) from None
        finally:
            self.running -= 1
            held = time.monotonic() - started
            mean = self.service_s[kind]
            self.service_s[kind] = held if not mean else mean + SERVICE_WEIGHT * (held - mean)
            self._lanes[kind].release()
            await self._memory.give(cost)

    @property
    def memory_reserved(self) -> int:
        return self._memory.total - self._memory.free

    def close(self) -> None:
        for pool in self._processes.values():
            pool.close()
        self._threads.shutdown(wait=False, cancel_futures=True)


def _death(died: WorkerDied) -> str:
    if died.signal == signal.SIGKILL:
        return "killed"
    return "crashed" if died.signal is not None else "exited"


def _died_error(died: WorkerDied) -> HTTPError:
    if died.signal == signal.SIGKILL:
        return WorkerKilled()
    if died.signal is not None:
        return DecoderCrashed()
    return HTTPError()


class ByteBudget:
    """An async semaphore counted in bytes."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        self._changed = asyncio.Condition()

    def clamp(self, size: int) -> int:
        return max(0, min(size, self.total))  # more than the whole budget waits to run alone

    async def take(self, size: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.free >= size)
            self.free -= size

    async def give(self, size: int) -> None:
        async with self._changed:
            self.free += size
            self._changed.notify_all()


async def _before(deadline: float, waiting: object) -> None:
    try:
        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
            await waiting  # type: ignore[misc]
    except TimeoutError:
        raise GatewayTimeout("timed out waiting for a transform slot") from None


def _lower_thread() -> None:
    """A transform thread of the edge process, below its event loop (Linux schedules
    threads one by one, so a thread's own nice value applies to it alone)."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICE)


def _init_process(memory: int = 0) -> None:
    """A worker's set-up. `memory`: its address-space ceiling (RLIMIT_AS) in bytes, so a
    decode that runs away fails in its worker with MemoryError (413) instead of taking
    the host; 0 for none."""
    import resource

    import pyvips

    from cdn_common.serve import limit_malloc_arenas

    if memory:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    # below the event loop: where transforms and hits share cores, the scheduler gives
    # the hit path its turn first (idle cores still go to transforms in full)
    os.nice(WORKER_NICE)
    limit_malloc_arenas()
    pyvips.cache_set_max(0)
    pyvips.concurrency_set(1)


def configure_libvips(workers: int) -> None:
    """One libvips thread per transform when the pool already fills the cores."""
    import pyvips

    if workers >= usable_cpus():
        pyvips.concurrency_set(1)
