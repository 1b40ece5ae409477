"""The node runtime: registration, lifecycle, workflows and run ids (fake nodes only)."""

from __future__ import annotations

import asyncio
import doctest
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from kailash_nodes.errors import NodeExecutionError, UnknownNode, WorkflowValidationError
from kailash_nodes.runtime import (
    LocalRuntime,
    Node,
    WorkflowBuilder,
    current_run_id,
    node_type,
    register_node_type,
)
from kailash_nodes.runtime import workflow as workflow_module


class Recorder(Node):
    """Appends ``initialize``/``close`` events to a shared log; can fail on close."""

    def __init__(self, name: str, log: list[str], *, fail_close: bool = False) -> None:
        super().__init__(name=name)
        self.log = log
        self.fail_close = fail_close

    async def initialize(self) -> None:
        self.log.append(f"init {self.name}")

    async def close(self) -> None:
        self.log.append(f"close {self.name}")
        if self.fail_close:
            raise OSError(f"{self.name} close failed")


@register_node_type
class Add(Node):
    """Sync node in the original's ``run`` idiom: ``value = a + b``."""

    def run(self, **kwargs: Any) -> dict[str, Any]:
        return {"value": kwargs["a"] + kwargs.get("b", 0)}


class Double(Node):
    """Async node in the ``async_run`` idiom; records the run id it saw."""

    async def async_run(self, **kwargs: Any) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"value": kwargs["x"] * 2, "run_id": current_run_id()}


