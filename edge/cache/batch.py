"""Blocking work for the event loop, done in batches by one thread at a time."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger("edge.cache.batch")

J = TypeVar("J")
R = TypeVar("R")


class BatchWriter(Generic[J, R]):
    """Jobs queued from the event loop, done by one thread of the loop's default executor,
    as many as have queued by the time it takes them; each batch's results come back to
    `done` on the loop in one call.

    `asyncio.to_thread` per job costs the loop a task, two futures and a wake-up each way
    for every job: for the disk tier's writes it was 0.8 ms of the edge's CPU per
    transform, more than the write itself. Here a job is a list append under a lock, a
    thread is asked for only when none is at work, and a busy writer answers once per
    batch. `work` reports failures in its results; an exception from it is a bug,
    logged, and that batch's results are lost."""

    def __init__(self, work: Callable[[list[J]], list[R]], done: Callable[[list[R]], None]) -> None:
        self._work = work
        self._done = done
        self._lock = threading.Lock()
        self._jobs: list[J] = []
        self._busy = False  # a thread is taking batches (under the lock)
        self._queued = 0  # jobs not yet answered (on the loop only)
        self._waiters: list[asyncio.Future[None]] = []

    def put(self, job: J) -> None:
        self._queued += 1
        with self._lock:
            self._jobs.append(job)
            if self._busy:
                return
            self._busy = True
        loop = asyncio.get_running_loop()
        loop.run_in_executor(None, self._drain, loop)

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            with self._lock:
                batch, self._jobs = self._jobs, []
                if not batch:
                    self._busy = False
                    return
            try:
                results = self._work(batch)
            except Exception:
                log.exception("background batch failed")
                results = []
            try:
                loop.call_soon_threadsafe(self._answer, results, len(batch))
            except RuntimeError:  # the loop is closed: nobody is waiting
                with self._lock:
                    self._busy = False
                return

    def _answer(self, results: list[R], count: int) -> None:
        self._queued -= count
        self._done(results)
        if not self._queued:
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._waiters.clear()

    async def drained(self) -> None:
        """Wait until every job queued so far is answered."""
        if self._queued:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
