"""The runtime gives each node execution its own causal context, merged from upstream.

Deterministic logic: nodes here stand in for the router and raise their own token by hand
(tests/router/test_causal.py checks the same along real writes and replicas).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kailash_nodes.context import CausalContext, causal_var, current_run_id
from kailash_nodes.runtime import LocalRuntime, Node, WorkflowBuilder

PRIMARY = object()  # what the router keys its tokens by (its primary pool)


class Writer(Node):
    """Raise the current node's token as a write through the router would; report it."""

    def __init__(
        self, name: str, *, lsn: int = 0, pending: bool = False, until: float = 0.0
    ) -> None:
        super().__init__(name)
        self.lsn, self.pending, self.until = lsn, pending, until

    async def process(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        ctx = causal_var.get()
        assert ctx is not None and ctx.run_id == current_run_id()
        token = ctx.token(PRIMARY)
        seen = (token.write_lsn, token.lsn_pending, token.primary_until)
        token.write_lsn = max(token.write_lsn, self.lsn)
        token.lsn_pending = token.lsn_pending or self.pending
        token.primary_until = max(token.primary_until, self.until)
        return {"seen": seen, "out": 1}


def connect(wf: WorkflowBuilder, before: str, after: str) -> None:
    wf.add_connection(before, "out", after, f"from_{before}")


async def test_a_node_starts_from_the_merge_of_the_nodes_connected_into_it() -> None:
    wf = WorkflowBuilder()
    wf.add_node("a", Writer("a", lsn=10))
    wf.add_node("b", Writer("b", pending=True))
    wf.add_node("c", Writer("c", until=5.0, lsn=3))
    wf.add_node("lone", Writer("lone"))  # level 2, fed by nothing that wrote
    wf.add_node("d", Writer("d"))  # fed by a and c
    wf.add_node("e", Writer("e"))  # fed by d and b
    wf.add_node("after_lone", Writer("after_lone"))
    for before, after in [("a", "d"), ("c", "d"), ("d", "e"), ("b", "e"), ("lone", "after_lone")]:
        connect(wf, before, after)
    results, _ = await LocalRuntime().execute_async(wf.build())
    assert results["a"]["seen"] == (0, False, 0.0)
    assert results["d"]["seen"] == (10, False, 5.0)  # max position, latest window
    assert results["e"]["seen"] == (10, True, 5.0)  # and a pending write from b
    assert results["after_lone"]["seen"] == (0, False, 0.0)  # ran after every write


async def test_siblings_of_one_level_do_not_share_a_context() -> None:
    wf = WorkflowBuilder()
    wf.add_node("first", Writer("first", lsn=7))
    wf.add_node("w", Writer("w", lsn=8))
    wf.add_node("sibling", Writer("sibling"))
    connect(wf, "first", "w")
    connect(wf, "first", "sibling")
    results, _ = await LocalRuntime().execute_async(wf.build())
    assert results["sibling"]["seen"] == (7, False, 0.0)  # not w's 8


async def test_a_run_started_inside_a_node_inherits_and_hands_back_its_context() -> None:
    runtime = LocalRuntime()

    class Nested(Node):
        async def process(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
            inner = WorkflowBuilder()
            inner.add_node("in", Writer("in", lsn=50))
            results, _ = await runtime.execute_async(inner.build())
            ctx = causal_var.get()
            assert ctx is not None
            after = ctx.token(PRIMARY).write_lsn
            return {"inner_seen": results["in"]["seen"], "after": after, "out": 1}

    wf = WorkflowBuilder()
    wf.add_node("w", Writer("w", lsn=20))
    wf.add_node("nested", Nested("nested"))
    wf.add_node("last", Writer("last"))
    connect(wf, "w", "nested")
    connect(wf, "nested", "last")
    results, _ = await runtime.execute_async(wf.build())
    assert results["nested"]["inner_seen"] == (20, False, 0.0)
    assert results["nested"]["after"] == 50
    assert results["last"]["seen"] == (50, False, 0.0)


async def test_outside_a_run_there_is_no_causal_context() -> None:
    wf = WorkflowBuilder()
    wf.add_node("w", Writer("w", lsn=1))
    await LocalRuntime().execute_async(wf.build())
    assert causal_var.get() is None
    assert not CausalContext("r").tracked
