"""The pre-warm ledger's accounting: issued = used + pending + wasted, per source (fakes)."""

from __future__ import annotations

from typing import Any

from kailash_nodes.router import prewarm
from kailash_nodes.router.prewarm import PREDICTOR, RUNTIME, PrewarmLedger


class FakeConn:
    """Only what the ledger asks a connection: its prepared texts and whether it is closed."""

    def __init__(self) -> None:
        self.statements: set[str] = set()
        self.closed = False

    def has_statement(self, text: str) -> bool:
        return text in self.statements

    def is_closed(self) -> bool:
        return self.closed


def entry(name: str) -> tuple[Any, FakeConn]:
    """Return the ledger's key for a connection (the driver connection) and the fake."""
    conn = FakeConn()
    return conn, conn


def prepared(ledger: PrewarmLedger, e: Any, conn: FakeConn, text: str, source: str) -> None:
    conn.statements.add(text)
    ledger.prepared(e, text, source)


def by_source(ledger: PrewarmLedger, source: str) -> dict[str, Any]:
    report: Any = ledger.report()
    return dict(report["by_source"][source])


def test_used_pending_and_wasted_add_up_to_issued_per_source() -> None:
    ledger = PrewarmLedger()
    e1, c1 = entry("c1")
    e2, c2 = entry("c2")
    prepared(ledger, e1, c1, "A", RUNTIME)
    prepared(ledger, e1, c1, "B", RUNTIME)
    prepared(ledger, e2, c2, "C", RUNTIME)
    prepared(ledger, e2, c2, "D", PREDICTOR)
    ledger.use(e1, "A")  # a statement ran as a cache hit on the pre-warmed connection
    ledger.use(e2, "A")  # not pre-warmed there: nothing to count
    c1.statements.discard("B")  # evicted or invalidated before any use: wasted
    c2.closed = True  # its connection closed: C and D are wasted
    ledger.failed(RUNTIME)
    runtime = by_source(ledger, RUNTIME)
    assert runtime == {"issued": 3, "used": 1, "pending": 0, "wasted": 2,
                       "already_prepared": 0, "errors": 1}  # fmt: skip
    assert by_source(ledger, PREDICTOR)["wasted"] == 1
    report: Any = ledger.report()
    assert (report["issued"], report["used"], report["wasted"], report["errors"]) == (4, 1, 3, 1)


def test_a_statement_still_prepared_and_unused_is_pending_until_used() -> None:
    ledger = PrewarmLedger()
    e1, c1 = entry("c1")
    prepared(ledger, e1, c1, "A", RUNTIME)
    assert by_source(ledger, RUNTIME)["pending"] == 1
    ledger.use(e1, "A")
    ledger.use(e1, "A")  # a second hit is not a second use of the pre-warm
    assert by_source(ledger, RUNTIME)["used"] == 1
    assert by_source(ledger, RUNTIME)["pending"] == 0


def test_the_ledger_stays_bounded_and_forgets_dead_entries_first(monkeypatch: Any) -> None:
    monkeypatch.setattr(prewarm, "_MAX_PENDING", 8)
    ledger = PrewarmLedger()
    e1, c1 = entry("c1")
    for i in range(4):
        prepared(ledger, e1, c1, f"dead{i}", RUNTIME)
        c1.statements.discard(f"dead{i}")
    for i in range(5):
        prepared(ledger, e1, c1, f"live{i}", RUNTIME)
    assert len(ledger.pending) == 5  # the 9th prepare trimmed the 4 dead ones only
    for i in range(5, 9):
        prepared(ledger, e1, c1, f"live{i}", RUNTIME)
    assert len(ledger.pending) == 6  # 9 live: the oldest go, down to 3/4 of the bound
    assert "live0" not in {t for _, t in ledger.pending}
    report = by_source(ledger, RUNTIME)
    assert report["issued"] == report["used"] + report["pending"] + report["wasted"]
