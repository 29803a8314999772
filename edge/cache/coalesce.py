"""One fill per key at a time on this node (request coalescing).

The first request for a key starts the work as its own task; every request for that
key meanwhile awaits the same task, and gets its result or its error (no retry storm).
The task is shielded: a client that disconnects does not cancel the work the others
wait for, and the result is still cached when everyone has gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Coalescer(Generic[T]):
    def __init__(self) -> None:
        self._running: dict[str, asyncio.Task[T]] = {}

    def __len__(self) -> int:
        return len(self._running)

    def __contains__(self, key: str) -> bool:
        return key in self._running

    async def run(self, key: str, make: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """`make()`'s result for `key`, and whether it was another request's work."""
        task = self._running.get(key)
        if task is not None:
            return await asyncio.shield(task), True
        task = asyncio.ensure_future(make())
        self._running[key] = task
        task.add_done_callback(lambda done: self._forget(key, done))
        return await asyncio.shield(task), False

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
