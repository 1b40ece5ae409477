"""SQL classification: the acceptance corpus, fail-closed properties, fingerprints, hints."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kailash_nodes.sql as sql
from kailash_nodes.errors import CommitOutcomeUnknown, OutcomeUnknown
from kailash_nodes.sql import Category, Classification, Classifier, classify
from kailash_nodes.sql.outcome import lost_in_flight
from tests.sql.corpus import CORPUS, Case

READS = {Category.READ_SIMPLE, Category.READ_COMPLEX}


def test_corpus_is_large_and_covers_every_dialect() -> None:
    assert len(CORPUS) >= 60
    assert {c.dialect for c in CORPUS} == {"postgres", "mysql", "sqlite"}
    assert {c.category for c in CORPUS} == {c.value for c in Category}
    assert len({(c.sql, c.dialect) for c in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: f"{c.dialect}:{c.sql[:60]}")
def test_corpus_statement_gets_expected_verdict(case: Case) -> None:
    got = classify(case.sql, case.dialect)
    assert (got.category.value, got.replica_safe, got.tables) == (
        case.category,
        case.replica_safe,
        case.tables,
    ), got.reason


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: f"{c.dialect}:{c.sql[:60]}")
def test_nothing_but_a_plain_read_is_ever_replica_safe(case: Case) -> None:
    got = classify(case.sql, case.dialect)
    if case.category not in ("read_simple", "read_complex"):
        assert not got.replica_safe, got.reason
    if got.replica_safe:
        assert got.category in READS
        assert ";" not in got.fingerprint


_WORDS = st.sampled_from(
    [
        "SELECT", "*", "a", "FROM", "t", "u", "WHERE", "a = 1", "JOIN", "ON", "(", ")", ",",
        ";", "FOR UPDATE", "FOR SHARE", "INSERT INTO t", "VALUES (1)", "UPDATE t SET a = 1",
        "DELETE FROM t", "WITH x AS", "= nextval('s')", "INTO", "TEMP", "UNION", "RETURNING *",
        "EXPLAIN", "ANALYZE", "BEGIN", "SET", "COPY", "'x'", "/* c */", "= pg_advisory_lock(1)",
        "= my_func(a)", "GROUP BY a", "LIMIT 1", "DROP TABLE t", "LOCK", "$1", "?",
    ]
)  # fmt: skip
_DANGER = (
    "FOR UPDATE", "FOR SHARE", "INSERT", "UPDATE", "DELETE", "nextval", "INTO", "BEGIN",
    "COPY", "pg_advisory", "my_func", "DROP", "LOCK",
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(["SELECT ", "WITH x AS (SELECT 1) SELECT ", ""]),
    st.lists(_WORDS, min_size=1, max_size=12),
    st.sampled_from(["postgres", "mysql", "sqlite"]),
)
def test_random_statements_are_replica_safe_only_without_danger(
    head: str, words: list[str], dialect: str
) -> None:
    """sqlglot is lenient ("SELECT DELETE FROM t" parses): no dangerous word may pass."""
    query = head + " ".join(words)
    got = classify(query, dialect)
    assert isinstance(got, Classification)
    if got.replica_safe:
        assert got.category in READS
        code = query.replace("'x'", "").replace("/* c */", "")
        assert not any(d in code for d in _DANGER), (query, got.reason)


@pytest.mark.parametrize("dialect", ["postgres", "mysql", "sqlite"])
def test_fingerprint_folds_literals_and_every_placeholder_style(dialect: str) -> None:
    texts = [
        "SELECT * FROM users WHERE id = 1",
        "select *  from USERS\n where ID = 42 -- note",
        "SELECT * FROM users WHERE id = $1",
        "SELECT * FROM users WHERE id = ?",
        "SELECT * FROM users WHERE id = %s",
        "SELECT * FROM users WHERE id = :id",
        "SELECT * FROM users WHERE id = 'abc'",
        "SELECT * FROM users WHERE id = -7",
        "/* route:replica */ SELECT * FROM users WHERE id = 3.5",
    ]
    prints = {classify(t, dialect).fingerprint for t in texts}
    assert prints == {"SELECT * FROM users WHERE id = ?"}


def test_fingerprint_collapses_in_lists_and_value_rows() -> None:
    a = classify("SELECT * FROM t WHERE id IN (1, 2, 3)").fingerprint
    b = classify("SELECT * FROM t WHERE id IN ($1, $2)").fingerprint
    assert a == b == "SELECT * FROM t WHERE id IN (?)"
    three = classify("INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y'), (3, 'z')").fingerprint
    two = classify("INSERT INTO t (a, b) VALUES (?, ?), (?, ?)").fingerprint
    one = classify("INSERT INTO t (a, b) VALUES (?, ?)").fingerprint
    assert three == two == "INSERT INTO t(a, b) VALUES (?, ?), ..."
    assert one != two
    assert classify("SELECT * FROM t WHERE a = $1 AND b = ?", "mysql").fingerprint == (
        "SELECT * FROM t WHERE a = ? AND b = ?"
    )


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("SELECT a FROM t WHERE id = 1", "SELECT b FROM t WHERE id = 1"),
        ("SELECT a FROM t WHERE id = 1", "SELECT a FROM u WHERE id = 1"),
        ("SELECT a FROM t WHERE id = 1", "SELECT a FROM t WHERE id > 1"),
        ("SELECT a FROM t WHERE id = 1", "SELECT a FROM t WHERE id IS NULL"),
        ("SELECT a - 1 FROM t", "SELECT a FROM t"),
        ('SELECT "A" FROM t', "SELECT a FROM t"),
        ("SELECT 1", "SELECT 1; SELECT 1"),
    ],
)
def test_fingerprint_keeps_different_shapes_apart(left: str, right: str) -> None:
    assert classify(left).fingerprint != classify(right).fingerprint


@pytest.mark.parametrize(
    ("query", "dialect", "statement", "op"),
    [
        ("BEGIN", "postgres", "BEGIN", "begin"),
        ("START TRANSACTION", "mysql", "START TRANSACTION", "begin"),
        ("BEGIN DEFERRED TRANSACTION", "sqlite", "BEGIN", "begin"),
        ("COMMIT", "postgres", "COMMIT", "commit"),
        ("END TRANSACTION", "sqlite", "END", "commit"),
        ("ROLLBACK", "mysql", "ROLLBACK", "rollback"),
        ("ABORT", "postgres", "ABORT", "rollback"),
        ("SAVEPOINT sp", "postgres", "SAVEPOINT", "savepoint"),
        ("RELEASE SAVEPOINT sp", "mysql", "RELEASE", "release"),
        ("RELEASE sp", "sqlite", "RELEASE", "release"),
        ("ROLLBACK TO SAVEPOINT sp", "postgres", "ROLLBACK", "rollback_to"),
        ("ROLLBACK TO sp", "sqlite", "ROLLBACK", "rollback_to"),
        ("PREPARE TRANSACTION 'g1'", "postgres", "PREPARE TRANSACTION", "prepare_transaction"),
        ("COMMIT PREPARED 'g1'", "postgres", "COMMIT PREPARED", "commit_prepared"),
        ("ROLLBACK PREPARED 'g1'", "postgres", "ROLLBACK PREPARED", "rollback_prepared"),
        ("BEGIN; INSERT INTO t VALUES (1); COMMIT", "postgres", "BEGIN", None),
        ("SELECT 1; BEGIN; SAVEPOINT a", "postgres", "BEGIN", "begin"),
        ("UPDATE t SET a = 1; COMMIT", "postgres", "COMMIT", "commit"),
        ("SAVEPOINT a; RELEASE a", "postgres", "SAVEPOINT", "release"),
        ("SET LOCAL a = 1", "postgres", "SET", None),
        ("SELECT 1", "postgres", "SELECT", None),
        ("WITH d AS (SELECT 1) DELETE FROM t", "postgres", "DELETE", None),
    ],
)
def test_statement_and_transaction_op(
    query: str, dialect: str, statement: str, op: str | None
) -> None:
    got = classify(query, dialect)
    assert (got.statement, got.transaction_op) == (statement, op)


def test_replica_hint_is_refused_for_a_write_and_says_so() -> None:
    got = classify("/* route:replica */ UPDATE t SET a = 1")
    assert (got.hint, got.replica_safe) == ("replica", False)
    assert got.reason.endswith("route:replica hint refused")


def test_replica_hint_vouches_only_for_an_unknown_function() -> None:
    plain = classify("SELECT price_with_tax(p) FROM items")
    hinted = classify("-- route:replica\nSELECT price_with_tax(p) FROM items")
    assert (plain.category, plain.replica_safe) == (Category.UNKNOWN, False)
    assert (hinted.category, hinted.replica_safe) == (Category.READ_SIMPLE, True)
    assert plain.fingerprint == hinted.fingerprint
    assert not classify("/* route:replica */ SELECT nextval('s')").replica_safe
    assert not classify("/* route:replica */ SELECT 1; SELECT my_f()").replica_safe


def test_primary_hint_wins_and_hints_in_strings_do_not_count() -> None:
    both = classify("/* route:replica */ /* ROUTE: PRIMARY */ SELECT 1")
    assert (both.hint, both.replica_safe) == ("primary", False)
    assert classify("SELECT '/* route:primary */'").hint is None


def test_repeated_classification_is_a_cache_hit() -> None:
    query = "SELECT id FROM cache_probe WHERE id = $1"
    assert classify(query) is classify(query)
    assert classify(query, "postgresql") is not None


def test_classifier_whitelist_is_extensible_and_cache_bounded() -> None:
    mine = Classifier(safe_functions=["Price_With_Tax", "billing.net"], cache_size=2)
    assert mine.classify("SELECT price_with_tax(p) FROM items").replica_safe
    assert mine.classify("SELECT billing.net(p) FROM items").replica_safe
    assert not classify("SELECT billing.net(p) FROM items").replica_safe
    mine.classify("SELECT 1")
    _, misses, maxsize, size = mine.cache_info()
    assert (misses, maxsize, size) == (3, 2, 2)
    mine.cache_clear()
    assert mine.cache_info()[3] == 0


@pytest.mark.parametrize("bad", [{"cache_size": 0}, {"safe_functions": "now"}])
def test_classifier_rejects_bad_options(bad: dict[str, object]) -> None:
    with pytest.raises((ValueError, TypeError)):
        Classifier(**bad)  # type: ignore[arg-type]


def test_bad_arguments_raise_with_the_value_named() -> None:
    with pytest.raises(ValueError, match=r"dialect must be one of .* \(got 'oracle'\)"):
        classify("SELECT 1", "oracle")
    with pytest.raises(TypeError, match="query must be str"):
        classify(b"SELECT 1")  # type: ignore[arg-type]


def test_dialect_aliases_match_their_dialect() -> None:
    assert classify("SELECT `a` FROM t", "mariadb").tables == frozenset({"t"})
    assert classify("SELECT 1", "postgresql").category is Category.READ_SIMPLE


def test_unparseable_text_fails_closed_without_leaking_literals() -> None:
    got = classify("SELECT 'unterminated secret")
    assert (got.category, got.replica_safe, got.reason) == (Category.UNKNOWN, False, "parse failed")
    assert "secret" not in got.fingerprint


def test_command_fallback_is_not_logged_as_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="sqlglot"):
        got = classify("CREATE EXTENSION IF NOT EXISTS pg_trgm_probe_unique")
    assert got.category is Category.DDL
    assert not [r for r in caplog.records if r.name.startswith("sqlglot")]


def test_public_names_are_exported() -> None:
    for name in ("Category", "Classification", "Classifier", "classify", "SAFE_FUNCTIONS"):
        assert name in sql.__all__
    assert {"FORMAT", "NUMERIC", "QMARK", "RewrittenQuery", "bind", "rewrite"} <= set(sql.__all__)


@pytest.mark.parametrize(
    ("query", "dialect", "writes", "ddl"),
    [
        ("SELECT 1; DROP TABLE x", "postgres", True, True),
        ("BEGIN; ALTER TABLE t ADD COLUMN z int; COMMIT", "postgres", True, True),
        ("SET search_path = a; DROP TABLE t", "postgres", True, True),
        ("SET a = 1; INSERT INTO t VALUES (1)", "postgres", True, False),
        ("BEGIN; INSERT INTO t VALUES (1); COMMIT", "mysql", True, False),
        ("SELECT 1; SELECT my_func()", "postgres", True, False),
        ("SELECT 'x; DROP TABLE t'; SELECT 2", "sqlite", False, False),
        ("SELECT 1; COMMIT", "postgres", False, False),
        ("SET a = 1; SELECT 1", "mysql", False, False),
    ],
)
def test_multi_statement_text_is_acted_on_for_its_most_dangerous_part(
    query: str, dialect: str, writes: bool, ddl: bool
) -> None:
    got = classify(query, dialect)
    assert (got.writes, got.ddl, got.replica_safe) == (writes, ddl, False), got
    assert len(got.parts) >= 1 and got.category in got.parts


def test_parts_of_one_statement_follow_its_category_and_an_accepted_hint() -> None:
    assert classify("DROP TABLE t").parts == {Category.DDL}
    hinted = classify("/* route:replica */ SELECT price_with_tax(p) FROM items")
    assert hinted.parts == {Category.READ_SIMPLE} and not hinted.writes
    assert classify("SELECT price_with_tax(p) FROM items").writes  # unknown: may write
    assert classify("/* route:primary */ SELECT 1").parts == {Category.READ_SIMPLE}


_COMMIT, _UNKNOWN = CommitOutcomeUnknown, OutcomeUnknown


@pytest.mark.parametrize(
    ("query", "dialect", "in_transaction", "expected"),
    [
        ("COMMIT", "postgres", True, _COMMIT),
        ("END", "postgres", True, _COMMIT),
        ("PREPARE TRANSACTION 'g'", "postgres", True, _COMMIT),
        ("COMMIT PREPARED 'g'", "postgres", False, _COMMIT),
        ("COMMIT", "mysql", True, _COMMIT),
        ("BEGIN; INSERT INTO t VALUES (1); COMMIT", "postgres", False, _COMMIT),
        ("UPDATE t SET a = 1; COMMIT", "postgres", True, _COMMIT),
        ("CREATE TABLE x (a int)", "mysql", True, _COMMIT),  # implicit commit on MySQL
        ("START TRANSACTION", "mysql", True, _COMMIT),
        ("INSERT INTO t VALUES (1)", "postgres", False, _UNKNOWN),
        ("SELECT 1; DELETE FROM t", "mysql", False, _UNKNOWN),
        ("SELECT my_func()", "postgres", False, _UNKNOWN),
        ("ROLLBACK PREPARED 'g'", "postgres", False, _UNKNOWN),
        ("CREATE TABLE x (a int)", "postgres", False, _UNKNOWN),
        ("CREATE TABLE x (a int)", "postgres", True, None),
        ("INSERT INTO t VALUES (1)", "postgres", True, None),
        ("INSERT INTO t VALUES (1)", "sqlite", True, None),
        ("SELECT * FROM t", "postgres", False, None),
        ("SELECT 1; SELECT 2", "mysql", False, None),
        ("BEGIN", "postgres", False, None),
        ("ROLLBACK", "mysql", True, None),
        ("SAVEPOINT a", "postgres", True, None),
    ],
)
def test_a_statement_lost_in_flight_is_reported_by_what_it_may_have_done(
    query: str, dialect: str, in_transaction: bool, expected: type | None
) -> None:
    got = lost_in_flight(query, dialect, in_transaction, "cause text")
    assert (type(got) if got is not None else None) is expected
    if got is not None:
        assert str(got).endswith("(cause text)")
