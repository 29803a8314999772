"""The transform pool: source bytes in flight, a bounded queue, two lanes, a memory budget."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import zlib

import pytest

from cdn_common.errors import GatewayTimeout, HTTPError
from edge.transform.pool import SMALL_JOB, QueueFull, TransformPool
from edge.transform.procpool import ProcessPool, WorkerDied

pytestmark = pytest.mark.anyio
BIG = SMALL_JOB * 2


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


async def test_a_lane_runs_at_most_workers_at_once() -> None:
    pool = TransformPool(workers=2, queue=10, memory_budget=10 * BIG)
    tracker = Tracker()

    jobs = [pool.run(tracker.job, 0.05, cost=1, deadline=later(5)) for _ in range(6)]
    assert await asyncio.gather(*jobs) == ["done"] * 6
    assert tracker.peak == 2
    pool.close()


async def test_full_queue_refuses_at_once() -> None:
    pool = TransformPool(workers=1, queue=1, memory_budget=BIG, source_budget=1000)
    assert await pool.hold(1000, later(5)) == 1000  # the budget is taken
    waiter = asyncio.ensure_future(pool.hold(10, later(5)))  # the one place in the queue
    await asyncio.sleep(0.01)
    started = time.monotonic()
    with pytest.raises(QueueFull) as caught:
        await pool.hold(10, later(5))
    assert await pool.run(Tracker().job, 0.01, cost=1, deadline=later(5)) == "done", (
        "a free worker does not queue"
    )
    assert time.monotonic() - started < 0.1
    assert caught.value.status == 503 and caught.value.headers["Retry-After"] == "1"
    await pool.release_source(1000)
    assert await waiter == 10
    pool.close()


async def test_source_bytes_wait_for_room_within_the_deadline() -> None:
    pool = TransformPool(workers=1, queue=5, memory_budget=BIG, source_budget=1000)
    await pool.hold(800, later(5))
    with pytest.raises(GatewayTimeout):
        await pool.hold(300, later(0.1))
    assert pool.waiting == 0
    await pool.release_source(800)
    assert await pool.hold(5000, later(1)) == 1000, "a source over the budget holds it all"
    pool.close()


async def test_big_jobs_share_the_budget_while_small_ones_flow() -> None:
    pool = TransformPool(workers=2, queue=10, memory_budget=int(BIG * 1.5))
    big, small = Tracker(), Tracker()
    bigs = [pool.run(big.job, 0.15, cost=BIG, deadline=later(5)) for _ in range(3)]
    smalls = [pool.run(small.job, 0.02, cost=1024, deadline=later(5)) for _ in range(4)]
    started = time.monotonic()
    await asyncio.gather(*bigs, *smalls)
    assert big.peak == 1, "two big jobs never fit the budget together"
    assert small.peak == 2, "small jobs have their own lane"
    assert time.monotonic() - started >= 0.45
    assert pool.memory_reserved == 0
    pool.close()


async def test_a_job_over_the_whole_budget_runs_alone() -> None:
    pool = TransformPool(workers=2, queue=10, memory_budget=100)
    assert await pool.run(Tracker().job, 0.01, cost=10 * BIG, deadline=later(5)) == "done"
    pool.close()


async def test_worker_processes_keep_large_jobs_to_their_own_processes() -> None:
    # a process keeps the heap of the largest image it decoded: only the large lane's
    # processes (at most one per core) may grow to it; `here` jobs stay in this process
    pool = TransformPool(workers=2, queue=20, memory_budget=10 * BIG, processes=True)
    try:
        small = await asyncio.gather(
            *(pool.run(os.getpid, cost=1, deadline=later(60)) for _ in range(8))
        )
        large = await asyncio.gather(
            *(pool.run(os.getpid, cost=BIG, deadline=later(60)) for _ in range(8))
        )
        here = await pool.run(os.getpid, cost=BIG, deadline=later(60), here=True)
    finally:
        pool.close()
    assert set(small).isdisjoint(large)
    assert os.getpid() not in {*small, *large} and here == os.getpid()
    assert len(set(large)) <= min(2, os.cpu_count() or 1)


@pytest.mark.parametrize(
    ("end", "status"),
    [(signal.SIGSEGV, 422), (signal.SIGABRT, 422), (signal.SIGKILL, 503)],
    ids=["segfault", "abort", "killed"],
)
async def test_a_worker_that_dies_fails_its_job_alone(end: signal.Signals, status: int) -> None:
    # a decoder crash is the image's fault (422); SIGKILL is the OOM killer or an operator
    # (503, try again); either way the pool starts a new process for the next job
    pool = TransformPool(workers=1, queue=5, memory_budget=BIG, processes=True)
    try:
        first = await pool.run(os.getpid, cost=1, deadline=later(60))
        with pytest.raises(HTTPError) as caught:
            await pool.run(signal.raise_signal, end, cost=1, deadline=later(60))
        after = await pool.run(os.getpid, cost=1, deadline=later(60))
    finally:
        pool.close()
    assert caught.value.status == status
    assert after != first and pool.running == 0 and pool.memory_reserved == 0


async def test_a_worker_killed_while_idle_is_replaced_before_a_job_reaches_it() -> None:
    pool = TransformPool(workers=1, queue=5, memory_budget=BIG, processes=True)
    try:
        first = await pool.run(os.getpid, cost=1, deadline=later(60))
        os.kill(first, signal.SIGKILL)
        await asyncio.sleep(0.2)  # the socket reports the end
        after = await pool.run(os.getpid, cost=1, deadline=later(60))
    finally:
        pool.close()
    assert after != first


async def test_a_job_sent_just_after_an_idle_worker_died_runs_elsewhere() -> None:
    # no pause for the socket to report the end: the job must not get WorkerDied
    pool = TransformPool(workers=1, queue=5, memory_budget=BIG, processes=True)
    try:
        first = await pool.run(os.getpid, cost=1, deadline=later(60))
        os.kill(first, signal.SIGKILL)
        while os.path.exists(f"/proc/{first}/stat") and "Z" not in _state(first):
            time.sleep(0.001)  # dead (a zombie), its socket's end not yet read
        after = await pool.run(os.getpid, cost=1, deadline=later(60))
    finally:
        pool.close()
    assert after != first


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


async def test_a_cancelled_caller_leaves_its_worker_in_step() -> None:
    # the worker finishes the abandoned job; the next caller gets its own answer
    pool = TransformPool(workers=1, queue=5, memory_budget=BIG, processes=True)
    try:
        first = await pool.run(os.getpid, cost=1, deadline=later(60))
        slow = asyncio.ensure_future(pool.run(time.sleep, 0.3, cost=1, deadline=later(60)))
        await asyncio.sleep(0.1)
        slow.cancel()
        answers = await asyncio.gather(
            pool.run(os.getpid, cost=1, deadline=later(60)),
            pool.run(os.getcwd, cost=1, deadline=later(60)),
        )
    finally:
        pool.close()
    assert answers == [first, os.getcwd()]
    assert pool.running == 0


def described(*args: object) -> list[tuple[str, int]]:
    """Run in a worker: each argument's type and CRC."""
    return [(type(arg).__name__, zlib.crc32(arg)) for arg in args]  # type: ignore[arg-type]


