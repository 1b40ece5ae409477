"""The demo command: every section is printed, and what each says is what happened."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from kailash_nodes.cli import main
from kailash_nodes.demo import Demo, report
from tests.conftest import server_dsn

SECTIONS = (
    "== workflow (LocalRuntime)",
    "== read/write split ==",
    "== session transactions",
    "== routing decisions",
    "== statement cache ==",
    "== learned next-statement predictions",
    "== adaptive sizing",
    "== pool stats",
    "== router metrics",
)


def test_demo_command_on_sqlite_prints_every_section(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--rows", "100", "--runs", "4"]) == 0
    out = capsys.readouterr().out
    for heading in SECTIONS:
        assert heading in out
    assert "kailash-nodes demo on sqlite:" in out
    assert "no --replica-dsn: no replica pool" in out


def test_replica_dsn_without_dsn_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--replica-dsn", "postgresql://u@h/db"])
    assert exc.value.code == 2
    assert "--replica-dsn needs --dsn" in capsys.readouterr().err


def test_demo_on_a_bad_dsn_prints_the_error_and_exits_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo", "--dsn", "bogus://x"]) == 1
    assert "kailash-nodes demo: ConfigError: connection_string" in capsys.readouterr().err


async def run(dsn: str, replica_dsn: str | None = None) -> str:
    """Run the demo's report on ``dsn``, check what it printed, return the output."""
    buffer = io.StringIO()
    demo = Demo(dsn, replica_dsn, buffer)
    async with demo.runtime:
        try:
            await report(demo, rows=100, runs=6)
            await check_report_is_true(demo, buffer.getvalue())
        finally:
            await demo.drop()
    return buffer.getvalue()


async def check_report_is_true(demo: Demo, out: str) -> None:
    """Check each section's claims against the pools, the router and the database."""
    for heading in SECTIONS:
        assert heading in out
    await check_transactions(demo, out)
    check_predictions(demo, out)
    check_sizing(demo, out)
    metrics = await demo.router.get_metrics()
    r = metrics["router_metrics"]
    assert f"{r['queries_routed']} routed: {r['reads_to_replicas']} reads to replicas," in out
    assert r["queries_routed"] == len(demo.log)
    cache = metrics["cache_stats"]
    assert f"{cache['statement_cache']} hit_rate" in out
    assert f"({cache['hits']} hits of {cache['lookups']} lookups)" in out
    assert f"server_side_prepare={cache['server_side_prepare']}" in out
    hits = sum(1 for _, meta in demo.log if meta["cache_hit"])
    assert f"cache_hit true for {hits} of {len(demo.log)} statements" in out


async def check_transactions(demo: Demo, out: str) -> None:
    """The committed order is in the table, the rolled-back one is not, as printed."""
    pool = demo.pools["db_pool"]
    async with pool.connection() as conn:
        res = await pool.execute(conn, f"SELECT id FROM {demo.table} WHERE id IN (9001, 9002)")
    assert [row["id"] for row in res["data"]] == [9001]
    assert "1 row(s): order 9001 present" in out
    assert "0 row(s): order 9002 absent" in out


def check_predictions(demo: Demo, out: str) -> None:
    """The printed next step is the tracker's best prediction."""
    tracker = demo.pools["db_pool"].pattern_tracker
    assert tracker is not None
    best = tracker.predict_next(demo.shapes["lookup"], k=1)
    assert best and best[0].shape == demo.shapes["top_orders"]
    assert f"after lookup        -> top_orders    probability {best[0].probability:.2f}" in out


def check_sizing(demo: Demo, out: str) -> None:
    """Every size change printed is in the controller's history, and none is invented."""
    changes = shown = 0
    for name, pool in demo.pools.items():
        assert pool.adaptive_controller is not None
        history = pool.adaptive_controller.get_adjustment_history()
        changes, shown = changes + len(history), shown + min(6, len(history))
        if not history:
            assert f"{name}: no size change recorded" in out
        for h in history[:6]:
            assert f"{h['from_size']} -> {h['to_size']}: {h['reason']}" in out
    printed = [line for line in out.splitlines() if "_pool " in line and " -> " in line]
    assert len(printed) == shown
    assert changes >= 1, "the burst should make the controller grow a pool"


@pytest.mark.sqlite
async def test_demo_on_sqlite_says_what_happened(tmp_path: Path) -> None:
    out = await run(f"sqlite:///{tmp_path / 'demo.db'}")
    assert "nothing prepared on the server: SQLite has no server" in out
    assert "cache_stats: sqlite3 hit_rate" in out
    assert "on replica:" not in out


@pytest.mark.postgres
@pytest.mark.replica
async def test_demo_on_postgres_with_replica_reads_on_the_replica() -> None:
    out = await run(server_dsn("KN_PG_DSN"), server_dsn("KN_PG_REPLICA_DSN"))
    lines = out.splitlines()
    assert any("on replica:replica_pool: in_recovery=True" in line for line in lines), out
    assert any("on primary: in_recovery=False" in line for line in lines)
    assert any(line.startswith("  lookup        on replica:replica_pool") for line in lines)
    assert any(line.startswith("  mark_shipped  on primary") for line in lines)
    reads = re.search(r"routed: (\d+) reads to replicas", out)
    assert reads is not None and int(reads.group(1)) > 0
    assert "server_side_prepare=True" in out


@pytest.mark.mysql
async def test_demo_on_mariadb_says_what_happened() -> None:
    out = await run(server_dsn("KN_MYSQL_DSN"))
    assert "server_side_prepare=False" in out
