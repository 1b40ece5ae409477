"""The runtime's pre-warming of the next level, with fake nodes (scheduling logic only)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from kailash_nodes.errors import ConfigError, NodeExecutionError
from kailash_nodes.runtime import LocalRuntime, Node, WorkflowBuilder, current_run_id

Log = list[tuple[str, str]]


class Step(Node):
    """Logs its process and prewarm calls; a prewarm can block, sleep or raise on demand."""

    def __init__(self, name: str, log: Log, **config: Any) -> None:
        super().__init__(name=name, **config)
        self.log = log
        self.seen: list[dict[str, Any]] = []
        self.gate: asyncio.Event | None = None  # process waits for it (set by a prewarm)

    async def process(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        self.log.append(("process", self.name))
        if self.gate is not None:
            await asyncio.wait_for(self.gate.wait(), 10)
        if self.config.get("fail"):
            raise OSError(f"{self.name} failed")
        return {"out": f"{self.name}-out"}

    async def prewarm(self, inputs: Mapping[str, Any]) -> int:
        self.seen.append(dict(inputs))
        self.log.append(("prewarm", self.name))
        started = self.config.get("started")
        if started is not None:
            started.set()
        behaviour = self.config.get("warm", "ok")
        if behaviour == "raise":
            raise RuntimeError("warm-up failed")
        if behaviour == "hang":
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                self.log.append(("prewarm cancelled", self.name))
                raise
        opens = self.config.get("opens")
        if opens is not None:
            opens.set()
        self.log.append(("prewarm done", self.name))
        return 1


class Plain(Node):
    """A node without its own prewarm."""

    async def process(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return {"out": 1}


def chain(log: Log, **configs: dict[str, Any]) -> tuple[WorkflowBuilder, dict[str, Step]]:
    """a -> b -> c, each a Step; ``configs[name]`` are that node's static inputs/config."""
    wf = WorkflowBuilder()
    steps = {}
    for name in ("a", "b", "c"):
        steps[name] = Step(name, log, **configs.get(name, {}))
        wf.add_node(name, steps[name], **configs.get(name, {}))
    wf.add_connection("a", "out", "b", "upstream")
    wf.add_connection("b", "out", "c", "upstream")
    return wf, steps


async def test_next_level_is_prewarmed_while_the_level_before_runs() -> None:
    log: Log = []
    opened = asyncio.Event()
    wf, steps = chain(log, b={"opens": opened})
    steps["a"].gate = opened  # a finishes only once b's prewarm has run: they overlap
    rt = LocalRuntime(prewarm=True, prewarm_timeout=5.0)
    results, _ = await rt.execute_async(wf.build())
    assert results["c"] == {"out": "c-out"}
    assert log == [
        ("process", "a"),
        ("prewarm", "b"),
        ("prewarm done", "b"),
        ("process", "b"),
        ("prewarm", "c"),
        ("prewarm done", "c"),
        ("process", "c"),
    ]
    stats = rt.get_prewarm_stats()
    assert (stats["issued"], stats["completed"], stats["warmed"]) == (2, 2, 2)
    assert (stats["errors"], stats["cancelled"]) == (0, 0)


async def test_prewarm_gets_static_and_run_parameters_but_not_connected_inputs() -> None:
    log: Log = []
    wf, steps = chain(log, b={"query": "static", "upstream": "overridden", "k": 1})
    await LocalRuntime(prewarm=True).execute_async(
        wf.build(), parameters={"b": {"k": 2, "extra": True}}
    )
    assert steps["b"].seen == [{"query": "static", "k": 2, "extra": True}]
    assert steps["a"].seen == []  # the first level is never pre-warmed: nothing runs before it


