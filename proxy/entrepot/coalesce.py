"""Fetch once for many askers (singleflight).

The first caller for a key starts the work as its own task; later callers for the same key
await the same result. Callers are shielded from each other: a client that disconnects cancels
only its own wait, never the fetch the others are waiting for.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class Coalescer(Generic[T]):
    def __init__(self) -> None:
        self._inflight: dict[Hashable, asyncio.Task[T]] = {}

    def __len__(self) -> int:
        return len(self._inflight)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._inflight

    async def run(self, key: Hashable, work: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """Return ``(result, led)``; ``led`` is False for followers of an in-flight fetch."""
        task = self._inflight.get(key)
        led = task is None
        if task is None:
            task = asyncio.ensure_future(work())
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._done(key, t))
        return await asyncio.shield(task), led

    def start(self, key: Hashable, work: Callable[[], Awaitable[T]]) -> None:
        """Start ``work`` in the background unless the same key is already in flight."""
        if key not in self._inflight:
            task = asyncio.ensure_future(work())
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._done(key, t))

    def _done(self, key: Hashable, task: asyncio.Task[T]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # mark retrieved: every asker may have gone away

    async def drain(self, grace: float) -> None:
        """Let in-flight work finish (graceful shutdown), then cancel what is left."""
        tasks = list(self._inflight.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(BaseException):
                await task
