"""One fill per key at a time on this node (request coalescing).

The first request for a key starts the work as its own task; every request for that
key meanwhile awaits the same task, and gets its result or its error (no retry storm).
The task is shielded: a client that disconnects does not cancel the work the others
wait for, and work that has started is still finished and cached when everyone has
gone. Waiters are counted (`wanted`), so work still queued can be dropped before it
starts when no one waits for it any more (`edge/transform/pool.py`), as imgproxy drops
a queued request whose context is done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from cdn_common.errors import HTTPError

T = TypeVar("T")


class ClientGone(HTTPError):
    """The waiter's client went away before the work was done (logged as nginx's 499)."""

    status = 499
    message = "client closed the connection"


class Coalescer(Generic[T]):
    def __init__(self) -> None:
        self._running: dict[str, asyncio.Task[T]] = {}
        self._waiters: dict[str, int] = {}

    def wanted(self, key: str) -> bool:
        """Whether anyone still waits for `key`'s work."""
        return self._waiters.get(key, 0) > 0

    def __len__(self) -> int:
        return len(self._running)

    def __contains__(self, key: str) -> bool:
        return key in self._running

    async def run(
        self,
        key: str,
        make: Callable[[], Awaitable[T]],
        gone: Callable[[], Awaitable[object]] | None = None,
    ) -> tuple[T, bool]:
        """`make()`'s result for `key`, and whether it was another request's work. When
        `gone()` completes first (the client disconnected), stop waiting: ClientGone."""
        task = self._running.get(key)
        collapsed = task is not None
        if task is None:
            task = asyncio.ensure_future(make())
            self._running[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))
        self._waiters[key] = self._waiters.get(key, 0) + 1
        try:
            if gone is None:
                return await asyncio.shield(task), collapsed
            return await _unless_gone(task, gone), collapsed
        finally:
            left = self._waiters[key] - 1
            if left:
                self._waiters[key] = left
            else:
                del self._waiters[key]

    def start(self, key: str, make: Callable[[], Awaitable[T]]) -> None:
        """Run `make()` in the background unless the same work is already running."""
        if key not in self._running:
            task = asyncio.ensure_future(make())
            self._running[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))

    def _forget(self, key: str, task: asyncio.Task[T]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if not task.cancelled():
            task.exception()  # retrieved: a background failure is not "never retrieved"


async def _unless_gone(task: asyncio.Task[T], gone: Callable[[], Awaitable[object]]) -> T:
    watch = asyncio.ensure_future(gone())
    try:
        await asyncio.wait((task, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if not task.done():
        raise ClientGone()
    return task.result()