async def test_prewarm_runs_in_the_run_context() -> None:
    seen: list[str | None] = []

    class Ctx(Node):
        async def process(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
            return {}

        async def prewarm(self, inputs: Mapping[str, Any]) -> int:
            seen.append(current_run_id())
            return 0

    wf = WorkflowBuilder()
    wf.add_node("a", Plain)
    wf.add_node("b", Ctx)
    wf.add_connection("a", "out", "b", "x")
    _, run_id = await LocalRuntime(prewarm=True).execute_async(wf.build())
    assert seen == [run_id]


async def test_a_slow_prewarm_is_cancelled_at_the_bound_before_its_node_runs() -> None:
    log: Log = []
    wf, _ = chain(log, b={"warm": "hang"})
    rt = LocalRuntime(prewarm=True, prewarm_timeout=0.01)
    results, _ = await rt.execute_async(wf.build())
    assert results["c"] == {"out": "c-out"}
    assert log.index(("prewarm cancelled", "b")) < log.index(("process", "b"))
    stats = rt.get_prewarm_stats()
    assert (stats["cancelled"], stats["completed"]) == (1, 1)


async def test_a_failing_prewarm_never_fails_the_run_and_is_counted() -> None:
    log: Log = []
    wf, _ = chain(log, b={"warm": "raise"})
    rt = LocalRuntime(prewarm=True)
    results, _ = await rt.execute_async(wf.build())
    assert results["b"] == {"out": "b-out"}
    assert rt.get_prewarm_stats()["errors"] == 1


async def test_a_prewarm_that_is_not_a_coroutine_is_counted_as_an_error() -> None:
    class SyncWarm(Plain):
        def prewarm(self, inputs: Mapping[str, Any]) -> int:  # type: ignore[override]
            raise RuntimeError("sync failure")

    wf = WorkflowBuilder()
    wf.add_node("a", Plain)
    wf.add_node("b", SyncWarm)
    wf.add_connection("a", "out", "b", "x")
    rt = LocalRuntime(prewarm=True)
    results, _ = await rt.execute_async(wf.build())
    assert results["b"] == {"out": 1}
    assert (rt.get_prewarm_stats()["issued"], rt.get_prewarm_stats()["errors"]) == (1, 1)


async def test_prewarm_is_off_by_default() -> None:
    log: Log = []
    wf, _ = chain(log)
    rt = LocalRuntime()
    await rt.execute_async(wf.build())
    assert rt.prewarm is False
    assert [e for e in log if e[0] != "process"] == []


async def test_prewarm_off_calls_no_hook_and_can_be_switched_live() -> None:
    log: Log = []
    wf, _ = chain(log)
    rt = LocalRuntime(prewarm=False)
    await rt.execute_async(wf.build())
    assert [e for e in log if e[0] != "process"] == []
    rt.prewarm = True
    await rt.execute_async(wf.build())
    assert rt.get_prewarm_stats()["issued"] == 2


async def test_nodes_without_their_own_prewarm_get_no_task() -> None:
    wf = WorkflowBuilder()
    wf.add_node("a", Plain)
    wf.add_node("b", Plain)
    wf.add_connection("a", "out", "b", "x")
    rt = LocalRuntime(prewarm=True)
    await rt.execute_async(wf.build())
    assert rt.get_prewarm_stats()["issued"] == 0


async def test_a_failed_level_cancels_and_awaits_the_next_levels_prewarm() -> None:
    log: Log = []
    started = asyncio.Event()
    wf, steps = chain(log, a={"fail": True}, b={"warm": "hang", "started": started})
    steps["a"].gate = started  # a fails once b's pre-warm is under way
    rt = LocalRuntime(prewarm=True, prewarm_timeout=5.0)
    with pytest.raises(NodeExecutionError, match="node 'a' failed"):
        await rt.execute_async(wf.build())
    assert ("prewarm cancelled", "b") in log  # already unwound when the error came out
    assert ("process", "b") not in log
    assert rt.get_prewarm_stats()["cancelled"] == 1


async def test_a_cancelled_run_cancels_and_awaits_the_prewarms_in_flight() -> None:
    log: Log = []
    started = asyncio.Event()
    wf, steps = chain(log, b={"warm": "hang", "started": started})
    steps["a"].gate = asyncio.Event()  # never set: a runs until cancelled
    run = asyncio.create_task(LocalRuntime(prewarm=True).execute_async(wf.build()))
    await asyncio.wait_for(started.wait(), 10)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert log[-1] == ("prewarm cancelled", "b")


async def test_a_level_of_two_nodes_is_prewarmed_concurrently() -> None:
    log: Log = []
    both = asyncio.Event()
    arrived: list[str] = []

    class Pair(Step):
        async def prewarm(self, inputs: Mapping[str, Any]) -> int:
            arrived.append(self.name)
            if len(arrived) == 2:
                both.set()
            await asyncio.wait_for(both.wait(), 10)  # each waits for the other: concurrent
            return 1

    wf = WorkflowBuilder()
    wf.add_node("a", Step("a", log))
    wf.add_node("b1", Pair("b1", log))
    wf.add_node("b2", Pair("b2", log))
    wf.add_connection("a", "out", "b1", "x")
    wf.add_connection("a", "out", "b2", "x")
    rt = LocalRuntime(prewarm=True, prewarm_timeout=5.0)
    await rt.execute_async(wf.build())
    assert sorted(arrived) == ["b1", "b2"]
    assert rt.get_prewarm_stats()["warmed"] == 2


@pytest.mark.parametrize("bad", [-1, "0.1", True, float("nan")])
def test_prewarm_timeout_is_validated(bad: Any) -> None:
    with pytest.raises(ConfigError, match="prewarm_timeout must be a number >= 0"):
        LocalRuntime(prewarm_timeout=bad)


def test_prewarm_flag_is_validated() -> None:
    with pytest.raises(ConfigError, match="prewarm must be True or False"):
        LocalRuntime(prewarm=1)  # type: ignore[arg-type]


def test_base_node_prewarm_does_nothing() -> None:
    assert asyncio.run(Node().prewarm({"query": "SELECT 1"})) == 0
