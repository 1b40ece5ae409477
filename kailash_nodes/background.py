"""Background work shared by every layer: owned tasks, and periodic loops.

Each periodic job of the package (pool upkeep, adaptive sizing, replica checks, the
session reaper) is a :class:`Periodic`: one task, a jittered interval, an error in one tick
logged and the next tick run, and ``stop()`` that cancels and waits. One-off tasks a
component starts and must not lose (opening a connection, cleaning one on release) live in
a :class:`BackgroundTasks` set, cancelled together on close.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["BackgroundTasks", "Periodic"]

logger = logging.getLogger("kailash_nodes")
T = TypeVar("T")


class BackgroundTasks:
    """A set of named tasks kept alive until done; failures are logged, never lost."""

    __slots__ = ("_name", "_tasks")

    def __init__(self, name: str) -> None:
        self._name = name
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, T], what: str) -> asyncio.Task[T]:
        """Start ``coro`` as a task named ``<name>:<what>`` and keep a reference to it."""
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
        """Wait up to ``timeout`` seconds for the running tasks to finish by themselves,
        tasks they start meanwhile included."""
        deadline = time.monotonic() + timeout
        while True:
            me = asyncio.current_task()
            tasks = [t for t in self._tasks if not t.done() and t is not me]
            left = deadline - time.monotonic()
            if not tasks or left <= 0:
                return
            await asyncio.wait(tasks, timeout=left)

    async def cancel_all(self) -> None:
        """Cancel every task still running and wait for them to finish."""
        tasks = [t for t in self._tasks if not t.done() and t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Periodic:
    """Run ``tick`` every ``interval`` seconds (±``jitter``) in one task until stopped.

    ``interval`` is a number or a function read before each sleep (a setting changeable
    live). ``tick`` may be a plain or an async function; an exception it raises is logged
    with ``name`` and the loop goes on. The first tick comes after one interval.

    >>> async def demo() -> list[int]:
    ...     seen: list[int] = []
    ...     job = Periodic("demo", lambda: seen.append(1), 0.001, jitter=0.0)
    ...     job.start()
    ...     while len(seen) < 3:
    ...         await asyncio.sleep(0.001)
    ...     await job.stop()
    ...     return seen[:3]
    >>> asyncio.run(demo()), Periodic("x", lambda: None, 1.0).running
    ([1, 1, 1], False)
    """

    __slots__ = ("_interval", "_task", "_tick", "jitter", "name")

    def __init__(
        self,
        name: str,
        tick: Callable[[], Awaitable[object] | object],
        interval: float | Callable[[], float],
        *,
        jitter: float = 0.2,
    ) -> None:
        self.name = name
        self._tick = tick
        self._interval = interval
        self.jitter = jitter
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """Return whether the loop's task is running."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the loop (idempotent); needs a running event loop."""
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        """Cancel the loop and wait until it has ended (a tick in progress is cancelled)."""
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            interval = self._interval() if callable(self._interval) else self._interval
            await asyncio.sleep(interval * random.uniform(1.0 - self.jitter, 1.0 + self.jitter))
            try:
                result = self._tick()
                if inspect.isawaitable(result):
                    await result
            except Exception:  # keep the loop alive; the next tick retries
                logger.exception("periodic task %s failed", self.name)