async def test_large_bytes_reach_a_worker_out_of_band_and_intact() -> None:
    # sources go down the socket as they are and arrive as read-only views of the
    # worker's receive buffer; jobs of other sizes after them must not see stale bytes
    big, other, small = os.urandom(300_000), os.urandom(100_000), os.urandom(1000)
    pool = TransformPool(workers=1, queue=5, memory_budget=BIG, processes=True)
    try:
        first = await pool.run(described, big, small, other, cost=1, deadline=later(60))
        echoed = await pool.run(bytes, other, cost=1, deadline=later(60))
        again = await pool.run(described, small, big, cost=1, deadline=later(60))
    finally:
        pool.close()
    crc = zlib.crc32
    assert first == [("memoryview", crc(big)), ("bytes", crc(small)), ("memoryview", crc(other))]
    assert echoed == other
    assert again == [("bytes", crc(small)), ("memoryview", crc(big))]


def nothing() -> None:
    """A worker initializer that does nothing."""


def pid_and(value: int, seconds: float = 0.0) -> tuple[int, int]:
    time.sleep(seconds)
    return os.getpid(), value


def crash_after(seconds: float) -> None:
    time.sleep(seconds)
    signal.raise_signal(signal.SIGSEGV)


async def test_workers_given_two_jobs_at_once_answer_each_its_own() -> None:
    # with depth 2 the next job waits in the worker's socket: answers come back in order
    # and must reach the right callers, cancelled ones included
    pool = ProcessPool(2, nothing, depth=2)
    try:
        slow = asyncio.ensure_future(pool.run(pid_and, -1, 0.3))
        await asyncio.sleep(0.1)
        jobs = [pool.run(pid_and, i, 0.01 * (i % 3)) for i in range(20)]
        slow.cancel()
        answers = await asyncio.gather(*jobs)
    finally:
        pool.close()
    assert [value for _, value in answers] == list(range(20))
    assert len({pid for pid, _ in answers}) == 2


