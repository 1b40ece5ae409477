"""Owned background tasks: named, tracked until done, cancelled together on close."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["TaskGroup"]

logger = logging.getLogger("kailash_nodes.pool")
T = TypeVar("T")


class TaskGroup:
    """A set of named tasks kept alive until done; failures are logged, never lost."""

    __slots__ = ("_name", "_tasks")

    def __init__(self, name: str) -> None:
        self._name = name
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, T], what: str) -> asyncio.Task[T]:
        """Start ``coro`` as a task named ``<group>:<what>`` and keep a reference to it."""
        task = asyncio.get_running_loop().create_task(coro, name=f"{self._name}:{what}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("background task %s failed", task.get_name(), exc_info=task.exception())

    def __len__(self) -> int:
        return len(self._tasks)

    async def wait_all(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the running tasks to finish by themselves."""
        tasks = [t for t in self._tasks if not t.done() and t is not asyncio.current_task()]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    async def cancel_all(self) -> None:
        """Cancel every task still running and wait for them to finish."""
        tasks = [t for t in self._tasks if not t.done() and t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
