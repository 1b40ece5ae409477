"""Where a usable connection goes: to the oldest waiter, or onto the idle stack.

The rule, stated once (docs/architecture.md, "Decisions"): a connection that becomes
usable — newly opened, released, or given back by a waiter that left — goes to the oldest
live waiter (FIFO), else on top of the idle stack (LIFO). One exception while the pool
grows ("keep for next"): a *released* connection goes onto the idle stack although callers
wait, when every waiter has a connection opening for it and the oldest has waited less
than ``OWN_OPEN_WAIT`` × the recent connect time. The callers holding connections then keep
going and only the callers the pool grows for wait, once each, for about one connect.
Waits stay bounded: a timer hands a kept connection to the oldest waiter once it is late,
a failed open hands one over at once, at the growth limit (fewer connections opening than
waiters) hand-off is strict again, and ``strict_fifo=True`` turns the exception off.

Acquire timeouts share one timer: it is armed for the earliest deadline among the waiters
and, when it fires, fails every waiter past its deadline (with the error ``timed_out``
builds) and re-arms for the next. A waiter costs one future and one dict entry, no timer
of its own (an ``asyncio.timeout`` per wait measured ~5 µs of CPU each).

The event loop is single-threaded: every method decides and acts with no await between.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable

from kailash_nodes.errors import ConnectionFailed
from kailash_nodes.pool.entry import Entry
from kailash_nodes.pool.stats import PoolStats

__all__ = ["OWN_OPEN_WAIT", "Handoff"]

OWN_OPEN_WAIT = 2.0  # a waiter waits for its own connection up to this × the connect time


class Handoff:
    """The idle stack, the waiters' queue, the connections opening, and the rule above.

    ``close_entry`` is called with a connection that becomes usable after `close`.
    """

    __slots__ = (
        "_close_entry",
        "_expiry",
        "_expiry_at",
        "_late_check",
        "_since",
        "_stats",
        "_strict",
        "_timed_out",
        "closed",
        "connect_time",
        "idle",
        "opening",
        "waiters",
    )

    def __init__(
        self,
        stats: PoolStats,
        close_entry: Callable[[Entry], None],
        *,
        strict_fifo: bool,
        timed_out: Callable[[float], BaseException] = lambda timeout: TimeoutError(),
    ) -> None:
        self.idle: list[Entry] = []  # LIFO: the warmest on top; never replaced (aliased)
        self.waiters: deque[asyncio.Future[Entry]] = deque()
        self.opening = 0  # connections being opened in the background
        self.connect_time: float | None = None  # recent seconds per connect (an EWMA)
        self.closed = False
        # When each waiter began, and its deadline (monotonic seconds)
        self._since: dict[asyncio.Future[Entry], tuple[float, float]] = {}
        self._late_check: asyncio.TimerHandle | None = None
        self._expiry: asyncio.TimerHandle | None = None  # the shared deadline timer
        self._expiry_at = 0.0
        self._timed_out = timed_out  # the error for a waiter whose timeout (seconds) passed
        self._stats = stats
        self._close_entry = close_entry
        self._strict = strict_fifo

    # ------------------------------------------------------------------ waiters

    def enqueue(self, since: float, deadline: float = math.inf) -> asyncio.Future[Entry]:
        """Queue a caller that began waiting at monotonic time ``since``; return its future,
        which fails with ``timed_out(deadline - since)`` once ``deadline`` passes unserved."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Entry] = loop.create_future()
        self.waiters.append(fut)
        self._since[fut] = (since, deadline)
        if deadline != math.inf and (self._expiry is None or deadline < self._expiry_at):
            self._arm(loop, deadline)
        return fut

    def _arm(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry_at = deadline
        self._expiry = loop.call_later(max(0.0, deadline - time.monotonic()), self._expire)

    def _expire(self) -> None:
        """Fail the waiters past their deadline; re-arm for the earliest one left."""
        self._expiry = None
        now = time.monotonic()
        earliest = None
        for fut, (since, deadline) in list(self._since.items()):
            if fut.done():
                continue  # served or cancelled: it leaves the queue through put/abandon
            if deadline <= now:
                with contextlib.suppress(ValueError):
                    self.waiters.remove(fut)
                del self._since[fut]
                fut.set_exception(self._timed_out(deadline - since))
            elif deadline != math.inf and (earliest is None or deadline < earliest):
                earliest = deadline
        if earliest is not None:
            self._arm(asyncio.get_running_loop(), earliest)

    def abandon(self, fut: asyncio.Future[Entry]) -> None:
        """Take back from a caller that gave up (timed out, cancelled) the connection it
        was handed, if any, else take it out of the queue."""
        if fut.done() and not fut.cancelled() and fut.exception() is None:
            self.put(fut.result())
            return
        with contextlib.suppress(ValueError):  # already handed out or failed
            self.waiters.remove(fut)
            del self._since[fut]

    def waiting(self) -> int:
        """Return how many callers are waiting."""
        return sum(1 for f in self.waiters if not f.done())

    def fail_waiters(self, error: BaseException) -> None:
        """Fail every waiting caller with ``error``."""
        waiters = self.waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_exception(error)
        self._since.clear()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    # ------------------------------------------------------------------ the rule

    def put(self, entry: Entry) -> None:
        """Hand a usable connection to the oldest live waiter, else make it idle."""
        waiters = self.waiters
        while waiters:
            fut = waiters.popleft()
            del self._since[fut]  # a waiter is forgotten as it leaves the queue
            if not fut.done():
                fut.set_result(entry)
                return
        if self.closed:
            self._close_entry(entry)
            return
        self.idle.append(entry)

    def put_back(self, entry: Entry) -> None:
        """Place a released connection: `put`, except while the pool grows ("keep for next")."""
        if self.opening and self.waiters and self._keep_for_next():  # only while growing
            self._stats.handoffs_deferred += 1
            self.idle.append(entry)
            self._serve_late()
            return
        self.put(entry)

    def open_failed(self, exc: Exception, *, busy: int) -> None:
        """After a failed open (counted out of ``opening`` already): hand a kept idle
        connection to the waiter no longer covered, and fail the waiters at once when
        nothing could ever serve them (no connection ``busy``, opening or idle)."""
        self._serve_late()
        if busy or self.opening or self.idle:
            return
        self.fail_waiters(exc if isinstance(exc, ConnectionFailed) else ConnectionFailed(str(exc)))

    def _keep_for_next(self) -> bool:
        due = self._own_open_due()
        return due is not None and time.monotonic() < due

    def _own_open_due(self) -> float | None:
        """Return when the oldest waiter becomes late for its own connection: None when
        not every waiter has a connection opening, or with ``strict_fifo``."""
        waiters = self.waiters
        connect_time = self.connect_time
        if self._strict or connect_time is None or self.opening < len(waiters):
            return None
        began = self._since.get(waiters[0])
        return None if began is None else began[0] + OWN_OPEN_WAIT * connect_time

    def _serve_late(self) -> None:
        """Hand kept idle connections to waiters that are late or no longer covered; while
        the oldest is covered and not late, check again when it becomes late."""
        if self._late_check is not None:
            self._late_check.cancel()  # one pending check at a time (the oldest's due time)
            self._late_check = None
        while self.idle and self.waiters and not self.closed:
            due = self._own_open_due()
            if due is not None and time.monotonic() < due:
                self._late_check = asyncio.get_running_loop().call_at(due, self._serve_late)
                return
            self.put(self.idle.pop())

    def close(self, error: BaseException) -> list[Entry]:
        """Stop: fail the waiters with ``error``, cancel the late check, and return the
        idle connections (the stack is emptied in place)."""
        self.closed = True
        self.fail_waiters(error)
        if self._late_check is not None:
            self._late_check.cancel()
            self._late_check = None
        idle = list(self.idle)
        self.idle.clear()
        return idle