async def test_a_job_queued_behind_a_crash_runs_in_a_new_worker() -> None:
    pool = ProcessPool(1, nothing, depth=2)
    try:
        crashing = asyncio.ensure_future(pool.run(crash_after, 0.3))
        await asyncio.sleep(0.1)  # the worker is running it
        (worker,) = pool._workers
        queued = asyncio.ensure_future(pool.run(pid_and, 7))
        await asyncio.sleep(0.05)
        assert len(worker.jobs) == 2, "the second job went to the busy worker's socket"
        with pytest.raises(WorkerDied) as died:
            await crashing
        pid, value = await queued
    finally:
        pool.close()
    assert died.value.signal == signal.SIGSEGV
    assert value == 7 and pid != worker.process.pid


async def test_a_miss_is_admitted_only_when_its_expected_wait_is_short() -> None:
    """Admission by time: once jobs are known to take 0.2 s, a job that would queue
    behind two of them on one slot (0.4 s) is refused at once with a Retry-After."""
    pool = TransformPool(workers=1, queue=100, memory_budget=10 * BIG, max_wait_s=0.3)
    tracker = Tracker()
    assert await pool.run(tracker.job, 0.2, cost=1, deadline=later(5)) == "done"
    assert pool.service_s["small"] == pytest.approx(0.2, abs=0.1)
    running = asyncio.ensure_future(pool.run(tracker.job, 0.2, cost=1, deadline=later(5)))
    await asyncio.sleep(0.01)
    queued = asyncio.ensure_future(pool.run(tracker.job, 0.2, cost=1, deadline=later(5)))
    await asyncio.sleep(0.01)  # one waiting: expected 0.2 s for it, 0.4 s for the next
    started = time.monotonic()
    with pytest.raises(QueueFull) as refused:
        await pool.run(tracker.job, 0.2, cost=1, deadline=later(5))
    assert time.monotonic() - started < 0.05
    assert refused.value.status == 503 and refused.value.headers["Retry-After"] == "1"
    assert pool.shed == 1
    assert await asyncio.gather(running, queued) == ["done", "done"]
    pool.close()


async def test_a_job_past_its_deadline_is_stopped_and_its_worker_replaced() -> None:
    pool = TransformPool(workers=1, queue=10, memory_budget=10 * BIG, processes=True)
    try:
        assert await pool.run(os.getpid, cost=1, deadline=later(30)) != os.getpid()
        started = time.monotonic()
        with pytest.raises(GatewayTimeout):
            await pool.run(time.sleep, 30, cost=1, deadline=later(0.5))
        assert time.monotonic() - started < 1.5
        assert pool.stopped == 1
        await asyncio.sleep(0.2)
        # the sleeping process is gone; the next job gets a new one
        assert await pool.run(zlib.crc32, b"abc", cost=1, deadline=later(30)) == zlib.crc32(b"abc")
    finally:
        pool.close()


async def test_a_queued_job_no_one_waits_for_is_dropped_before_it_starts() -> None:
    pool = TransformPool(workers=1, queue=10, memory_budget=10 * BIG)
    tracker = Tracker()
    busy = asyncio.ensure_future(pool.run(tracker.job, 0.2, cost=1, deadline=later(5)))
    await asyncio.sleep(0.01)
    wanted = True
    queued = asyncio.ensure_future(
        pool.run(tracker.job, 0.2, cost=1, deadline=later(5), wanted=lambda: wanted)
    )
    await asyncio.sleep(0.01)
    wanted = False  # its clients went away while it waited
    with pytest.raises(HTTPError) as dropped:
        await queued
    assert dropped.value.status == 499
    assert await busy == "done" and pool.abandoned == 1
    assert await pool.run(tracker.job, 0.01, cost=1, deadline=later(5)) == "done"  # slot freed
    pool.close()


async def test_a_job_over_the_worker_memory_ceiling_is_a_413_and_the_worker_goes_on() -> None:
    pool = TransformPool(
        workers=1, queue=10, memory_budget=10 * BIG, processes=True, worker_memory=1 << 30
    )
    try:
        with pytest.raises(HTTPError) as refused:
            await pool.run(bytearray, 2 << 30, cost=1, deadline=later(30))  # 2 GiB
        assert refused.value.status == 413
        assert "EDGE_WORKER_MEMORY_MB" in refused.value.public_message
        assert len(await pool.run(bytearray, 1 << 20, cost=1, deadline=later(30))) == 1 << 20
    finally:
        pool.close()
