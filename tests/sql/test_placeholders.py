"""Placeholder rewriting and parameter binding: every scanning rule on every target."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kailash_nodes.errors import InvalidQueryText, ParameterError, UnsupportedStatement
from kailash_nodes.sql import FORMAT, NUMERIC, QMARK, RewrittenQuery, bind, rewrite

TARGETS = (NUMERIC, FORMAT, QMARK)
SECRET = "hunter2-secret"


@pytest.mark.parametrize(
    ("query", "target", "text", "order", "count", "style"),
    [
        ("SELECT ?, ?", NUMERIC, "SELECT $1, $2", (0, 1), 2, "qmark"),
        ("SELECT ?, ?", FORMAT, "SELECT %s, %s", (0, 1), 2, "qmark"),
        ("SELECT ?, ?", QMARK, "SELECT ?, ?", (0, 1), 2, "qmark"),
        ("SELECT %s, %s", NUMERIC, "SELECT $1, $2", (0, 1), 2, "format"),
        ("SELECT %s, %s", FORMAT, "SELECT %s, %s", (0, 1), 2, "format"),
        ("SELECT %s, %s", QMARK, "SELECT ?, ?", (0, 1), 2, "format"),
        ("SELECT $2, $1, $2", NUMERIC, "SELECT $2, $1, $2", (0, 1), 2, "numeric"),
        ("SELECT $2, $1, $2", FORMAT, "SELECT %s, %s, %s", (1, 0, 1), 2, "numeric"),
        ("SELECT $2, $1, $2", QMARK, "SELECT ?, ?, ?", (1, 0, 1), 2, "numeric"),
        ("SELECT :b, :a, :b", NUMERIC, "SELECT $1, $2, $1", ("b", "a"), 2, "named"),
        ("SELECT :b, :a, :b", FORMAT, "SELECT %s, %s, %s", ("b", "a", "b"), 2, "named"),
        ("SELECT :b, :a, :b", QMARK, "SELECT ?, ?, ?", ("b", "a", "b"), 2, "named"),
        ("SELECT 1", NUMERIC, "SELECT 1", (), 0, "none"),
        ("SELECT 1", FORMAT, "SELECT 1", (), 0, "none"),
        ("SELECT 1", QMARK, "SELECT 1", (), 0, "none"),
    ],
)
def test_rewrite_converts_each_style_to_each_target(
    query: str, target: str, text: str, order: tuple[Any, ...], count: int, style: str
) -> None:
    rq = rewrite(query, target)
    assert (rq.text, rq.order, rq.param_count, rq.style) == (text, order, count, style)


@pytest.mark.parametrize(
    ("query", "target", "passthrough"),
    [
        ("SELECT $1, $1", NUMERIC, True),
        ("SELECT $2, $1", NUMERIC, True),
        ("SELECT $1, $2", QMARK, True),
        ("SELECT $1, $1", QMARK, False),
        ("SELECT $2, $1", FORMAT, False),
        ("SELECT ?, ?", FORMAT, True),
        ("SELECT :a", QMARK, False),
        ("SELECT 1", NUMERIC, True),
    ],
)
def test_passthrough_only_when_order_is_identity(
    query: str, target: str, passthrough: bool
) -> None:
    assert rewrite(query, target).passthrough is passthrough


@pytest.mark.parametrize("target", TARGETS)
def test_named_style_lists_distinct_names_in_first_appearance_order(target: str) -> None:
    rq = rewrite("UPDATE t SET a = :a, b = :b WHERE id = :id AND a <> :a", target)
    assert rq.names == ("a", "b", "id")
    assert rq.param_count == 3


HIDDEN_EVERYWHERE = [
    "'? $1 %s :n'",
    "'it''s ? :n'",
    "E'it\\'s ? :n'",
    "e'it\\'s ? :n'",
    '"col ? :n"',
    "`col ? :n`",
    "$$ ? $1 :n $$",
    "$fn$ ? $1 $$ :n $fn$",
    "-- ? :n\n",
    "/* ? $1 :n */",
    "/* ? \n ? */",
]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("hidden", HIDDEN_EVERYWHERE)
def test_placeholders_inside_strings_identifiers_and_comments_are_ignored(
    hidden: str, target: str
) -> None:
    rq = rewrite(f"SELECT {hidden} FROM t", target)
    assert (rq.style, rq.param_count) == ("none", 0)
    expected = hidden.replace("%", "%%") if target == FORMAT else hidden
    assert rq.text == f"SELECT {expected} FROM t"


@pytest.mark.parametrize(
    ("query", "counts"),
    [
        # MySQL: '#' starts a comment; elsewhere it is an operator.
        ("SELECT 1 # ?\n, ?", {NUMERIC: 2, FORMAT: 1, QMARK: 2}),
        # MySQL: backslash escapes in plain '...' and "..."; PostgreSQL/SQLite: none.
        ("SELECT 'a\\', ?", {NUMERIC: 1, FORMAT: 0, QMARK: 1}),
        ('SELECT "a\\", ?', {NUMERIC: 1, FORMAT: 0, QMARK: 1}),
        # PostgreSQL nests block comments; MySQL and SQLite end at the first */.
        ("SELECT /* /* */ ? */ 1", {NUMERIC: 0, FORMAT: 1, QMARK: 1}),
        # MySQL needs whitespace after '--' for a comment: 1--? is arithmetic.
        ("SELECT 1--?", {NUMERIC: 0, FORMAT: 1, QMARK: 0}),
        # Unterminated strings and comments run to the end of the text.
        ("SELECT ?, 'abc ?", {NUMERIC: 1, FORMAT: 1, QMARK: 1}),
        ("SELECT ? /* abc ?", {NUMERIC: 1, FORMAT: 1, QMARK: 1}),
        ("SELECT ?, $x$ abc ?", {NUMERIC: 1, FORMAT: 1, QMARK: 1}),
    ],
)
def test_scanner_lexes_like_the_target_server(query: str, counts: dict[str, int]) -> None:
    assert {t: rewrite(query, t).param_count for t in TARGETS} == counts


@pytest.mark.parametrize(
    ("query", "style", "count"),
    [
        ("SELECT $1, $1", "numeric", 1),
        ("SELECT a$1 FROM t", "none", 0),
        ("SELECT $1$", "numeric", 1),
        ("SELECT $$ $1 $$, $2, $1", "numeric", 2),
        ("SELECT $a$ $1 $a$, $1", "numeric", 1),
        ("SELECT $_1$ ? $_1$", "none", 0),
    ],
)
def test_dollar_digit_is_a_placeholder_never_a_quote_tag(
    query: str, style: str, count: int
) -> None:
    for target in TARGETS:
        rq = rewrite(query, target)
        assert (rq.style, rq.param_count) == (style, count)


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("SELECT :id::int", ("id",)),
        ("SELECT x::int, y :: text", ()),
        ("SELECT @v := 1", ()),
        ("SELECT :1", ()),
        ("SELECT arr[lo:hi], arr[1:2]", ()),
        ("SELECT :_a1, (:b)", ("_a1", "b")),
        ("SELECT :a, a:b", ("a",)),
        ("SELECT :naïve", ("na",)),
    ],
)
def test_named_placeholder_rules_exclude_casts_assignments_and_slices(
    query: str, names: tuple[str, ...]
) -> None:
    for target in TARGETS:
        assert rewrite(query, target).names == names


@pytest.mark.parametrize(
    ("query", "target", "text", "count"),
    [
        ("SELECT d ?| array['a'], d ?& array['b'], ?", NUMERIC, None, 1),
        ("SELECT d ?| array['a'], ?", FORMAT, "SELECT d ?| array['a'], %s", 1),
        ("SELECT d ? 'k', $1", NUMERIC, "SELECT d ? 'k', $1", 1),
        ("SELECT d ? 'k', $1", FORMAT, "SELECT d ? 'k', %s", 1),
        ("SELECT d ? 'k', $1", QMARK, "SELECT d ? 'k', ?", 1),
    ],
)
def test_question_mark_is_jsonb_operator_before_pipe_ampersand_or_next_to_numeric(
    query: str, target: str, text: str | None, count: int
) -> None:
    rq = rewrite(query, target)
    assert rq.param_count == count
    if text is not None:
        assert rq.text == text


@pytest.mark.parametrize(
    ("query", "texts"),
    [
        ("SELECT 7 % 2, %s", ("SELECT 7 % 2, $1", "SELECT 7 %% 2, %s", "SELECT 7 % 2, ?")),
        ("SELECT 7 %% 2, %s", ("SELECT 7 % 2, $1", "SELECT 7 %% 2, %s", "SELECT 7 % 2, ?")),
        ("SELECT '50%', ?", ("SELECT '50%', $1", "SELECT '50%%', %s", "SELECT '50%', ?")),
        ("SELECT '%s' -- %s", ("SELECT '%s' -- %s", "SELECT '%%s' -- %%s", "SELECT '%s' -- %s")),
        ("SELECT 100%", ("SELECT 100%", "SELECT 100%%", "SELECT 100%")),
    ],
)
def test_percent_is_literal_and_doubled_only_for_format(query: str, texts: tuple[str, ...]) -> None:
    assert tuple(rewrite(query, t).text for t in TARGETS) == texts


@pytest.mark.parametrize("query", ["SELECT '5%' || ? % 3 -- 1%\n", "SELECT `a%b`, %s, 100 %% 7"])
def test_format_output_survives_pymysql_percent_formatting(query: str) -> None:
    rq = rewrite(query, FORMAT)
    expected = rewrite(query, QMARK).text.replace("?", "X")
    assert rq.text % (("X",) * len(rq.order)) == expected


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("SELECT $2", "missing $1"),
        ("SELECT $1, $3", "missing $2"),
        ("SELECT $0", "start at $1"),
    ],
)
def test_numeric_placeholders_must_run_from_one_without_gaps(query: str, message: str) -> None:
    for target in TARGETS:
        with pytest.raises(ParameterError, match=re.escape(message)):
            rewrite(query, target)


@pytest.mark.parametrize(
    ("query", "first", "second"),
    [
        ("SELECT ?, :a", "qmark", "named"),
        ("SELECT ?, %s", "qmark", "format"),
        ("SELECT $1, %s", "numeric", "format"),
        ("SELECT :a, $1", "named", "numeric"),
        ("SELECT %s, :a", "format", "named"),
    ],
)
def test_mixed_styles_raise_naming_both(query: str, first: str, second: str) -> None:
    for target in TARGETS:
        with pytest.raises(ParameterError, match=f"{first} .* and {second} "):
            rewrite(query, target)


@pytest.mark.parametrize(
    ("query", "statements", "keyword"),
    [
        ("", 0, ""),
        ("   \n ", 0, ""),
        ("-- only a comment\n/* and another */", 0, ""),
        (" ; ;; ", 0, ""),
        ("select 1", 1, "SELECT"),
        ("SELECT 1;", 1, "SELECT"),
        ("(SELECT 1) UNION (SELECT 2)", 1, "SELECT"),
        ("((  select 1))", 1, "SELECT"),
        ("/* c */ -- d\n  WITH x AS (SELECT 1) SELECT * FROM x", 1, "WITH"),
        ("INSERT INTO t VALUES (1); SELECT 2", 2, "INSERT"),
        ("SELECT ';'; SELECT \";\" -- ;\n; SELECT $$;$$", 3, "SELECT"),
        ("'text' ; SELECT 1", 2, ""),
        ("(1)", 1, ""),
    ],
)
def test_statements_and_leading_keyword_ignore_strings_comments_and_parens(
    query: str, statements: int, keyword: str
) -> None:
    for target in TARGETS:
        rq = rewrite(query, target)
        assert (rq.statements, rq.leading_keyword) == (statements, keyword)


SESSION = [
    "SET search_path TO x",
    "set local statement_timeout = 5",
    "RESET ALL",
    "LISTEN ch",
    "UNLISTEN *",
    "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
    "PREPARE p AS SELECT 1",
    "DEALLOCATE p",
    "DISCARD ALL",
    "LOCK TABLE t",
    "USE otherdb",
    "PRAGMA foreign_keys = ON",
    "ATTACH DATABASE 'x.db' AS x",
    "DETACH DATABASE x",
    "LOAD 'auto_explain'",
    "DO $$ BEGIN PERFORM 1; END $$",
    "CALL my_procedure()",
    "SELECT 1; SET x = 1",
    "(SET x = 1)",
    "CREATE TEMP TABLE t (x int)",
    "CREATE TEMPORARY TABLE t (x int)",
    "CREATE GLOBAL TEMPORARY TABLE t (x int)",
    "CREATE LOCAL TEMP TABLE t (x int)",
    "CREATE OR REPLACE TEMP VIEW v AS SELECT 1",
    "SELECT * INTO TEMP t FROM s",
    "SELECT * INTO TEMPORARY TABLE t FROM s",
    "SELECT * INTO LOCAL TEMP t FROM s",
    "SELECT set_config('x', 'y', false)",
    "SELECT pg_catalog.set_config('x', 'y', false)",
    "SELECT pg_advisory_lock(1)",
    "SELECT PG_ADVISORY_LOCK_SHARED(1)",
    "SELECT pg_try_advisory_lock(1)",
    "SELECT pg_try_advisory_lock_shared(1)",
    "SELECT GET_LOCK('x', 1)",
    "SELECT load_extension('x')",
    "CREATE TABLE pg_temp.t (x int)",
    "SELECT @x := 1",
    "SELECT 1 INTO @x",
    "SELECT @`odd name`",
    "SELECT @@session.sql_mode",
    "SELECT @@LOCAL.sql_mode",
]
NO_SESSION = [
    "SELECT 1",
    "INSERT INTO t (temp) VALUES (1)",
    "SELECT temp FROM weather",
    "CREATE TABLE t (x int)",
    "SELECT 'SET x = 1', 'set_config(1)', '@x'",
    "SELECT 1 -- SET x\n",
    "/* SET x */ SELECT 1",
    "SELECT @@version",
    "SELECT d @> '{}' FROM t",
    "SELECT pg_advisory_xact_lock(1)",
    "WITH s AS (SELECT 1) SELECT * FROM s",
    "UPDATE t SET a = 1",
]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("query", SESSION)
def test_session_state_is_flagged_for_statements_that_change_the_session(
    query: str, target: str
) -> None:
    assert rewrite(query, target).session_state is True


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("query", NO_SESSION)
def test_session_state_is_not_flagged_for_plain_queries(query: str, target: str) -> None:
    assert rewrite(query, target).session_state is False


@pytest.mark.parametrize(
    ("query", "target", "expected"),
    [("# SET x\nSELECT 1", FORMAT, False), ("/*!40101 SET NAMES utf8 */", FORMAT, True)],
)
def test_session_state_follows_mysql_comment_rules(query: str, target: str, expected: bool) -> None:
    assert rewrite(query, target).session_state is expected


def test_rewrite_caches_per_query_and_target() -> None:
    query = "SELECT * FROM cache_probe WHERE a = ?"
    assert rewrite(query, NUMERIC) is rewrite(query, NUMERIC)
    assert rewrite(query, NUMERIC) is not rewrite(query, QMARK)


@pytest.mark.parametrize("query", [b"SELECT 1", None, 1, ["SELECT 1"]])
def test_rewrite_rejects_a_query_that_is_not_str(query: Any) -> None:
    with pytest.raises(TypeError, match="must be str"):
        rewrite(query, NUMERIC)


def test_rewrite_rejects_an_unknown_target() -> None:
    with pytest.raises(ValueError, match="target must be one of"):
        rewrite("SELECT 1", "pyformat")


def test_rewritten_query_is_immutable() -> None:
    rq = rewrite("SELECT 1", NUMERIC)
    with pytest.raises(AttributeError):
        rq.text = "DROP TABLE t"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("query", "target", "params", "args"),
    [
        ("SELECT ?, ?", NUMERIC, [1, 2], (1, 2)),
        ("SELECT ?, ?", NUMERIC, (1, 2), (1, 2)),
        ("SELECT $2, $1, $2", QMARK, ["a", "b"], ("b", "a", "b")),
        ("SELECT $2, $1, $2", NUMERIC, ["a", "b"], ("a", "b")),
        ("SELECT :x, :y, :x", NUMERIC, {"x": 1, "y": 2, "extra": 3}, (1, 2)),
        ("SELECT :x, :y, :x", FORMAT, {"x": 1, "y": 2}, (1, 2, 1)),
        ("SELECT ?", FORMAT, 42, (42,)),
        ("SELECT ?", QMARK, "text", ("text",)),
        ("SELECT ?", QMARK, b"raw", (b"raw",)),
        ("SELECT ?", QMARK, [None], (None,)),
        ("SELECT ?", QMARK, range(7, 8), (7,)),
        ("SELECT 1", NUMERIC, None, ()),
        ("SELECT 1", NUMERIC, [], ()),
        ("SELECT 1", NUMERIC, (), ()),
        ("SELECT 1", NUMERIC, {}, ()),
    ],
)
def test_bind_builds_driver_arguments(
    query: str, target: str, params: object, args: tuple[Any, ...]
) -> None:
    assert bind(rewrite(query, target), params) == args


def test_bind_passes_a_tuple_through_unchanged() -> None:
    params = (1, 2)
    assert bind(rewrite("SELECT ?, ?", NUMERIC), params) is params


@pytest.mark.parametrize(
    ("query", "params", "message"),
    [
        ("SELECT ?, ?", [SECRET], "query expects 2 parameters, got 1"),
        ("SELECT ?", [SECRET, SECRET], "query expects 1 parameter, got 2"),
        ("SELECT ?, ?", SECRET, "query expects 2 parameters, got 1"),
        ("SELECT ?", None, "query expects 1 parameter, got 0"),
        ("SELECT $1, $2", {"a": SECRET}, r"numeric placeholders \('\$1'\).*not a dict"),
        ("SELECT ?", {"a": SECRET}, r"qmark placeholders \('\?'\).*not a dict"),
        ("SELECT %s", {}, r"format placeholders \('%s'\).*not a dict"),
        ("SELECT :a", [SECRET], r"named placeholders \(':name'\).*not a list"),
        ("SELECT :a", SECRET, r"named placeholders.*not a str"),
        ("SELECT :a, :b, :c", {"b": SECRET}, "missing named parameters: a, c"),
        ("SELECT :a", None, "missing named parameters: a"),
        ("SELECT 1", [SECRET], "no placeholders but got 1 parameters"),
        ("SELECT 1", SECRET, "no placeholders but got 1 parameters"),
        ("SELECT 1", {"a": SECRET}, "no placeholders but got 1 parameters"),
    ],
)
def test_bind_rejects_params_that_do_not_fit_without_echoing_values(
    query: str, params: object, message: str
) -> None:
    for target in TARGETS:
        with pytest.raises(ParameterError, match=message) as info:
            bind(rewrite(query, target), params)
        assert SECRET not in str(info.value)


def test_bind_accepts_a_hand_built_rewritten_query() -> None:
    rq = RewrittenQuery("SELECT $1", "qmark", (0,), 1, (), True, 1, "SELECT", False)
    assert bind(rq, [5]) == (5,)


# Text a query may hold (a NUL or a lone surrogate is InvalidQueryText, tested below).
_NO_QUOTE = st.text(
    st.characters(blacklist_characters="'\\\x00", blacklist_categories=("Cs",)), max_size=40
)
_NO_COMMENT_END = st.text(
    st.characters(blacklist_characters="*/\x00", blacklist_categories=("Cs",)), max_size=40
)


@given(inner=_NO_QUOTE, target=st.sampled_from(TARGETS))
def test_text_inside_a_string_literal_never_changes_the_placeholders(
    inner: str, target: str
) -> None:
    rq = rewrite(f"SELECT ?, '{inner}', ?", target)
    assert (rq.param_count, rq.statements) == (2, 1)
    literal = inner.replace("%", "%%") if target == FORMAT else inner
    assert f"'{literal}'" in rq.text


@given(inner=_NO_COMMENT_END, target=st.sampled_from(TARGETS))
def test_text_inside_a_block_comment_never_changes_the_placeholders(
    inner: str, target: str
) -> None:
    assert rewrite(f"SELECT :a /* {inner} */ , :b", target).names == ("a", "b")


@given(query=st.text(max_size=60), target=st.sampled_from(TARGETS))
def test_rewrite_of_any_text_returns_or_raises_parameter_error(query: str, target: str) -> None:
    try:
        rq = rewrite(query, target)
    except ParameterError:
        return
    assert len(rq.order) >= rq.param_count >= 0
    if target == FORMAT:
        rq.text % (("x",) * len(rq.order))  # pymysql's formatting must never fail


# -------------------------------------------------------------- session state, refusals

_DIRTY_PG = [
    "SET ROLE low", "RESET ROLE", "SET SESSION AUTHORIZATION low", "SET LOCAL role low",
    "SELECT set_config('role', 'low', false)", "SELECT pg_catalog.set_config('a.b', '1', false)",
    'SELECT "set_config"(\'a.b\', \'1\', false)', "DO $$BEGIN PERFORM 1; END$$", "CALL p()",
    "PREPARE s AS SELECT 1", "DECLARE c CURSOR WITH HOLD FOR SELECT 1", "LISTEN ch",
    "CREATE TEMP TABLE t (a int)", "CREATE GLOBAL TEMPORARY TABLE t (a int)",
    "SELECT 1 INTO TEMP t", "SELECT pg_advisory_lock(1)", 'SELECT "pg_advisory_lock"(1)',
    "SELECT pg_try_advisory_lock_shared(1)", "SELECT * FROM pg_temp.t",
    "WITH x AS (SELECT set_config('a.b', '1', false)) SELECT * FROM x", "SELECT 1; SET ROLE low",
    "/* c */ SET ROLE low",
]  # fmt: skip
_DIRTY_MYSQL = [
    "SET ROLE r", "SET @x = 1", "SELECT @x := 1", "SELECT 1 INTO @v", "SELECT 1 INTO @`v`",
    "SET @@session.sql_mode = ''", "SET @@sql_mode = ''", "SET SESSION sql_mode = ''",
    "SET NAMES latin1", "SELECT GET_LOCK('a', 1)", "SELECT `get_lock`('a', 1)",
    "LOCK TABLES t WRITE", "CREATE TEMPORARY TABLE t (a int)", "/*!40101 SET NAMES utf8 */",
    "PREPARE s FROM 'SELECT 1'", "XA START 'x'", "HANDLER t OPEN", "USE db",
]  # fmt: skip


@pytest.mark.parametrize("query", _DIRTY_PG)
def test_statements_that_leave_session_state_mark_the_connection_dirty_on_postgresql(
    query: str,
) -> None:
    assert rewrite(query, NUMERIC).session_state


@pytest.mark.parametrize("query", _DIRTY_MYSQL)
def test_statements_that_leave_session_state_mark_the_connection_dirty_on_mysql(
    query: str,
) -> None:
    assert rewrite(query, FORMAT).session_state


@pytest.mark.parametrize(
    "query", ["SELECT 1", "SELECT @@version", "INSERT INTO t VALUES (1)", "SELECT 'SET ROLE x'"]
)
def test_plain_statements_leave_the_connection_clean(query: str) -> None:
    assert not rewrite(query, FORMAT).session_state


@pytest.mark.parametrize(
    ("query", "index"),
    [("\x00", 0), ("SELECT 'a\x00'", 9), ("SELECT 1 -- \x00", 12), ("SELECT '\udc80'", 8)],
)
@pytest.mark.parametrize("target", TARGETS)
def test_nul_or_lone_surrogate_in_the_text_is_invalid_query_text_naming_the_index(
    query: str, index: int, target: str
) -> None:
    for _ in range(2):  # the second answer comes from the cache, as a fresh exception
        with pytest.raises(InvalidQueryText, match=f"at index {index}\\b"):
            rewrite(query, target)


def test_valid_non_ascii_text_is_accepted() -> None:
    assert rewrite("SELECT 'żółw 🐢' AS ?", QMARK).param_count == 1


@pytest.mark.parametrize(
    "query",
    ["COPY t FROM STDIN", "copy t (a, b) from stdin with (format csv)",
     "COPY (SELECT 1) TO STDOUT", "/* x */ COPY t TO stdout", "SELECT 1; COPY t FROM STDIN"],
)  # fmt: skip
def test_copy_through_the_client_is_refused_on_postgresql(query: str) -> None:
    with pytest.raises(UnsupportedStatement, match="INSERT"):
        rewrite(query, NUMERIC)


@pytest.mark.parametrize(
    "query",
    ["COPY t FROM '/srv/data.csv'", "COPY t TO 'stdout'", "SELECT 'COPY t FROM STDIN'",
     "SELECT stdin FROM t"],
)  # fmt: skip
def test_copy_to_or_from_a_server_file_is_left_to_the_server(query: str) -> None:
    assert rewrite(query, NUMERIC).statements == 1