class Boom(Node):
    """Raises whatever exception it was configured with."""

    async def process(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        raise self.config["exc"]


def diamond() -> WorkflowBuilder:
    """src -> (left, right) -> sink, where sink = left*2 + right*2."""
    wf = WorkflowBuilder()
    wf.add_node("Add", "src", {"a": 1, "b": 2})
    wf.add_node("left", Double)
    wf.add_node("right", Double(name="right"))
    wf.add_node("Add", "sink", {})
    wf.add_connection("src", "value", "left", "x")
    wf.add_connection("src", "value", "right", "x")
    wf.add_connection("left", "value", "sink", "a")
    wf.add_connection("right", "value", "sink", "b")
    return wf


# ---------------------------------------------------------------- registration


def test_register_node_sets_runtime_and_exposes_read_only_nodes() -> None:
    rt, node = LocalRuntime(), Node(name="n")
    rt.register_node("n", node)
    rt.register_node("n", node)  # same object again: no-op
    assert node.runtime is rt
    assert rt.get_node("n") is node
    assert dict(rt.nodes) == {"n": node}
    with pytest.raises(TypeError):
        rt.nodes["m"] = node  # type: ignore[index]


def test_register_node_rejects_a_second_node_under_the_same_name() -> None:
    rt = LocalRuntime()
    rt.register_node("n", Node())
    with pytest.raises(WorkflowValidationError, match="'n' is already registered"):
        rt.register_node("n", Node())


def test_register_node_rejects_a_node_owned_by_another_runtime() -> None:
    node = Node()
    LocalRuntime().register_node("n", node)
    with pytest.raises(WorkflowValidationError, match="another runtime"):
        LocalRuntime().register_node("n", node)


def test_get_node_unknown_name_lists_registered_names() -> None:
    rt = LocalRuntime()
    rt.register_node("db_pool", Node())
    with pytest.raises(UnknownNode, match=r"'router'; registered nodes: \['db_pool'\]"):
        rt.get_node("router")


def test_node_type_unknown_name_lists_known_types() -> None:
    assert node_type("Add") is Add
    with pytest.raises(WorkflowValidationError, match=r"'Nope'; known types: \[.*'Add'"):
        node_type("Nope")


def test_base_node_without_run_raises_not_implemented() -> None:
    with pytest.raises(NotImplementedError, match="Node must override"):
        Node().run()


# ---------------------------------------------------------------- lifecycle


async def test_lifecycle_initializes_in_order_and_closes_in_reverse() -> None:
    log: list[str] = []
    rt = LocalRuntime()
    for name in ("a", "b", "c"):
        rt.register_node(name, Recorder(name, log))
    async with rt:
        assert log == ["init a", "init b", "init c"]
    assert log[3:] == ["close c", "close b", "close a"]


async def test_stop_closes_every_node_and_raises_the_first_close_failure() -> None:
    log: list[str] = []
    rt = LocalRuntime()
    rt.register_node("a", Recorder("a", log, fail_close=True))
    rt.register_node("b", Recorder("b", log, fail_close=True))
    rt.register_node("c", Recorder("c", log))
    await rt.start()
    with pytest.raises(OSError, match="b close failed"):
        await rt.stop()
    assert log[3:] == ["close c", "close b", "close a"]
    await rt.stop()  # nothing left to close
    assert len(log) == 6


async def test_failed_start_closes_the_nodes_already_initialized() -> None:
    log: list[str] = []

    class BadInit(Node):
        async def initialize(self) -> None:
            raise OSError("no database")

    rt = LocalRuntime()
    rt.register_node("a", Recorder("a", log))
    rt.register_node("bad", BadInit())
    rt.register_node("c", Recorder("c", log))
    with pytest.raises(OSError, match="no database"):
        await rt.start()
    assert log == ["init a", "close a"]


# ---------------------------------------------------------------- workflows


def test_topological_levels_doctest_passes() -> None:
    assert doctest.testmod(workflow_module).failed == 0


async def test_diamond_workflow_passes_outputs_to_inputs() -> None:
    wf = diamond().build()
    assert wf.order == (("src",), ("left", "right"), ("sink",))
    results, run_id = await LocalRuntime().execute_async(wf)
    assert list(results) == ["src", "left", "right", "sink"]
    assert results["src"] == {"value": 3}
    assert results["left"] == {"value": 6, "run_id": run_id}
    assert results["sink"] == {"value": 12}


async def test_parameters_overlay_static_params_and_connections_overlay_both() -> None:
    wf = diamond()
    results, _ = await LocalRuntime().execute_async(
        wf.build(), parameters={"src": {"b": 10}, "sink": {"a": 1000}}
    )
    assert results["src"] == {"value": 11}
    assert results["sink"] == {"value": 44}  # connected inputs win over parameters


async def test_parameters_for_an_unknown_node_are_rejected() -> None:
    with pytest.raises(WorkflowValidationError, match=r"unknown nodes \['scr'\]"):
        await LocalRuntime().execute_async(diamond().build(), parameters={"scr": {"b": 1}})


def test_build_names_the_cycle() -> None:
    wf = WorkflowBuilder()
    for node_id in ("a", "b", "c"):
        wf.add_node(node_id, Double)
    wf.add_connection("a", "value", "b", "x")
    wf.add_connection("b", "value", "c", "x")
    wf.add_connection("c", "value", "a", "x")
    with pytest.raises(WorkflowValidationError, match="cycle: a -> b -> c -> a"):
        wf.build()


def test_add_connection_to_an_unknown_node_names_the_available_nodes() -> None:
    wf = WorkflowBuilder()
    wf.add_node("a", Double)
    with pytest.raises(WorkflowValidationError, match=r"'b' .*available nodes: \['a'\]"):
        wf.add_connection("a", "value", "b", "x")


def test_add_node_rejects_a_duplicate_id_and_an_unknown_type() -> None:
    wf = WorkflowBuilder()
    wf.add_node("a", Double)
    with pytest.raises(WorkflowValidationError, match="duplicate node id 'a'"):
        wf.add_node("a", Double)
    with pytest.raises(WorkflowValidationError, match="unknown node type 'Missing'"):
        wf.add_node("Missing", "b", {})


def test_add_node_accepts_a_registered_instance() -> None:
    rt, pool = LocalRuntime(), Node(name="db_pool")
    rt.register_node("db_pool", pool)
    wf = WorkflowBuilder()
    assert wf.add_node("pool", pool) == "pool"
    assert wf.build().nodes["pool"] is pool


async def test_missing_output_key_names_the_key_and_the_keys_present() -> None:
    wf = WorkflowBuilder()
    wf.add_node("Add", "src", {"a": 1})
    wf.add_node("dbl", Double)
    wf.add_connection("src", "total", "dbl", "x")
    with pytest.raises(WorkflowValidationError, match=r"no output 'total'.*\['value'\]"):
        await LocalRuntime().execute_async(wf.build())


async def test_a_failing_node_raises_node_execution_error_with_the_cause() -> None:
    wf = WorkflowBuilder()
    wf.add_node("boom", Boom, exc=ZeroDivisionError("bad math"))
    with pytest.raises(NodeExecutionError, match="node 'boom' failed: bad math") as info:
        await LocalRuntime().execute_async(wf.build())
    assert isinstance(info.value.__cause__, ZeroDivisionError)


async def test_a_typed_node_error_propagates_as_is_with_a_note() -> None:
    wf = WorkflowBuilder()
    wf.add_node("boom", Boom, exc=UnknownNode("no pool"))
    wf.add_node("slow", Double)
    with pytest.raises(UnknownNode, match="no pool") as info:
        await LocalRuntime().execute_async(wf.build(), parameters={"slow": {"x": 1}})
    assert "workflow node 'boom'" in info.value.__notes__[0]


# ---------------------------------------------------------------- run ids


async def test_run_id_is_visible_inside_nodes_and_distinct_per_run() -> None:
    rt, wf = LocalRuntime(), diamond().build()
    first, first_id = await rt.execute_async(wf)
    second, second_id = await rt.execute_async(wf)
    assert first["left"]["run_id"] == first["right"]["run_id"] == first_id
    assert second["left"]["run_id"] == second_id != first_id
    assert current_run_id() is None


async def test_concurrent_runs_get_distinct_run_ids() -> None:
    rt, wf = LocalRuntime(), diamond().build()
    runs = await asyncio.gather(*(rt.execute_async(wf) for _ in range(5)))
    assert len({run_id for _, run_id in runs}) == 5
    for results, run_id in runs:
        assert results["left"]["run_id"] == results["right"]["run_id"] == run_id


# ---------------------------------------------------------------- sync execute


def test_sync_execute_runs_on_a_persistent_private_loop() -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    class LoopSpy(Node):
        async def process(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
            loops.append(asyncio.get_running_loop())
            return {}

    rt, wf = LocalRuntime(), WorkflowBuilder()
    wf.add_node("spy", LoopSpy)
    try:
        rt.execute(wf.build())
        results, run_id = rt.execute(wf.build())
    finally:
        rt.close()
    assert results == {"spy": {}} and len(run_id) == 32
    assert loops[0] is loops[1]


async def test_sync_execute_refuses_inside_a_running_loop() -> None:
    with pytest.raises(RuntimeError, match=r"use 'await runtime\.execute_async"):
        LocalRuntime().execute(diamond().build())


def test_sync_close_closes_a_pool_used_by_sync_execute(tmp_path: Path) -> None:
    from kailash_nodes import WorkflowConnectionPool

    pool = WorkflowConnectionPool(
        name="db_pool", database_type="sqlite", database=str(tmp_path / "x.db")
    )
    runtime = LocalRuntime()
    runtime.register_node("db_pool", pool)
    wf = WorkflowBuilder()
    wf.add_node("acquire", pool, {"operation": "acquire"})
    results, _ = runtime.execute(wf.build())
    assert results["acquire"]["connection_id"]
    runtime.close()
    assert pool.engine.closed and pool.engine.state()["total_connections"] == 0
