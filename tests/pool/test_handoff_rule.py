"""The hand-off rule alone (handoff.py), with stand-in entries: where a connection goes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from kailash_nodes.errors import ConnectionFailed, PoolClosed
from kailash_nodes.pool.entry import Entry
from kailash_nodes.pool.handoff import OWN_OPEN_WAIT, Handoff
from kailash_nodes.pool.stats import PoolStats


def entry(name: str) -> Entry:
    return Entry(None, name, time.monotonic(), float("inf"))  # type: ignore[arg-type]


def handoff(*, strict_fifo: bool = False) -> tuple[Handoff, list[Entry]]:
    closed: list[Entry] = []
    return Handoff(PoolStats(), closed.append, strict_fifo=strict_fifo), closed


async def test_a_usable_connection_goes_to_the_oldest_live_waiter_else_idle() -> None:
    h, _ = handoff()
    gone, oldest, next_ = h.enqueue(0.0), h.enqueue(0.0), h.enqueue(0.0)
    gone.cancel()  # a waiter that left is skipped
    a, b, c = entry("a"), entry("b"), entry("c")
    h.put(a)
    h.put(b)
    assert oldest.result() is a and next_.result() is b
    h.put(c)
    assert h.idle == [c] and h.waiting() == 0


@pytest.mark.parametrize(
    ("case", "strict", "opening", "waited", "kept"),
    [
        ("covered and not late: kept for the next acquire", False, 1, 0.0, True),
        ("not every waiter covered", False, 0, 0.0, False),
        ("late for its own connection", False, 1, OWN_OPEN_WAIT * 1.5, False),
        ("strict_fifo", True, 1, 0.0, False),
    ],
)
async def test_a_release_is_kept_only_while_every_waiter_is_covered_and_not_late(
    case: str, strict: bool, opening: int, waited: float, kept: bool
) -> None:
    h, _ = handoff(strict_fifo=strict)
    h.connect_time = 1.0
    h.opening = opening
    waiter = h.enqueue(time.monotonic() - waited)
    released = entry("r")
    h.put_back(released)
    assert (h.idle == [released] and not waiter.done()) is kept, case
    assert (waiter.done() and waiter.result() is released) is not kept, case
    h.close(PoolClosed("end"))  # cancels a pending late check


async def test_a_kept_connection_goes_to_the_waiter_once_it_is_late() -> None:
    h, _ = handoff()
    h.connect_time = 0.01
    h.opening = 1
    waiter = h.enqueue(time.monotonic())
    h.put_back(entry("r"))
    assert not waiter.done() and h.idle
    served = await asyncio.wait_for(waiter, 1)
    assert served.name == "r" and not h.idle


async def test_a_failed_open_hands_a_kept_connection_over_at_once() -> None:
    h, _ = handoff()
    h.connect_time = 10.0
    h.opening = 1
    waiter = h.enqueue(time.monotonic())
    h.put_back(entry("r"))
    h.opening = 0  # the open for the waiter failed
    h.open_failed(ConnectionFailed("refused"), busy=1)
    assert waiter.result().name == "r"


@pytest.mark.parametrize(("busy", "opening", "fails"), [(0, 0, True), (1, 0, False), (0, 1, False)])
async def test_a_failed_open_fails_the_waiters_only_when_nothing_could_serve_them(
    busy: int, opening: int, fails: bool
) -> None:
    h, _ = handoff()
    h.opening = opening
    waiter = h.enqueue(time.monotonic())
    h.open_failed(OSError("no route"), busy=busy)
    assert waiter.done() is fails
    if fails:
        with pytest.raises(ConnectionFailed, match="no route"):
            waiter.result()


async def test_close_fails_waiters_returns_idle_and_closes_what_comes_later() -> None:
    h, closed = handoff()
    idle = entry("i")
    h.put(idle)
    waiter = h.enqueue(0.0)  # (no connection for it)
    assert h.close(PoolClosed("closed")) == [idle] and h.idle == []
    with pytest.raises(PoolClosed):
        waiter.result()
    late: Any = entry("late")
    h.put(late)
    assert closed == [late] and h.idle == []


async def test_a_waiter_that_gives_up_returns_what_it_was_handed() -> None:
    h, _ = handoff()
    waiter = h.enqueue(0.0)
    a = entry("a")
    h.put(a)  # handed over just as the caller gave up
    h.abandon(waiter)
    assert h.idle == [a]
    left = h.enqueue(0.0)
    h.abandon(left)  # nothing handed: just leaves the queue
    assert not h.waiters
