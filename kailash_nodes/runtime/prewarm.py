"""Pre-warming the next workflow level: its nodes' ``prewarm`` hooks as bounded tasks.

While level *i* of a run executes, `LocalRuntime` starts ``node.prewarm(known_inputs)`` for
every node of level *i + 1* that overrides the hook. Before level *i + 1* starts, the hooks
still running get at most ``timeout`` more seconds; then they are cancelled and awaited,
so a hook never runs alongside its own node and never delays a level by more than the
bound (plus the time a cancelled hook takes to unwind). A hook that raises only counts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from kailash_nodes.runtime.node import Node

__all__ = ["LevelLookAhead", "LevelPrewarm", "PrewarmStats", "overrides_prewarm"]

logger = logging.getLogger("kailash_nodes.runtime")


@dataclass(slots=True)
class PrewarmStats:
    """Counters of a runtime's pre-warm hooks (keys in docs/runtime.md)."""

    issued: int = 0  # hooks started
    completed: int = 0  # hooks that returned within the bound
    warmed: int = 0  # sum of what those hooks returned (things they warmed)
    errors: int = 0  # hooks that raised
    cancelled: int = 0  # hooks still running at the bound (or when the run ended)
    waits: int = 0  # levels that waited for hooks still running when the level before ended
    wait_seconds: float = 0.0  # total time of those waits

    def as_dict(self) -> dict[str, float]:
        """Return the counters as a plain dict."""
        return asdict(self)


def overrides_prewarm(node: Node) -> bool:
    """Return whether ``node``'s class has its own ``prewarm`` (the base one does nothing).

    >>> class Warm(Node):
    ...     async def prewarm(self, inputs):
    ...         return 1
    >>> overrides_prewarm(Warm()), overrides_prewarm(Node())
    (True, False)
    """
    return type(node).prewarm is not Node.prewarm


class LevelLookAhead:
    """The ``prewarm`` hooks of one workflow level, started while the level before it runs.

    "Look ahead": the runtime lets the next level's nodes get ready (a router prepares its
    statement ahead, a pool opens a connection ahead) while the current level runs.
    """

    __slots__ = ("_stats", "_tasks")

    def __init__(self, stats: PrewarmStats) -> None:
        self._stats = stats
        self._tasks: dict[asyncio.Task[int], str] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    def start(self, node_id: str, node: Node, inputs: Mapping[str, Any], run_id: str) -> None:
        """Start ``node.prewarm(inputs)`` as a task (in the run's context)."""
        self._stats.issued += 1
        try:
            task = asyncio.get_running_loop().create_task(
                node.prewarm(inputs), name=f"prewarm {node_id} {run_id}"
            )
        except Exception as exc:  # e.g. a prewarm that is not a coroutine function
            self._stats.errors += 1
            logger.debug("pre-warming node %r failed: %r", node_id, exc)
            return
        self._tasks[task] = node_id

    async def settle(self, timeout: float) -> None:
        """Give hooks still running up to ``timeout`` s, then cancel and await the rest."""
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            began = time.monotonic()
            self._stats.waits += 1
            try:
                await asyncio.wait(pending, timeout=timeout)
            finally:  # cancelled while waiting: the hooks still must not outlive the run
                self._stats.wait_seconds += time.monotonic() - began
                await self.cancel()
            return
        self._collect()

    async def cancel(self) -> None:
        """Cancel the hooks still running, wait until they have unwound, count them."""
        running = [t for t in self._tasks if not t.done()]
        for task in running:
            task.cancel()
        if running:
            # Awaited, not just cancelled: a hook holding a connection returns it while it
            # unwinds, and that must happen before the node (or the caller) goes on.
            await asyncio.wait(running)
        self._collect()

    def _collect(self) -> None:
        stats = self._stats
        for task, node_id in self._tasks.items():
            if task.cancelled():
                stats.cancelled += 1
            elif (exc := task.exception()) is not None:
                stats.errors += 1
                logger.debug("pre-warming node %r failed: %r", node_id, exc)
            else:
                stats.completed += 1
                warmed = task.result()
                stats.warmed += warmed if isinstance(warmed, int) else 0
        self._tasks.clear()


LevelPrewarm = LevelLookAhead  # the earlier name
